// Device helpers shared by the .cu files (included only there): launch sizes,
// grid-stride loops, walk offsets, block-wide sums in double, and the float
// storage types (f32, f16, bf16) that kernels load to f32 and round back from.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>

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

// Element offsets of operands first, first + 1, ..., first + N - 1 for flat output
// index i: the index decomposed once for all of them, in 32-bit arithmetic when the
// walk's elements fit (a 64-bit division is several 32-bit ones; per element, either
// costs more than its memory traffic).
template <int N>
struct WalkOffsets {
  int64_t at[N];
};

template <int N>
__device__ inline WalkOffsets<N> walkOffsets(const Walk& w, int first, int64_t i) {
  WalkOffsets<N> o;
#pragma unroll
  for (int k = 0; k < N; ++k) o.at[k] = w.base[first + k];
  if (w.rank == 1) {
#pragma unroll
    for (int k = 0; k < N; ++k) o.at[k] += i * w.strides[first + k][0];
    return o;
  }
  if (w.numel <= 0xffffffffLL) {
    auto j = static_cast<uint32_t>(i);
    for (int d = w.rank - 1; d >= 0; --d) {
      const auto dim = static_cast<uint32_t>(w.dims[d]);
      const uint32_t q = j / dim, r = j - q * dim;
#pragma unroll
      for (int k = 0; k < N; ++k) o.at[k] += static_cast<int64_t>(r) * w.strides[first + k][d];
      j = q;
    }
    return o;
  }
  for (int d = w.rank - 1; d >= 0; --d) {
    const int64_t q = i / w.dims[d], r = i - q * w.dims[d];
#pragma unroll
    for (int k = 0; k < N; ++k) o.at[k] += r * w.strides[first + k][d];
    i = q;
  }
  return o;
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

// Float storage: 16-bit values widen to f32 exactly; f32 results round to the
// storage type to nearest-even, once, as the CPU oracle's promotion does
// (kernels/cpu/promote16.h).
__device__ inline float toFloat(float v) {
  return v;
}
__device__ inline float toFloat(__half v) {
  return __half2float(v);
}
__device__ inline float toFloat(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

template <typename S>
__device__ inline S fromFloat(float v);
template <>
__device__ inline float fromFloat<float>(float v) {
  return v;
}
template <>
__device__ inline __half fromFloat<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ inline __nv_bfloat16 fromFloat<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// ---- Packed access ----
// Element-wise kernels over contiguous operands move 16 bytes per access (8 f16 or
// bf16 values, 4 f32) when every operand is 16-byte aligned: 2-byte accesses leave
// most of the memory bandwidth unused. Pack<S> is that many values of storage S;
// the arithmetic per value stays the scalar kernel's, so results are the same.
template <typename S>
inline constexpr int kPack = 16 / static_cast<int>(sizeof(S));

template <typename S>
struct alignas(16) Pack {
  S v[kPack<S>];
};

template <typename S>
__device__ inline Pack<S> loadPack(const S* base, int64_t pack) {
  return reinterpret_cast<const Pack<S>*>(base)[pack];
}

template <typename S>
__device__ inline void storePack(S* base, int64_t pack, const Pack<S>& value) {
  reinterpret_cast<Pack<S>*>(base)[pack] = value;
}

// Whether every pointer allows packed access.
inline bool packable(std::initializer_list<const void*> pointers) {
  for (const void* p : pointers)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

// Calls f(S{}) with the storage type of float dtype `t` (f32, f16 or bf16); the
// host side of a launch picks the kernel instantiation with it.
template <typename F>
void byFloatType(DType t, F&& f) {
  switch (t) {
    case DType::F16:
      return f(__half{});
    case DType::BF16:
      return f(__nv_bfloat16{});
    default:
      return f(float{});
  }
}

}  // namespace ds::cuda
