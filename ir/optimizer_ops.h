// What passes and backends ask of the optimizer step ops (ir/ops/optimizer.cc),
// which share one operand layout:
//   (param, grad, lr, step, states..., [grad_scale], [momentum], [overflow_check])
//     -> (param', states'..., [rounded])
#pragma once

#include <string>
#include <vector>

#include "ir/graph.h"

namespace ds {

// SgdStep, AdamStep, LionStep, AdagradStep or LambStep.
bool isOptimizerStep(const std::string& op);

// The input indices of a step's optimizer states (its outputs 1... in the same
// order): Adam's and LAMB's moments, SGD's velocity when it has one, Lion's
// exp_avg, Adagrad's sum.
std::vector<size_t> optimizerStateInputs(const Node& step);

}  // namespace ds
