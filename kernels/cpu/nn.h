// The neural-network kernel families that registerNnKernels (nn.cc) installs,
// one per file, and small helpers they share.
#pragma once

#include <cmath>

#include "kernels/cpu/kernel.h"

namespace ds::cpu {

void registerConvKernels(CpuKernelRegistry& r);       // conv.cc: Conv
void registerMatMulKernels(CpuKernelRegistry& r);     // matmul.cc: Gemm, MatMul
void registerPoolKernels(CpuKernelRegistry& r);       // pool.cc: MaxPool, AveragePool, GAP
void registerNormKernels(CpuKernelRegistry& r);       // norm.cc: BatchNormalization, LayerNorm
void registerLossKernels(CpuKernelRegistry& r);       // loss.cc: SoftmaxCrossEntropyLoss
void registerAttentionKernels(CpuKernelRegistry& r);  // attention.cc: FusedAttention(Grad)

// SoftmaxCrossEntropyLoss(Grad)'s scores taking part of a class axis of `c`: the
// `classes` attribute (padded scores), or all of them (also for plans from before
// the attribute).
inline int64_t paddedClasses(const KernelContext& ctx, int64_t c) {
  const int64_t classes = ctx.attrs.count("classes") ? ctx.i("classes") : 0;
  return classes > 0 ? classes : c;
}

// Fails (at factory time) unless input `i` is f32 or f64; returns its dtype.
DType requireF32OrF64(const KernelContext& ctx, size_t i);

// LayerNormalization's view of X (forward and gradient kernels): `outer` rows of
// `inner` elements, normalising dims [axis, rank) whose shape is `normalized`.
struct LayerNormRows {
  int64_t outer = 0, inner = 0;
  Shape normalized;
};
LayerNormRows layerNormRows(const Shape& x, int64_t axis);

// One row's mean and 1 / sqrt(variance + eps) (biased variance, two passes in double).
struct RowMoments {
  double mean, inv_std;
};
template <typename T>
RowMoments rowMoments(const T* row, int64_t n, double eps) {
  double sum = 0.0, sq = 0.0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) sum += row[i];
  double mean = sum / static_cast<double>(n);
#pragma omp simd reduction(+ : sq)
  for (int64_t i = 0; i < n; ++i) sq += (row[i] - mean) * (row[i] - mean);
  return {mean, 1.0 / std::sqrt(sq / static_cast<double>(n) + eps)};
}

}  // namespace ds::cpu
