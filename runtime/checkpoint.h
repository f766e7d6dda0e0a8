// Training checkpoints: everything a run needs to continue bit for bit where it
// stopped, written so that a crash mid-save never destroys the last good one.
//
// What is saved: every persistent plan tensor that training may change (roles
// parameter, buffer, optimizer state, and any other persistent tensor that is
// neither a constant nor a feed), read through the Executor interface so any
// backend can save and restore; the number of optimizer steps taken; the data
// position (samples consumed); the seed; the plan's identity (model and a
// fingerprint of the saved tensor table); the effective DeepSpeed config.
// Scheduler and RNG state need nothing more: the learning rate is a pure function
// of the step and the config (runtime/lr_schedule.h), data order and augmentation
// of sample k a pure function of (seed, k), dropout masks of (seed, step,
// micro-step, node) (kernels/dropout_rng.h).
//
// Layout (docs/checkpoints.md): DIR/latest names the newest DIR/step-NNNNNNNN,
// which holds checkpoint.json (the manifest) and tensors.bin (raw tensor bytes).
// A save writes DIR/.step-NNNNNNNN.tmp, fsyncs, renames it into place, then
// replaces DIR/latest by rename; only then are older checkpoints removed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ir/plan.h"
#include "runtime/executor.h"

namespace ds {

struct TrainPosition {
  int64_t step = 0;          // optimizer steps completed
  int64_t samples_seen = 0;  // data position: global samples consumed
  uint64_t seed = 0;         // seed of data order, augmentation and dropout
  // fp16: steps skipped on gradient overflow (the learning-rate schedule and Adam's
  // step count advance only on applied steps) and the loss scaler's state.
  int64_t skipped_steps = 0;
  nlohmann::json loss_scaler;  // null without fp16 loss scaling
};

// A checkpoint's manifest, found and checked against a plan.
struct CheckpointInfo {
  std::string dir;  // the step directory holding checkpoint.json
  TrainPosition position;
  nlohmann::json manifest;
  // Saved with another world size or ZeRO stage: restored through whole tensors
  // (runtime/shards.h), each rank reading every saved rank's file.
  bool reshard = false;
};

// Indices of the plan tensors a checkpoint holds, in plan order: persistent, not
// a constant or a feed, and not an alias (same memory) of one listed before.
std::vector<int> checkpointTensors(const PlanFile& plan);
// 16 hex digits identifying the saved tensor table (names, dtypes, shapes, roles).
std::string planFingerprint(const PlanFile& plan);

// Saves into DIR (created if needed) as DIR/step-<step>, atomically; returns that
// directory. Errors name the path and the reason.
std::string saveCheckpoint(const std::string& dir, const Executor& exec,
                           const TrainPosition& position);

// The step of DIR's latest checkpoint, or -1 when DIR holds none.
int64_t latestCheckpointStep(const std::string& dir);

// The latest checkpoint in DIR (or DIR itself when it is a step directory), checked
// to fit `plan`: a checkpoint of another plan is a one-line error naming the first
// tensor that differs.
CheckpointInfo readCheckpoint(const std::string& dir, const PlanFile& plan);

// Writes the checkpoint's tensors into the executor, after checking that the
// tensor file is whole (size and checksum).
void restoreCheckpoint(const CheckpointInfo& info, Executor& exec);

}  // namespace ds
