// Device helpers shared by the .cu files (included only there): launch sizes,
// grid-stride loops, walk offsets and block-wide sums in double.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/launch.h"

namespace ds::cuda {

inline constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n items (capped; the loop covers the rest).
inline unsigned gridFor(int64_t n, int threads = kThreads) {
  int64_t blocks = (n + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  return static_cast<unsigned>(blocks > 65535 * 8 ? 65535 * 8 : blocks);
}

__device__ inline int64_t globalIndex() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ inline int64_t globalStride() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

// Element offset of operand k for flat output index i.
__device__ inline int64_t walkOffset(const Walk& w, int k, int64_t i) {
  int64_t off = w.base[k];
  for (int d = w.rank - 1; d >= 0; --d) {
    int64_t q = i / w.dims[d];
    off += (i - q * w.dims[d]) * w.strides[k][d];
    i = q;
  }
  return off;
}

// Sum of `v` over the block (blockDim.x a multiple of 32, at most 1024); every
// thread gets the result. `shared` holds 32 doubles.
__device__ inline double blockSum(double v, double* shared) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // `shared` may still be read by a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  const int warps = static_cast<int>(blockDim.x + 31) >> 5;
  double t = 0.0;
  for (int i = 0; i < warps; ++i) t += shared[i];
  return t;
}

__device__ inline double blockMax(double v, double* shared) {
  for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_down_sync(0xffffffffu, v, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  const int warps = static_cast<int>(blockDim.x + 31) >> 5;
  double t = shared[0];
  for (int i = 1; i < warps; ++i) t = fmax(t, shared[i]);
  return t;
}

}  // namespace ds::cuda
