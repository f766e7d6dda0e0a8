// Helpers shared by the CPU kernels: C++ element types for each DType (f16 and
// bf16 as storage structs computed in float), dtype dispatch over type lists,
// wrapping integer and saturating float->int arithmetic, branch-free selects and
// vectorisable float exp/tanh/erf, OpenMP chunked loops, and a strided
// (numpy-broadcast) walker whose collapsed dims and strides are computed once
// when a plan step's kernel is built, so run() walks tensors without allocating.
#pragma once

#include <omp.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "kernels/cpu/kernel.h"
#include "kernels/dropout_rng.h"

namespace ds::cpu {

// Storage types of the 16-bit floats; arithmetic converts them to float.
struct Half {
  uint16_t bits;
};
struct BF16 {
  uint16_t bits;
};
static_assert(sizeof(bool) == 1, "bool tensors are stored one byte per element");

template <typename T>
struct Tag {
  using type = T;
};
template <typename... Ts>
struct TypeList {};

using FloatTypes = TypeList<float, double, Half, BF16>;
using NumericTypes = TypeList<float, double, Half, BF16, int64_t, int32_t, int8_t, uint8_t>;
using AllTypes = TypeList<float, double, Half, BF16, int64_t, int32_t, int8_t, uint8_t, bool>;

template <typename T>
constexpr DType dtypeOf() {
  if constexpr (std::is_same_v<T, float>) return DType::F32;
  if constexpr (std::is_same_v<T, double>) return DType::F64;
  if constexpr (std::is_same_v<T, Half>) return DType::F16;
  if constexpr (std::is_same_v<T, BF16>) return DType::BF16;
  if constexpr (std::is_same_v<T, int64_t>) return DType::I64;
  if constexpr (std::is_same_v<T, int32_t>) return DType::I32;
  if constexpr (std::is_same_v<T, int8_t>) return DType::I8;
  if constexpr (std::is_same_v<T, uint8_t>) return DType::U8;
  if constexpr (std::is_same_v<T, bool>) return DType::Bool;
}

// Calls f(Tag<T>{}) for the T of `list` whose dtype is `t`; false when none is.
template <typename F, typename... Ts>
bool dispatch(TypeList<Ts...>, DType t, F&& f) {
  return ((dtypeOf<Ts>() == t ? (f(Tag<Ts>{}), true) : false) || ...);
}

// Like dispatch, but fails the step ("dtype X is not supported") when no type matches.
template <typename List, typename F>
void dispatchOrFail(const KernelContext& ctx, List list, DType t, F&& f) {
  if (!dispatch(list, t, std::forward<F>(f))) ctx.fail("dtype ", dtypeName(t), " is not supported");
}

// The type arithmetic on T happens in: float for the 16-bit floats, T otherwise.
template <typename T>
struct ComputeOf {
  using type = T;
};
template <>
struct ComputeOf<Half> {
  using type = float;
};
template <>
struct ComputeOf<BF16> {
  using type = float;
};
template <typename T>
using Compute = typename ComputeOf<T>::type;

template <typename T>
inline Compute<T> load(T v) {
  if constexpr (std::is_same_v<T, Half>)
    return halfToFloat(v.bits);
  else if constexpr (std::is_same_v<T, BF16>)
    return bf16ToFloat(v.bits);
  else
    return v;
}

template <typename T>
inline T store(Compute<T> v) {
  if constexpr (std::is_same_v<T, Half>)
    return Half{floatToHalf(v)};
  else if constexpr (std::is_same_v<T, BF16>)
    return BF16{floatToBf16(v)};
  else
    return v;
}

template <typename T>
inline constexpr bool kIsFloat = std::is_floating_point_v<Compute<T>>;

// Calls f(Tag<Bits<size>>{}) for element sizes 1, 2, 4 and 8.
template <typename F>
void dispatchSize(size_t size, F&& f) {
  switch (size) {
    case 1:
      return f(Tag<uint8_t>{});
    case 2:
      return f(Tag<uint16_t>{});
    case 4:
      return f(Tag<uint32_t>{});
    default:
      return f(Tag<uint64_t>{});
  }
}

// Unsigned element types of each size: data movement copies elements as these.
template <size_t Size>
using Bits = std::conditional_t<
    Size == 1, uint8_t,
    std::conditional_t<Size == 2, uint16_t, std::conditional_t<Size == 4, uint32_t, uint64_t>>>;

// c ? a : b without a branch. GCC will not if-convert a ternary whose arms hold
// float arithmetic (it could trap), which keeps such loops scalar; masks do not.
template <typename C>
inline C select(bool c, C a, C b) {
  if constexpr (std::is_floating_point_v<C>) {
    using U = Bits<sizeof(C)>;
    const U m = U(0) - static_cast<U>(c);
    return std::bit_cast<C>(static_cast<U>((std::bit_cast<U>(a) & m) | (std::bit_cast<U>(b) & ~m)));
  } else {
    return c ? a : b;
  }
}

// Signed integer arithmetic wraps (two's complement) instead of overflowing.
template <typename X, typename F>
X wrapped(X a, X b, F f) {
  using U = std::make_unsigned_t<X>;
  return static_cast<X>(f(static_cast<U>(a), static_cast<U>(b)));
}

// Saturating float -> integer conversion truncating toward zero (NaN -> 0).
template <typename I>
I floatToInt(double v) {
  if (!(v == v)) return 0;
  if (v <= -9223372036854775808.0) return static_cast<I>(std::numeric_limits<int64_t>::min());
  if (v >= 9223372036854775808.0) return static_cast<I>(std::numeric_limits<int64_t>::max());
  return static_cast<I>(static_cast<int64_t>(v));  // narrower types wrap like C
}

// Branch-free float approximations (within a few ulp of <cmath>) that loops
// vectorise, unlike calls into libm; f64 kernels use <cmath>. Coefficients: Cephes
// expf/tanhf and Eigen's rational erf.
inline float fastExp(float x) {
  constexpr float kHi = 88.72283935f, kLo = -103.972084f;  // ln(FLT_MAX), ln(denorm_min)
  float c = select(x < kHi, x, kHi);  // NaN becomes kHi here and is restored below
  // Below kLo the result is 0 (selected at the end); computing it from 0 instead of
  // kLo keeps the arithmetic off denormals, whose microcode assists made Softmax
  // over masked attention scores (-1e9, -inf) ~20x slower.
  c = select(c > kLo, c, 0.0f);
  float n = (c * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(c / ln 2)
  float r = c - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  float y = p * r * r + r + 1.0f;
  // 2^n in two normal factors, so n in [-150, 128] neither overflows nor flushes early.
  auto ni = static_cast<int32_t>(n);
  int32_t half = ni / 2;
  y *= std::bit_cast<float>((half + 127) << 23);
  y *= std::bit_cast<float>((ni - half + 127) << 23);
  y = select(x > kHi, INFINITY, y);
  y = select(x < kLo, 0.0f, y);
  return select(x != x, x, y);
}

inline float fastSigmoid(float x) {
  return 1.0f / (1.0f + fastExp(-x));
}

inline float fastTanh(float x) {
  float a = std::fabs(x);
  float big = 1.0f - 2.0f / (fastExp(2.0f * a) + 1.0f);
  float z = x * x;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  float small = p * z * a + a;
  return std::copysign(select(a < 0.625f, small, big), x);
}

inline float fastErf(float x) {
  float c = select(x < 4.0f, x, 4.0f);
  c = select(c > -4.0f, c, -4.0f);
  float z = c * c;
  float p = -2.72614225801306e-10f;
  p = p * z + 2.77068142495902e-08f;
  p = p * z - 2.10102402082508e-06f;
  p = p * z - 5.69250639462346e-05f;
  p = p * z - 7.34990630326855e-04f;
  p = p * z - 2.95459980854025e-03f;
  p = p * z - 1.60960333262415e-02f;
  float q = -1.45660718464996e-05f;
  q = q * z - 2.13374055278905e-04f;
  q = q * z - 1.68282697438203e-03f;
  q = q * z - 7.37332916720468e-03f;
  q = q * z - 1.42647390514189e-02f;
  float r = c * p / q;
  r = select(r < 1.0f, r, 1.0f);
  r = select(r > -1.0f, r, -1.0f);
  return select(x != x, x, r);
}

// Work items below this run on the calling thread (OpenMP start-up costs a few µs).
inline constexpr int64_t kParallelMin = 32768;

// Splits [0, n) into one contiguous chunk per thread and calls fn(begin, end) on
// each; runs serially when n <= min_parallel. fn must not throw.
template <typename F>
void parallelChunks(int64_t n, F&& fn, int64_t min_parallel = kParallelMin) {
  if (n <= 0) return;
  if (n <= min_parallel || omp_get_max_threads() == 1) {
    fn(int64_t{0}, n);
    return;
  }
#pragma omp parallel
  {
    int64_t threads = omp_get_num_threads();
    int64_t chunk = (n + threads - 1) / threads;
    int64_t begin = std::min(n, chunk * omp_get_thread_num());
    int64_t end = std::min(n, begin + chunk);
    if (begin < end) fn(begin, end);
  }
}

// memcpy split across threads for large copies; nothing when dst == src.
void copyBytes(void* dst, const void* src, size_t bytes);

// A Dropout node's mask stream on this rank (kernels/dropout_rng.h) before its
// first step: the run seed, the node's seed attribute and name, the rank and the
// world size, the same on every backend.
DropoutStream dropoutStreamOf(const KernelContext& ctx);

inline constexpr int kMaxWalkRank = 16;

// Collapses a walk over `dims` in which operand k advances by strides[k][d] along
// dim d: drops size-1 dims and merges neighbours that are contiguous for every
// operand. The result has at least one dim (a scalar walk is one dim of size 1).
void collapseWalk(std::vector<int64_t>& dims, std::vector<std::vector<int64_t>>& strides);

// Per-dim strides of an input of shape `in` broadcast (numpy rules) to `out`: 0 on
// broadcast dims. `in` must broadcast to `out`.
std::vector<int64_t> broadcastStrides(const Shape& in, const Shape& out);

// Walks N operands over an output in row-major order, handing out contiguous
// segments of the innermost collapsed dim: seg(out_offset, in_offsets, len), where
// operand k's elements are in_offsets[k] + j * innerStride(k) for j < len.
template <size_t N>
class StridedWalk {
 public:
  StridedWalk() = default;
  // dims: the output dims; strides[k]: operand k's stride along each of them.
  StridedWalk(const KernelContext& ctx, std::vector<int64_t> dims,
              std::vector<std::vector<int64_t>> strides) {
    numel_ = 1;
    for (int64_t d : dims) numel_ *= d;
    collapseWalk(dims, strides);
    if (dims.size() > static_cast<size_t>(kMaxWalkRank))
      ctx.fail("rank ", dims.size(), " after collapsing exceeds ", kMaxWalkRank);
    dims_ = std::move(dims);
    strides_.resize(dims_.size());
    for (size_t d = 0; d < dims_.size(); ++d)
      for (size_t k = 0; k < N; ++k) strides_[d][k] = strides[k][d];
  }

  int64_t numel() const { return numel_; }
  int64_t innerStride(size_t k) const { return strides_.back()[k]; }
  int64_t innerSize() const { return dims_.back(); }

  template <typename Seg>
  void run(Seg&& seg, int64_t min_parallel = kParallelMin) const {
    parallelChunks(
        numel_, [&](int64_t begin, int64_t end) { walkRange(begin, end, seg); }, min_parallel);
  }

 private:
  template <typename Seg>
  void walkRange(int64_t begin, int64_t end, Seg& seg) const {
    const int64_t last = static_cast<int64_t>(dims_.size()) - 1;
    std::array<int64_t, kMaxWalkRank> idx{};
    std::array<int64_t, N> off{};
    for (int64_t d = last, rem = begin; d >= 0; --d) {
      idx[d] = rem % dims_[d];
      rem /= dims_[d];
      for (size_t k = 0; k < N; ++k) off[k] += idx[d] * strides_[d][k];
    }
    for (int64_t pos = begin; pos < end;) {
      int64_t len = std::min(dims_[last] - idx[last], end - pos);
      seg(pos, off, len);
      pos += len;
      idx[last] += len;
      for (size_t k = 0; k < N; ++k) off[k] += len * strides_[last][k];
      for (int64_t d = last; d > 0 && idx[d] == dims_[d]; --d) {  // carry into outer dims
        idx[d] = 0;
        ++idx[d - 1];
        for (size_t k = 0; k < N; ++k) off[k] += strides_[d - 1][k] - dims_[d] * strides_[d][k];
      }
    }
  }

  std::vector<int64_t> dims_;
  std::vector<std::array<int64_t, N>> strides_;
  int64_t numel_ = 0;
};

// A walk of N inputs of the given shapes broadcast to `out`.
template <size_t N>
StridedWalk<N> broadcastWalk(const KernelContext& ctx, const Shape& out,
                             const std::array<Shape, N>& ins) {
  std::vector<std::vector<int64_t>> strides;
  for (const Shape& in : ins) strides.push_back(broadcastStrides(in, out));
  return StridedWalk<N>(ctx, out, std::move(strides));
}

}  // namespace ds::cpu
