// Pass "autodiff": reverse-mode differentiation over the IR.
//
// Guarantees: for a scalar float `loss` and values `wrt`, appends nodes computing
// d loss / d w for each w (role gradient, named "<w>_grad"); only nodes on a path
// from some w to the loss are differentiated; a value used several times gets the
// sum of its gradients; a node on such a path whose op has no gradient rule is an
// error naming the node and op, never a silent zero.
//
// Algorithm:
//  1. Forward sweep: mark values that depend on any w.
//  2. Backward sweep from the loss: mark values the loss depends on.
//  3. Seed d loss = 1 and walk the nodes in reverse; for each node with an output
//     gradient and an input in both marks, call its rule; accumulate fan-out with Add.
#pragma once

#include <map>
#include <vector>

#include "ir/graph.h"

namespace ds {

std::map<Value*, Value*> buildGradients(Graph& graph, Value* loss, const std::vector<Value*>& wrt);

}  // namespace ds
