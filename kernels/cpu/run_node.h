// Runs one IR node on host tensors through the CPU kernel registry: the harness
// kernel tests and constant evaluation use (plans use the executor instead).
#pragma once

#include <vector>

#include "ir/graph.h"

namespace ds::cpu {

// `inputs[i]` is the value of node input i (ignored, may be null, for absent inputs).
// Returns one tensor per output, typed as the node's outputs.
std::vector<Tensor> runNode(const Node& node, const std::vector<const Tensor*>& inputs);

// Convenience for tests: builds a one-node graph with the given inputs (as graph
// inputs), attributes and number of outputs, infers types and runs it.
std::vector<Tensor> runOp(const std::string& op, const std::vector<Tensor>& inputs,
                          const AttributeMap& attrs = {}, size_t num_outputs = 1);

}  // namespace ds::cpu
