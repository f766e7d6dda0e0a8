#include "runtime/train_log.h"

#include <algorithm>
#include <cstdio>
#include <utility>

#include "runtime/lr_schedule.h"
#include "runtime/monitor.h"
#include "runtime/wall_clock.h"

namespace ds {
namespace {

// DeepSpeed's ThroughputTimer leaves this many steps out of its running average.
constexpr int64_t kUntimedSteps = 2;

// "time (ms) | fwd<suffix>: 1.23 | ..." as DeepSpeed's timers log them.
std::string timersLine(const PartTimes& t, const std::string& suffix) {
  std::string line = std::string(kRank0Prefix) + "time (ms)";
  for (const NamedPart& part : namedParts(t)) {
    char value[32];
    std::snprintf(value, sizeof value, "%.2f", 1e3 * part.seconds);
    line += std::string(" | ") + part.timer + suffix + ": " + value;
  }
  return line;
}

}  // namespace

TrainLog::TrainLog(nlohmann::json config) : config_(std::move(config)) {
  auto every = config_.find("steps_per_print");
  if (every != config_.end() && every->is_number_integer())
    steps_per_print_ = std::max<int64_t>(0, every->get<int64_t>());
  timers_ = timesSteps(config_);
  batch_ = config_.value("train_batch_size", int64_t{0});
  accumulation_ = config_.value("gradient_accumulation_steps", int64_t{1});
}

// Optimizer step `step`'s momentum as DeepSpeed's get_mom() reports it.
std::string TrainLog::momentum(int64_t step) const {
  const nlohmann::json& optimizer = config_.value("optimizer", nlohmann::json::object());
  const nlohmann::json& params = optimizer.value("params", nlohmann::json::object());
  if (params.contains("momentum")) return pythonRepr(params["momentum"].get<double>());
  if (!params.contains("betas")) return "0.0";
  double beta1 = params["betas"][0].get<double>(), beta2 = params["betas"][1].get<double>();
  if (std::optional<double> cycled = scheduledMomentum(config_, step)) {
    beta1 = *cycled;
    beta2 = kOneCycleBeta2;
  }
  return "(" + pythonRepr(beta1) + ", " + pythonRepr(beta2) + ")";
}

std::string TrainLog::progressLine(const StepMetrics& m) const {
  // The engine prints after the scheduler's step: the next applied step's values.
  const int64_t next = m.step + 1 - m.skipped_steps;
  return std::string(kRank0Prefix) + "step=" + std::to_string(m.step) +
         ", skipped=" + std::to_string(m.skipped_steps) + ", lr=[" +
         pythonRepr(learningRate(config_, next)) + "], mom=[" + momentum(next) + "]";
}

std::vector<std::string> TrainLog::lines(const StepMetrics& m) {
  std::vector<std::string> out;
  ++run_steps_;
  if (run_steps_ > kUntimedSteps) timed_seconds_ += m.seconds;
  if (timers_ && !m.micro_step_times.empty()) {
    for (const PartTimes& t : m.micro_step_times) out.push_back(timersLine(t, "_microstep"));
    out.push_back(timersLine(sumOf(m.micro_step_times), ""));
  }
  if (steps_per_print_ > 0 && m.step % steps_per_print_ == 0) out.push_back(progressLine(m));
  if (steps_per_print_ > 0 && run_steps_ % steps_per_print_ == 0 && run_steps_ > kUntimedSteps &&
      timed_seconds_ > 0) {
    const double running =
        static_cast<double>(batch_ * (run_steps_ - kUntimedSteps)) / timed_seconds_;
    out.push_back(std::string(kRank0Prefix) +
                  "epoch=0/micro_step=" + std::to_string(run_steps_ * accumulation_) +
                  "/global_step=" + std::to_string(run_steps_) + ", RunningAvgSamplesPerSec=" +
                  pythonRepr(running) + ", CurrSamplesPerSec=" + pythonRepr(m.samples_per_s));
  }
  return out;
}

}  // namespace ds
