// WeightBiasGrad's cuBLASLt kernel (weight_bias_grad_kernels.cc), exposed so that a
// test can tell which path a 16-bit step takes without running it.
#pragma once

#include <memory>
#include <string>

#include "kernels/cuda/kernel.h"

namespace ds::cuda {

// The step as one cuBLASLt matmul with a bias-gradient epilogue, or nullptr where
// that cannot run it: f32 operands, an empty dim, a bias output under 16-byte
// alignment, no cuBLASLt handle (no GPU), or no algorithm from the heuristic; `why`,
// if given, then says which. The caller then runs the MatMul and ReduceSum kernels.
std::unique_ptr<CudaKernel> ltWeightBiasGradKernel(const KernelContext& ctx, const Device& dev,
                                                   std::string* why = nullptr);

}  // namespace ds::cuda
