// Pass "fold-transpose": a Transpose that swaps the last two dims of a MatMul
// operand becomes the MatMul's transA/transB attribute, so no copy is made
// (a tied GPT lm_head otherwise transposes the whole embedding every step).
//
// Guarantees: every MatMul computes the same values as before; a Transpose is
// only bypassed, never changed, so other users still see it (one left without
// users is for the dead-code pass). Returns true if it changed the graph.
#pragma once

#include "ir/graph.h"

namespace ds {

bool foldTransposeIntoMatMul(Graph& graph);

}  // namespace ds
