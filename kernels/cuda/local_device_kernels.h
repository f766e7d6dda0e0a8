// The device side of the local device transport (kernels/cuda/local_device_communicator.h):
// one launch that sums the ranks' buffers element by element in rank order, the
// GPU twin of comm::sumInRankOrder (runtime/comm/comm_util.h), with the same bits.
// Kept free of CUDA types (the stream is a void* cudaStream_t) so that the
// communicator's host code and the .cu file share it without nvcc seeing more.
#pragma once

#include <cstdint>

#include "ir/dtype.h"

namespace ds::cuda {

// The most ranks one launch sums: their pointers travel by value in the kernel's
// arguments, so no device table has to be written before the launch.
inline constexpr int kMaxLocalDeviceRanks = 16;

struct RankSources {
  const void* ptr[kMaxLocalDeviceRanks] = {};
  int count = 0;  // ranks, 2..kMaxLocalDeviceRanks
};

// dst[i] = ((srcs[0][i] + srcs[1][i]) + ...) + srcs[n-1][i] for i < count,
// enqueued on `stream`: f32 and f64 in their type, f16 and bf16 in f32 rounded
// once to nearest even, integers wrapping. dst may be one of the sources exactly.
// Bool is the caller's to refuse (nothing is launched). Launch errors are left
// for cudaGetLastError.
void sumRanksInOrder(const RankSources& srcs, void* dst, int64_t count, DType dtype, void* stream);

}  // namespace ds::cuda
