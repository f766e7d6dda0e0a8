// Learning-rate (and momentum) schedules as DeepSpeed defines them
// (deepspeed/runtime/lr_schedules.py: WarmupLR, WarmupDecayLR, WarmupCosineLR,
// OneCycle, LRRangeTest), evaluated on the host once per optimizer step from the plan's
// effective config.
//
// Step timing: DeepSpeed's engine calls scheduler.step() after each optimizer
// step and a scheduler starts at last_batch_iteration = -1, so optimizer step s
// (1-based) runs with the schedule at iteration s - 2; iteration -1 is the value
// the scheduler's constructor leaves in the optimizer (WarmupLR/WarmupDecayLR:
// warmup_min_lr; WarmupCosineLR: 0, as its get_lr() returns before it has
// started; OneCycle: cycle_min_lr and momentum cycle_min_mom).
#pragma once

#include <cstdint>
#include <optional>

#include <nlohmann/json.hpp>

namespace ds {

// scheduler.params with every default filled in and "auto" resolved (documented
// in docs/training.md); errors name the key path. Empty when there is no scheduler.
nlohmann::json resolvedSchedulerParams(const nlohmann::json& config);

// The config with scheduler.params.total_num_steps "auto" (kept so by dscompile)
// set to `total_steps`: dsrun fills it with --steps, the steps of the whole run, as
// the Hugging Face trainer fills it with its max_steps. Other configs unchanged.
nlohmann::json withTotalSteps(nlohmann::json config, int64_t total_steps);

// The scheduler types dscompile implements, comma-separated, for messages.
std::string supportedSchedulers();
bool supportsScheduler(const std::string& type);

// optimizer.params.lr (default 1e-3); WarmupCosineLR scales it.
double baseLearningRate(const nlohmann::json& config);

// The learning rate used by optimizer step `step` (1-based). Without a
// scheduler: optimizer.params.lr (default 1e-3).
double learningRate(const nlohmann::json& config, int64_t step);

// Whether the schedule sets the momentum each step: OneCycle with cycle_momentum
// (DeepSpeed's default true) and an optimizer with betas (Adam, AdamW, Lion).
// DeepSpeed disables cycling, with a warning, for optimizers without betas (SGD,
// Adagrad).
bool cyclesMomentum(const nlohmann::json& config);

// The momentum — Adam's or Lion's beta1 — of optimizer step `step` when cyclesMomentum();
// OneCycle then also fixes beta2 at 0.99, as DeepSpeed's does.
std::optional<double> scheduledMomentum(const nlohmann::json& config, int64_t step);

inline constexpr double kOneCycleBeta2 = 0.99;

}  // namespace ds
