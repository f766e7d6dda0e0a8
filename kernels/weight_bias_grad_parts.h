// WeightBiasGrad's parts, the two steps it fuses (passes/fuse_bias_grad.h), as
// contexts for those ops' own kernels: the CPU kernel runs them, and the CUDA kernel
// where cuBLASLt cannot run the step in one matmul. So the fused step computes
// what the two computed, to the bit.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/cpu/kernel.h"

namespace ds {

struct WeightBiasGradParts {
  cpu::KernelContext product;  // MatMul{transA = 1}(A, B) -> Y
  cpu::KernelContext sum;      // ReduceSum{axes = [0]}(input bias_input) -> S
};

inline WeightBiasGradParts weightBiasGradParts(const cpu::KernelContext& ctx) {
  const size_t summed = ctx.i("bias_input") == 0 ? 0 : 1;
  return {cpu::partContext(ctx, "MatMul", {ctx.input(0), ctx.input(1)}, {ctx.output(0)},
                           {{"transA", int64_t{1}}}),
          cpu::partContext(ctx, "ReduceSum", {ctx.input(summed)}, {ctx.output(1)},
                           {{"axes", std::vector<int64_t>{0}}, {"keepdims", int64_t{0}}})};
}

}  // namespace ds
