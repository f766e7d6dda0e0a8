// Pass "pack-attention": self-attention whose Q, K and V are one projection's
// output split in three along its last axis (GPT's c_attn: [B, T, 3·H·D] -> Split
// -> three Reshapes to [B, T, H, D]) reads them packed, where the projection wrote
// them:
//
//   FusedAttention(Reshape(Split(X)[0]), Reshape(Split(X)[1]), Reshape(Split(X)[2]))
//     ->  FusedAttention(Reshape(X){[B, T, 3, H, D]})
//
// The Split copied the projection's output into three tensors, and its gradient (a
// Concat) copied the three gradients back: two passes over a [B, T, 3·H·D] tensor
// per layer that the packed form (ir/ops/attention.cc) does not make. Run it after
// fuse-attention and dead-code (the head transposes fuse-attention made dead still
// read Q, K and V).
//
// Guarantees: every value computes exactly what it did (the attention reads the
// same elements). Only a Split into three equal parts, each read only by a Reshape
// to [B, T, H, D] that only this attention reads, folds; anything else stays.
// Returns true if it changed the graph.
#pragma once

#include "ir/graph.h"

namespace ds {

bool packAttention(Graph& graph);

}  // namespace ds
