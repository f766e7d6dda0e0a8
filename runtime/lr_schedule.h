// Learning-rate schedules as DeepSpeed defines them (deepspeed/runtime/lr_schedules.py),
// evaluated on the host once per optimizer step from the plan's effective config.
#pragma once

#include <cstdint>

#include <nlohmann/json.hpp>

namespace ds {

// The learning rate used by optimizer step `step` (1-based). DeepSpeed's engine
// calls scheduler.step() after each optimizer step, and a scheduler starts at
// last_batch_iteration = -1, so step s uses the schedule at iteration s - 2
// (steps 1 and 2 both use the initial value). Without a scheduler: optimizer.params.lr.
double learningRate(const nlohmann::json& config, int64_t step);

}  // namespace ds
