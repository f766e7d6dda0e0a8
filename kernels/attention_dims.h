// FusedAttention(Grad)'s geometry (ir/ops/shape_helpers.h) from a step's context,
// for the CPU and CUDA kernels alike: Q, K and V are its inputs from the first
// (forward) or the second (gradient, after dY) on, three or one packed.
#pragma once

#include <vector>

#include "ir/ops/shape_helpers.h"
#include "kernels/cpu/kernel.h"

namespace ds {

// The shapes of Q, K and V, or of the one packed QKV.
inline std::vector<Shape> attentionOperandShapes(const cpu::KernelContext& ctx) {
  const size_t q = ctx.op == "FusedAttentionGrad" ? 1 : 0;
  std::vector<Shape> qkv;
  for (size_t i = 0; i < attentionOperandCount(ctx.op, ctx.inputs.size()); ++i)
    qkv.push_back(ctx.input(q + i).shape());
  return qkv;
}

inline AttentionDims attentionDimsOf(const cpu::KernelContext& ctx) {
  return attentionDims(attentionOperandShapes(ctx), ctx.f("scale"), ctx.i("causal") != 0);
}

}  // namespace ds
