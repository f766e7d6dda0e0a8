// The IR verifier: checks that a graph is well formed. Tests run it after every
// pass; it throws ds::Error naming the first problem found.
//
// Checks, in order:
//  1. Sources have no producer, carry a source role, and their data (if any) matches their type.
//  2. Every node input is a source or an output of an earlier node (SSA and order).
//  3. Use-def links agree: each output's producer is its node; each value's user list
//     holds exactly one entry per use.
//  4. Node outputs carry a non-source role.
//  5. Arity and attributes match the op's schema, and re-running the shape rule gives
//     the output types stored in the graph.
//  6. Graph outputs are defined values.
//  7. No node reads a state after the node that computes its update (for a chain of
//     updates of one state: no value of the chain after the next link is computed).
//  8. No micro-step node reads a value computed by an optimizer-step node.
#pragma once

#include "ir/graph.h"

namespace ds {

void verifyGraph(const Graph& graph);

}  // namespace ds
