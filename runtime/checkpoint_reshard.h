// Internal to checkpoints (runtime/checkpoint.h): restoring a checkpoint saved with
// another world size or ZeRO stage through whole tensors (runtime/shards.h).
#pragma once

#include <filesystem>

#include <nlohmann/json.hpp>

#include "ir/plan.h"
#include "runtime/checkpoint.h"
#include "runtime/executor.h"

namespace ds {

// Fails naming the first tensor the plan needs that the checkpoint does not hold
// (gradient accumulators excepted: zero between steps).
void checkReshardable(const std::filesystem::path& dir, const nlohmann::json& manifest,
                      const PlanFile& plan);

// Every rank reads every saved rank's file, puts whole tensors back together and
// cuts its own values from them.
void restoreResharded(const CheckpointInfo& info, Executor& exec);

}  // namespace ds
