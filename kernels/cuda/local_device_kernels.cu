// The rank-order sum of the local device transport (see local_device_kernels.h).
// Each thread owns whole elements and adds the ranks in order 0..n-1, exactly as
// comm::sumInRankOrder does on the CPU, so both give the same bits: the adds are
// IEEE adds in the same order (no contraction is possible without a multiply),
// and the 16-bit conversions are exact widenings and round-to-nearest-even
// narrowings on both sides. Only NaNs may differ in their bits (a GPU makes the
// canonical NaN, x86 keeps the payload); they are NaNs on both.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/device_util.h"
#include "kernels/cuda/local_device_kernels.h"

namespace ds::cuda {
namespace {

// How one dtype loads into its accumulator and stores back.
template <typename T>
struct PlainSum {
  using Store = T;
  using Acc = T;
  __device__ static Acc load(Store v) { return v; }
  __device__ static Store save(Acc a) { return a; }
};

// Signed integers add as unsigned, so that overflow wraps as on the CPU.
template <typename T, typename U>
struct WrappingSum {
  using Store = T;
  using Acc = U;
  __device__ static Acc load(Store v) { return static_cast<U>(v); }
  __device__ static Store save(Acc a) { return static_cast<T>(a); }
};

struct HalfSum {
  using Store = __half;
  using Acc = float;
  __device__ static Acc load(Store v) { return __half2float(v); }
  __device__ static Store save(Acc a) { return __float2half_rn(a); }
};

struct Bf16Sum {
  using Store = __nv_bfloat16;
  using Acc = float;
  __device__ static Acc load(Store v) { return __bfloat162float(v); }
  __device__ static Store save(Acc a) { return __float2bfloat16_rn(a); }
};

// Element i is read from every source before dst[i] is written, by the same
// thread, so dst may be one of the sources.
template <typename Op>
__global__ void sumRanksKernel(RankSources srcs, typename Op::Store* dst, int64_t count) {
  using Store = typename Op::Store;
  for (int64_t i = globalIndex(); i < count; i += globalStride()) {
    typename Op::Acc acc = Op::load(static_cast<const Store*>(srcs.ptr[0])[i]);
    for (int r = 1; r < srcs.count; ++r)
      acc = acc + Op::load(static_cast<const Store*>(srcs.ptr[r])[i]);
    dst[i] = Op::save(acc);
  }
}

template <typename Op>
void launchSum(const RankSources& srcs, void* dst, int64_t count, cudaStream_t stream) {
  sumRanksKernel<Op>
      <<<gridFor(count), kThreads, 0, stream>>>(srcs, static_cast<typename Op::Store*>(dst), count);
}

}  // namespace

void sumRanksInOrder(const RankSources& srcs, void* dst, int64_t count, DType dtype, void* stream) {
  if (count <= 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case DType::F32:
      return launchSum<PlainSum<float>>(srcs, dst, count, s);
    case DType::F64:
      return launchSum<PlainSum<double>>(srcs, dst, count, s);
    case DType::F16:
      return launchSum<HalfSum>(srcs, dst, count, s);
    case DType::BF16:
      return launchSum<Bf16Sum>(srcs, dst, count, s);
    case DType::I64:
      return launchSum<WrappingSum<int64_t, uint64_t>>(srcs, dst, count, s);
    case DType::I32:
      return launchSum<WrappingSum<int32_t, uint32_t>>(srcs, dst, count, s);
    case DType::I8:
      return launchSum<WrappingSum<int8_t, uint8_t>>(srcs, dst, count, s);
    case DType::U8:
      return launchSum<WrappingSum<uint8_t, uint8_t>>(srcs, dst, count, s);
    case DType::Bool:
      return;
  }
}

}  // namespace ds::cuda
