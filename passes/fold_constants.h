// Constant folding: evaluates nodes whose inputs are all compile-time constants
// on the host and replaces their outputs by constant sources.
//
// Guarantees: a folded output becomes a Role::Constant source with the same name,
// type and uses (graph outputs included), so consumers and later passes see no
// difference other than the producer being gone; values computed on the host are
// exact for integer dtypes (wrapping, integer Div truncating toward zero) and
// rounded once to the output dtype for floats. Parameters, buffers and feeds are
// never treated as constants. Shape needs no data, only its input's static shape.
#pragma once

#include <vector>

#include "ir/graph.h"

namespace ds {

// True when `node` can be evaluated now: its op has a fold evaluator and every
// present input is a Role::Constant value with data (Shape needs no data: only
// its input's static shape).
bool canFold(const Node& node);

// Evaluates a foldable node; one Tensor per output with the output's inferred type.
// Throws ds::Error naming the node when evaluation fails (integer division by zero).
std::vector<Tensor> evaluateNode(const Node& node);

// Replaces the node's outputs by new constant source values with the outputs' names
// (uses and graph outputs follow) and erases the node. Returns true if it folded.
bool foldNode(Graph& graph, Node* node);

// Pass "fold-constants": folds every foldable node in order until nothing changes;
// removes constant sources left without users (and not graph outputs) by the folding.
// Returns true if it changed the graph.
bool foldConstants(Graph& graph);

}  // namespace ds
