// DeepSpeed's wall_clock_breakdown (the engine's forward, backward and step timers,
// deepspeed/utils/timer.py) from an executor's per-step times: which part of the
// training step each plan step belongs to, and a run's time by part.
//   forward             the micro-step's steps before backward, ZeRO-3's gathers
//                       among them
//   backward            from the first step that makes a gradient to the end of the
//                       micro-step: recomputed activations, ZeRO-3's gathers, the
//                       gradients' reduction and accumulation
//   backward_allreduce  the gradients' reductions (AllReduce, ReduceScatter), also
//                       those in the optimizer-step phase: ZeRO-0 and 1 reduce once
//                       per optimizer step, where DeepSpeed reduces in the last
//                       micro-step's backward. (DeepSpeed's ZeRO-2 and 3 reduce in
//                       backward hooks and leave much of that in backward_inner.)
//   backward_inner      backward without them
//   step                the rest of the optimizer-step phase: the norm, clipping,
//                       the update (with offload, the host's), ZeRO's gathers of
//                       the updated parameters
// A part's time is the sum of its steps' own times. On one stream (the CPU backend)
// that is the wall time; the CUDA backend times each step on its stream, so a
// collective that overlaps compute counts in full, and the parts can add up to more
// than the wall time.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include <nlohmann/json.hpp>

#include "ir/plan.h"

namespace ds {

enum class StepPart : uint8_t { Forward, Backward, BackwardReduce, OptimizerStep };

// Seconds by part; `backward` includes `backward_reduce`.
struct PartTimes {
  double forward = 0, backward = 0, backward_reduce = 0, step = 0;
  double backwardInner() const { return backward - backward_reduce; }
  PartTimes& operator+=(const PartTimes& other);
};

// The part of each step of `rank`'s plan, in plan order.
std::vector<StepPart> stepParts(const PlanFile& plan, int rank);

// `seconds` (one per step, Executor::lastRunSeconds) summed by part.
PartTimes partTimes(const std::vector<StepPart>& parts, std::span<const double> seconds);

// The five timers DeepSpeed reports, in its order, with the names of its log line
// ("fwd") and of its monitor events ("forward").
struct NamedPart {
  const char* timer;
  const char* event;
  double seconds;
};
std::array<NamedPart, 5> namedParts(const PartTimes& t);

// The sum of micro-steps' times: an optimizer step's.
PartTimes sumOf(std::span<const PartTimes> micro_steps);

// Whether `config` (a plan's effective DeepSpeed config) asks for DeepSpeed's
// timers: wall_clock_breakdown, which DeepSpeed also turns on for
// flops_profiler.enabled. The executor then times every step.
bool timesSteps(const nlohmann::json& config);

}  // namespace ds
