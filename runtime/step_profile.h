// The report of dsrun --profile: where a rank's run time goes, by op and by step,
// from the per-step times an executor measured (Executor::stepSeconds).
#pragma once

#include <string>
#include <vector>

#include "ir/plan.h"

namespace ds {

// A table of the rank's ops by total time (steps, ms per run, share of the
// measured time), then its `top_steps` slowest steps with node name and tensors'
// shapes. `seconds` holds one sum per step over `runs` runs (micro-steps when
// training: optimizer steps count once per optimizer step, so their per-run time
// is spread over the accumulation).
std::string stepProfileReport(const PlanFile& plan, int rank, const std::vector<double>& seconds,
                              int64_t runs, size_t top_steps = 10);

}  // namespace ds
