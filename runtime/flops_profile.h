// DeepSpeed's flops profiler (the config's flops_profiler section): rank 0 prints
// the profile summary DeepSpeed's prints — parameters, forward MACs and FLOPs per
// GPU, the latency of forward, backward and the optimizer step, and the FLOPS they
// reach — to stdout, or to output_file, for the optimizer step that DeepSpeed
// profiles: the one after profile_step steps (DeepSpeed compares its count of
// steps taken), i.e. step profile_step + 1.
//
// Where DeepSpeed counts FLOPs with module hooks and estimates backward as twice
// forward (plus recompute_fwd_factor times forward under activation checkpointing),
// this counts every plan step's FLOPs (runtime/cost_model.h: stepFlops), so
// backward's are its own, recomputed forwards included. MACs are the products'
// (Conv, Gemm, MatMul, attention). Latencies are the step's parts
// (runtime/wall_clock.h) summed over its micro-steps, and FLOPs are the step's:
// a micro-step's times gradient_accumulation_steps (DeepSpeed reports one
// micro-step); the rates are the same either way. A table per op follows (steps,
// FLOPs, time and FLOPS of the step's last micro-step) where DeepSpeed's
// aggregated profile is per module.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include <nlohmann/json.hpp>

#include "ir/plan.h"
#include "runtime/trainer.h"

namespace ds {

struct FlopsProfilerOptions {
  bool enabled = false;
  int64_t profile_step = 1;  // DeepSpeed's default: the second optimizer step
  std::string output_file;   // empty: stdout
  // The optimizer step (1-based) the profile is of.
  int64_t profiledStep() const { return profile_step + 1; }
};

// The flops_profiler section of `config` (the plan's effective DeepSpeed config),
// with DeepSpeed's defaults.
FlopsProfilerOptions flopsProfilerOptions(const nlohmann::json& config);

// The profile of optimizer step `m` of `rank`, whose last micro-step's per-step
// times are `last_micro_step` (Executor::lastRunSeconds; one per step of the rank).
std::string flopsProfileReport(const PlanFile& plan, int rank, const StepMetrics& m,
                               std::span<const double> last_micro_step);

}  // namespace ds
