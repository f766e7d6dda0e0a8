// Pass "fuse-bias-grad" (on a training graph, after the ZeRO partition): a linear
// layer y = x·W + b has two gradients over the same dY: dW = MatMul{transA = 1}(x
// rows, dY rows) and db = ReduceSum(dY) over every axis but the last. Both become one
// WeightBiasGrad(x rows, dY rows), whose CUDA kernel sums db in the product's
// epilogue (cuBLASLt's bias-gradient epilogues), so dY is read once, not twice, and
// the step's launch is one, not two. Layers whose weights are stored transposed (dW =
// dYᵀ·x, PyTorch's Linear as a Gemm or a MatMul by Wᵀ) fuse alike, summing the
// product's first operand.
//
// Guarantees: the fused node computes what the two nodes did (the CPU kernel runs
// theirs, so training is bit for bit the same). It is placed where the earlier of
// the two was, or else (activation checkpointing recomputes x after the sum) where
// the later was when nothing reads the earlier one's result in between, reading
// reshapes of the same values; the results keep their names, roles and shapes (a
// bias sum only reshapes read is left flat for them to read).
// Only a ReduceSum of exactly the leading axes in the input's type, a MatMul or a
// Gemm without C with transA = 1, transB = 0, alpha = 1 and 2-D operands, with dY's
// rows as one operand, and neither result a graph output or state update, are fused.
// After the ZeRO partition, so that no pass holds the replaced values. Returns true
// if it changed the graph.
#pragma once

#include "ir/graph.h"

namespace ds {

bool fuseBiasGrad(Graph& graph);

}  // namespace ds
