// The neural-network kernel families that registerNnKernels (nn.cc) installs,
// one per file, and small helpers they share.
#pragma once

#include "kernels/cpu/kernel.h"

namespace ds::cpu {

void registerConvKernels(CpuKernelRegistry& r);    // conv.cc: Conv
void registerMatMulKernels(CpuKernelRegistry& r);  // matmul.cc: Gemm, MatMul
void registerPoolKernels(CpuKernelRegistry& r);    // pool.cc: MaxPool, AveragePool, GAP
void registerNormKernels(CpuKernelRegistry& r);    // norm.cc: BatchNormalization, LayerNorm
void registerLossKernels(CpuKernelRegistry& r);    // loss.cc: SoftmaxCrossEntropyLoss

// Fails (at factory time) unless input `i` is f32 or f64; returns its dtype.
DType requireF32OrF64(const KernelContext& ctx, size_t i);

// A kernel that does nothing (steps whose outputs are empty).
std::unique_ptr<CpuKernel> noopKernel();

}  // namespace ds::cpu
