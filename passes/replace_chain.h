// What fusion passes (fuse-gelu, fuse-layer-norm) share: replacing a matched chain
// of element-wise and reduction nodes by the one registry op that computes it.
#pragma once

#include <string>
#include <vector>

#include "ir/graph.h"

namespace ds {

// Replaces `chain` (its nodes consumers first: the first computes the chain's
// result, and only the chain reads the values inside it) by one node op(inputs)
// {attrs}. The new node takes the first node's name, phase and host placement, and
// its output the result's name and role, so diagnostics, profiles, output names and
// state updates are unchanged. No input may be computed inside the chain. Returns
// the new node.
Node* replaceChain(Graph& graph, const std::vector<Node*>& chain, const std::string& op,
                   std::vector<Value*> inputs, AttributeMap attrs);

}  // namespace ds
