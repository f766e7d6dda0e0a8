// The training loop over a training plan: each optimizer step takes the next
// micro-batch of every dataset, sets the learning rate and step feeds, runs the
// plan once and records the step's metrics.
#pragma once

#include <map>
#include <ostream>
#include <string>

#include "ir/plan.h"
#include "runtime/cifar10.h"
#include "runtime/executor.h"

namespace ds {

bool isTrainingPlan(const PlanFile& plan);

struct TrainOptions {
  int64_t steps = 1;
  // One dataset per plan feed (inputs and labels): the first axis is the sample
  // axis; samples are read in order and cycled.
  std::map<std::string, Tensor> datasets;
  std::string metrics_path;  // JSON lines, one object per optimizer step
  // CIFAR-10 instead of datasets: feeds the plan's image input and its label.
  const Cifar10* cifar = nullptr;
};

struct StepMetrics {
  int64_t step;
  double loss, lr, grad_norm, samples_per_s;
};

// Runs the steps; returns every step's metrics. Errors name the feed or dataset.
std::vector<StepMetrics> train(Executor& exec, const PlanFile& plan, const TrainOptions& options);

}  // namespace ds
