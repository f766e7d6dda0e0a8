// What DeepSpeed's engine prints while it trains, printed by dsrun's rank 0 after
// each optimizer step, each line with log_dist's "[Rank 0] " prefix:
// - every steps_per_print steps (DeepSpeed's default: never), the engine's progress
//   line and its throughput timer's:
//     step=10, skipped=0, lr=[0.001], mom=[(0.9, 0.999)]
//     epoch=0/micro_step=20/global_step=10, RunningAvgSamplesPerSec=812.3,
//         CurrSamplesPerSec=840.1 (one line)
//   lr and mom are the next step's: the engine prints after the scheduler's step.
//   mom is the betas of Adam, AdamW, Lion and Lamb, SGD's momentum, and 0.0 for
//   Adagrad. The throughput timer counts this run's steps; it leaves the first two
//   out of the running average and prints from the third on, as DeepSpeed's
//   ThroughputTimer does (without its memory fields). epoch is the counter a
//   DeepSpeed training script sets; dsrun's stays 0.
// - with wall_clock_breakdown (or flops_profiler, which turns it on in DeepSpeed),
//   each micro-step's timers, then the optimizer step's (the sums over its
//   micro-steps), in milliseconds (runtime/wall_clock.h):
//     time (ms) | fwd_microstep: 1.23 | bwd_microstep: 2.34 | ... | step_microstep: 0.00
//     time (ms) | fwd: 1.23 | bwd: 2.34 | bwd_inner: 2.10 | bwd_allreduce: 0.24 | step: 0.50
//   (the first with bwd_inner_microstep and bwd_allreduce_microstep in between).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/trainer.h"

namespace ds {

// DeepSpeed's log_dist(..., ranks=[0]) prefix of rank 0's lines.
inline constexpr const char* kRank0Prefix = "[Rank 0] ";

class TrainLog {
 public:
  // `config`: the plan's effective DeepSpeed config.
  explicit TrainLog(nlohmann::json config);
  // The lines optimizer step `m` prints, in order; none when nothing is due.
  std::vector<std::string> lines(const StepMetrics& m);

 private:
  std::string progressLine(const StepMetrics& m) const;
  std::string momentum(int64_t step) const;

  nlohmann::json config_;
  int64_t steps_per_print_ = 0;  // 0: never
  bool timers_ = false;
  int64_t batch_ = 0, accumulation_ = 1;
  int64_t run_steps_ = 0;     // this run's optimizer steps so far
  double timed_seconds_ = 0;  // this run's steps after the first two
};

}  // namespace ds
