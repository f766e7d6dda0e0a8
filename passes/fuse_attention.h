// Pass "fuse-attention": scaled dot-product attention written out as ONNX ops
// becomes one FusedAttention step (ir/ops/attention.cc), so the [batch, heads, T, T]
// scores and probabilities are never stored, and the head transposes around it go:
//
//   Transpose(MatMul(Softmax(MatMul(Transpose(Q), Transpose(K)){alpha}[, causal mask]),
//                    Transpose(V)))      ->  FusedAttention(Q, K, V){scale = alpha, causal}
//
// with Q, K, V in [batch, T, heads, head_dim] and each Transpose the head split
// (perm [0, 2, 1, 3]; K's [0, 2, 3, 1], or [0, 2, 1, 3] read transposed). Run it
// after fold-transpose, fold-scale and fold-softmax-mask, which bring attention
// into this form (dsmodel's GPT and PyTorch's exported one both reach it).
//
// Guarantees: every value computes what it did, up to rounding (the probabilities
// are no longer rounded to their dtype before the second product). Only a Softmax
// without a mask, or with a constant causal one (0 where key j <= query i, <= -1e4
// above: exp of it is 0 in f32), folds; intermediate values read by anything else
// (or graph outputs) keep the attention unfused. Returns true if it changed the graph.
#pragma once

#include "ir/graph.h"

namespace ds {

bool fuseAttention(Graph& graph);

}  // namespace ds
