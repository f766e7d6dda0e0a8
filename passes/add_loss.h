// Pass "add-loss": appends the training loss to a forward graph.
//
// Guarantees: the graph gets a scalar f32/f64 output named "loss" (first output;
// the model's outputs follow). Kinds:
//  * cross_entropy: a label input (i64, the logits' shape without the class axis,
//    which is the last axis) and SoftmaxCrossEntropyLoss, mean over the samples;
//  * mse: a label input shaped like the output, mean of squared errors;
//  * output: the model already computes its loss in the named scalar output.
#pragma once

#include <string>

#include "ir/graph.h"

namespace ds {

struct LossOptions {
  std::string kind = "cross_entropy";  // cross_entropy | mse | output
  std::string label = "label";         // name of the label input to add
  std::string output;                  // model output to use (default: the first)
};

Value* addLoss(Graph& graph, const LossOptions& options);

}  // namespace ds
