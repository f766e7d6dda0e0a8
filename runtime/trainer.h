// The training loop over a training plan: each optimizer step sets the learning
// rate, step (and cycled momentum, and fp16 loss scale) feeds, then runs
// gradient_accumulation_steps
// micro-steps, each on the next micro-batch of every dataset, the last one with
// the optimizer step, and records the step's metrics (loss: the mean over the
// micro-steps, i.e. over the global batch). Under fp16 a non-finite gradient norm
// means the plan skipped the update; the loss scaler then lowers the scale and the
// schedule and Adam's step count stay where they were, as in DeepSpeed.
#pragma once

#include <functional>
#include <map>
#include <ostream>
#include <string>

#include <nlohmann/json.hpp>

#include "ir/plan.h"
#include "runtime/executor.h"
#include "runtime/image_dataset.h"
#include "runtime/synthetic_data.h"
#include "runtime/wall_clock.h"

namespace ds {

bool isTrainingPlan(const PlanFile& plan);

struct StepMetrics;

struct TrainOptions {
  int64_t steps = 1;  // the last optimizer step to run (total, counting resumed steps)
  // Optimizer steps already taken (resuming from a checkpoint): training runs steps
  // start_step + 1 .. steps; data, learning rate and dropout continue from there.
  int64_t start_step = 0;
  // One dataset per plan feed (inputs and labels): the first axis is the sample
  // axis; samples are read in order and cycled.
  std::map<std::string, Tensor> datasets;
  std::string metrics_path;  // JSON lines, one object per optimizer step
  // An image dataset (CIFAR-10, an image folder) instead of datasets: feeds the
  // plan's image input and its label.
  const ImageDataset* images = nullptr;
  // --data synthetic instead of datasets: random samples of every feed.
  const SyntheticData* synthetic = nullptr;
  // Called after every optimizer step (checkpoints, progress display).
  std::function<void(const StepMetrics&)> after_step;
  // Called after every micro-step's run has finished, with whether it ran the
  // optimizer step (the comms logger reads Executor::lastRunSeconds).
  std::function<void(bool optimizer_step)> after_micro_step;
  // fp16 (resuming): steps skipped so far and the loss scaler's state
  // (runtime/loss_scaler.h); null: a fresh scaler.
  int64_t skipped_steps = 0;
  nlohmann::json loss_scaler;
};

struct StepMetrics {
  int64_t step;
  double loss, lr, grad_norm, samples_per_s;
  double seconds = 0;          // the step's wall time: its micro-steps and their data
  double loss_scale = 1;       // the scale this step's backward used
  bool skipped = false;        // gradients overflowed: nothing was updated
  int64_t skipped_steps = 0;   // so far, this one included
  nlohmann::json loss_scaler;  // the scaler's state after the step (fp16)
  // Each micro-step's time by part (runtime/wall_clock.h) when the executor times
  // its steps (ExecutorOptions::profile); empty otherwise.
  std::vector<PartTimes> micro_step_times;
};

// Runs the steps; returns every step's metrics. Errors name the feed or dataset.
std::vector<StepMetrics> train(Executor& exec, const PlanFile& plan, const TrainOptions& options);

}  // namespace ds
