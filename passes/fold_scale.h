// Pass "fold-scale": a MatMul whose only use is a multiplication by (or division
// by) a constant scalar takes the scalar as its alpha attribute, and the Mul/Div
// goes. Attention's scores (q·kᵀ)/sqrt(d) are the largest tensors of a transformer
// ([batch, heads, T, T]); the scale inside the GEMM saves a pass over them in the
// forward step and another in the backward one (the gradient's MatMuls inherit alpha).
//
// Guarantees: every value computes what it did, up to rounding: the scale is applied
// in the GEMM's f32 accumulator, before its one rounding, where the Mul rounded the
// product a second time. A MatMul with other users is left alone. Returns true if it
// changed the graph.
#pragma once

#include "ir/graph.h"

namespace ds {

bool foldScaleIntoMatMul(Graph& graph);

}  // namespace ds
