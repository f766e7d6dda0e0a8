// Pass "dead-code": removes nodes whose outputs nothing uses and sources
// (parameters, buffers, constants) that nothing reads.
//
// Guarantees: graph outputs, state updates and feeds (inputs, labels) are kept; a node with any
// used output is kept whole. Algorithm:
//  1. Walk nodes in reverse order; erase a node when none of its outputs has users
//     or is a graph output (its inputs may then become dead, which the reverse walk sees).
//  2. Erase non-feed sources without users that are not graph outputs.
#pragma once

#include "ir/graph.h"

namespace ds {

bool eliminateDeadCode(Graph& graph);

}  // namespace ds
