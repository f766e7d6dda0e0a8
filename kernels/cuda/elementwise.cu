// Element-wise and data-movement device kernels (see launch.h): unary math,
// broadcasting binary ops, Where, Cast, Dropout, fills, strided copies (Transpose,
// Slice, Expand, SliceGrad), Trilu and Range. One kernel per op family with the
// op chosen by a switch inside, so few templates are instantiated: float math is
// templated on the storage type only (f32, f16, bf16), always computing in f32.
#include <algorithm>
#include <limits>
#include <stdexcept>
#include <type_traits>

#include "kernels/cuda/device_util.h"
#include "kernels/dropout_rng.h"

namespace ds::cuda {
namespace {

// alpha: LeakyRelu's slope, Clip's min; beta: Clip's max.
__device__ inline float unaryF32(UnaryOp op, float x, float alpha, float beta) {
  switch (op) {
    case UnaryOp::Relu:
      return x < 0.0f ? 0.0f : x;
    case UnaryOp::LeakyRelu:
      return x < 0.0f ? alpha * x : x;
    case UnaryOp::Clip: {  // NaN passes; min > max gives max (the CPU's ClipOp)
      const float raised = x < alpha ? alpha : x;
      return beta < raised ? beta : raised;
    }
    case UnaryOp::Sigmoid:
      return 1.0f / (1.0f + expf(-x));
    case UnaryOp::Tanh:
      return tanhf(x);
    case UnaryOp::Erf:
      return erff(x);
    case UnaryOp::GeluErf:
      return 0.5f * x * (1.0f + erff(x * 0.70710678118654752440f));
    case UnaryOp::GeluTanh:
      return 0.5f * x * (1.0f + tanhf(0.79788456080286535588f * (x + 0.044715f * x * x * x)));
    case UnaryOp::Sqrt:
      return sqrtf(x);
    case UnaryOp::Neg:
      return -x;
    case UnaryOp::Exp:
      return expf(x);
    case UnaryOp::Log:
      return logf(x);
    case UnaryOp::Softplus:  // log(1 + e^x) without overflow (the CPU's SoftplusOp)
      return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x)));
  }
  return x;
}

// Kernels over n contiguous elements: with kPacked, packs of kPack<S> values
// (every pointer 16-byte aligned; packable()), then the tail one by one.
// `value(i)` computes element i, `packed(p)` pack p.
template <bool kPacked, typename S, typename Value, typename Packed>
__device__ inline void forContiguous(int64_t n, Value value, Packed packed) {
  int64_t begin = 0;
  if constexpr (kPacked) {
    const int64_t packs = n / kPack<S>;
    for (int64_t p = globalIndex(); p < packs; p += globalStride()) packed(p);
    begin = packs * kPack<S>;
  }
  for (int64_t i = begin + globalIndex(); i < n; i += globalStride()) value(i);
}

// Grid for n contiguous elements, packed or not.
template <typename S>
unsigned contiguousGrid(int64_t n, bool packed) {
  return gridFor(packed ? std::max<int64_t>(n / kPack<S>, 1) : n);
}

template <bool kPacked, typename S>
__global__ void unaryFloatKernel(UnaryOp op, const S* x, S* y, int64_t n, float alpha, float beta) {
  forContiguous<kPacked, S>(
      n, [&](int64_t i) { y[i] = fromFloat<S>(unaryF32(op, toFloat(x[i]), alpha, beta)); },
      [&](int64_t p) {
        Pack<S> v = loadPack(x, p);
#pragma unroll
        for (int k = 0; k < kPack<S>; ++k)
          v.v[k] = fromFloat<S>(unaryF32(op, toFloat(v.v[k]), alpha, beta));
        storePack(y, p, v);
      });
}

// dX = Y == 0 ? 0 : dY: selects, so the 16-bit dY is copied exactly (as promotion
// would round it back to itself).
template <bool kPacked, typename S>
__global__ void reluGradKernel(const S* dy, const S* y, S* dx, int64_t n) {
  forContiguous<kPacked, S>(
      n, [&](int64_t i) { dx[i] = toFloat(y[i]) == 0.0f ? fromFloat<S>(0.0f) : dy[i]; },
      [&](int64_t p) {
        Pack<S> g = loadPack(dy, p);
        const Pack<S> out = loadPack(y, p);
#pragma unroll
        for (int k = 0; k < kPack<S>; ++k)
          if (toFloat(out.v[k]) == 0.0f) g.v[k] = fromFloat<S>(0.0f);
        storePack(dx, p, g);
      });
}

// dX = lo < X < hi ? dY : 0 (Clip's gradient): selects, as reluGradKernel.
template <bool kPacked, typename S>
__global__ void clipGradKernel(const S* dy, const S* x, S* dx, int64_t n, float lo, float hi) {
  auto inside = [&](S v) {
    const float f = toFloat(v);
    return lo < f && f < hi;
  };
  forContiguous<kPacked, S>(
      n, [&](int64_t i) { dx[i] = inside(x[i]) ? dy[i] : fromFloat<S>(0.0f); },
      [&](int64_t p) {
        Pack<S> g = loadPack(dy, p);
        const Pack<S> in = loadPack(x, p);
#pragma unroll
        for (int k = 0; k < kPack<S>; ++k)
          if (!inside(in.v[k])) g.v[k] = fromFloat<S>(0.0f);
        storePack(dx, p, g);
      });
}

// dX = X > 0 ? dY : alpha·dY (LeakyRelu's gradient), each output rounded once.
template <bool kPacked, typename S>
__global__ void leakyReluGradKernel(const S* dy, const S* x, S* dx, int64_t n, float alpha) {
  auto slope = [&](S g, S v) { return toFloat(v) > 0.0f ? g : fromFloat<S>(alpha * toFloat(g)); };
  forContiguous<kPacked, S>(
      n, [&](int64_t i) { dx[i] = slope(dy[i], x[i]); },
      [&](int64_t p) {
        Pack<S> g = loadPack(dy, p);
        const Pack<S> in = loadPack(x, p);
#pragma unroll
        for (int k = 0; k < kPack<S>; ++k) g.v[k] = slope(g.v[k], in.v[k]);
        storePack(dx, p, g);
      });
}

// Gelu'(x), in f32 (the CPU twin: kernels/cpu/grad_misc.cc, in double).
__device__ inline float geluSlope(float x, bool tanh) {
  if (tanh) {
    const float k = 0.79788456080286535588f, a = 0.044715f;
    const float t = tanhf(k * (x + a * x * x * x));
    return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * k * (1.0f + 3.0f * a * x * x);
  }
  const float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752440f));
  return cdf + x * expf(-0.5f * x * x) * 0.39894228040143267794f;  // 1/sqrt(2 pi)
}

// dX = dY·Gelu'(X), each output rounded once.
template <bool kPacked, typename S>
__global__ void geluGradKernel(const S* dy, const S* x, S* dx, int64_t n, bool tanh) {
  forContiguous<kPacked, S>(
      n, [&](int64_t i) { dx[i] = fromFloat<S>(toFloat(dy[i]) * geluSlope(toFloat(x[i]), tanh)); },
      [&](int64_t p) {
        const Pack<S> g = loadPack(dy, p), v = loadPack(x, p);
        Pack<S> out;
#pragma unroll
        for (int k = 0; k < kPack<S>; ++k)
          out.v[k] = fromFloat<S>(toFloat(g.v[k]) * geluSlope(toFloat(v.v[k]), tanh));
        storePack(dx, p, out);
      });
}

// Integer negation wraps (two's complement), as on the CPU.
template <typename T>
__global__ void negIntKernel(const T* x, T* y, int64_t n) {
  using U = std::make_unsigned_t<T>;
  for (int64_t i = globalIndex(); i < n; i += globalStride())
    y[i] = static_cast<T>(U(0) - static_cast<U>(x[i]));
}

template <typename T>
__global__ void clipIntKernel(const T* x, T* y, int64_t n, T lo, T hi) {
  for (int64_t i = globalIndex(); i < n; i += globalStride()) {
    const T raised = x[i] < lo ? lo : x[i];
    y[i] = hi < raised ? hi : raised;
  }
}

// An integer Clip bound: the attribute truncated, saturated to T (the CPU's ClipOp).
template <typename T>
T intBound(double b) {
  if (b <= static_cast<double>(std::numeric_limits<T>::lowest()))
    return std::numeric_limits<T>::lowest();
  if (b >= static_cast<double>(std::numeric_limits<T>::max())) return std::numeric_limits<T>::max();
  return static_cast<T>(b);
}

__global__ void notKernel(const bool* x, bool* y, int64_t n) {
  for (int64_t i = globalIndex(); i < n; i += globalStride()) y[i] = !x[i];
}

template <typename T>
__device__ inline T binaryValue(BinaryOp op, T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    using U = std::make_unsigned_t<T>;
    switch (op) {  // wrapping arithmetic; x / 0 is 0, as on the CPU
      case BinaryOp::Add:
        return static_cast<T>(static_cast<U>(a) + static_cast<U>(b));
      case BinaryOp::Sub:
        return static_cast<T>(static_cast<U>(a) - static_cast<U>(b));
      case BinaryOp::Mul:
        return static_cast<T>(static_cast<U>(a) * static_cast<U>(b));
      case BinaryOp::Div:
        return b == 0 ? T(0) : b == T(-1) ? static_cast<T>(U(0) - static_cast<U>(a)) : a / b;
      default:
        return T(0);
    }
  } else {
    switch (op) {
      case BinaryOp::Add:
        return a + b;
      case BinaryOp::Sub:
        return a - b;
      case BinaryOp::Mul:
        return a * b;
      case BinaryOp::Div:
        return a / b;
      case BinaryOp::Pow:
        return b == 2.0f ? a * a : powf(a, b);
      default:
        return T(0);
    }
  }
}

template <typename T>
__global__ void binaryKernel(BinaryOp op, const T* a, const T* b, T* o, Walk w) {
  for (int64_t i = globalIndex(); i < w.numel; i += globalStride()) {
    const WalkOffsets<2> in = walkOffsets<2>(w, 1, i);
    o[i] = binaryValue(op, a[in.at[0]], b[in.at[1]]);
  }
}

// binaryFloatKernel on same-shape contiguous operands (a, b, o already offset).
// With `mask` (a fused ReluGrad whose dY is this result and Y the mask), outputs
// where the mask is 0 are 0: the rounded result selected, as ReluGrad selects.
template <bool kPacked, typename S>
__global__ void binaryContiguousKernel(BinaryOp op, const S* a, const S* b, S* o, int64_t n,
                                       bool relu, const S* mask) {
  auto one = [&](float x, float y, S m) {
    float v = binaryValue(op, x, y);
    if (mask && toFloat(m) == 0.0f) v = 0.0f;
    return fromFloat<S>(relu && v < 0.0f ? 0.0f : v);
  };
  forContiguous<kPacked, S>(
      n, [&](int64_t i) { o[i] = one(toFloat(a[i]), toFloat(b[i]), mask ? mask[i] : S{}); },
      [&](int64_t p) {
        const Pack<S> x = loadPack(a, p), y = loadPack(b, p);
        const Pack<S> m = mask ? loadPack(mask, p) : Pack<S>{};
        Pack<S> z;
#pragma unroll
        for (int k = 0; k < kPack<S>; ++k) z.v[k] = one(toFloat(x.v[k]), toFloat(y.v[k]), m.v[k]);
        storePack(o, p, z);
      });
}

// Float storage S: operands widened to f32, the result rounded once.
template <typename S>
__global__ void binaryFloatKernel(BinaryOp op, const S* a, const S* b, S* o, Walk w, bool relu) {
  for (int64_t i = globalIndex(); i < w.numel; i += globalStride()) {
    const WalkOffsets<2> in = walkOffsets<2>(w, 1, i);
    float v = binaryValue(op, toFloat(a[in.at[0]]), toFloat(b[in.at[1]]));
    // A fused Relu: rounding is monotonic and keeps zero, so relu-then-round is
    // what round, widen, relu, round gives unfused.
    if (relu && v < 0.0f) v = 0.0f;
    o[i] = fromFloat<S>(v);
  }
}

// Integers and bools compare their bits; floats their values (-0 == 0, NaN != NaN).
template <typename T>
__device__ inline bool compareValues(BinaryOp op, T a, T b) {
  return op == BinaryOp::Less ? a < b : op == BinaryOp::Greater ? a > b : a == b;
}

// Equal, Less, Greater; 16-bit floats compared as f32 (exactly).
template <typename T>
__global__ void compareKernel(BinaryOp op, const T* a, const T* b, bool* o, Walk w) {
  for (int64_t i = globalIndex(); i < w.numel; i += globalStride()) {
    const WalkOffsets<2> in = walkOffsets<2>(w, 1, i);
    if constexpr (std::is_integral_v<T>)
      o[i] = compareValues(op, a[in.at[0]], b[in.at[1]]);
    else
      o[i] = compareValues(op, toFloat(a[in.at[0]]), toFloat(b[in.at[1]]));
  }
}

template <typename E>
__global__ void whereKernel(const bool* c, const E* x, const E* y, E* o, Walk w) {
  for (int64_t i = globalIndex(); i < w.numel; i += globalStride()) {
    const WalkOffsets<3> in = walkOffsets<3>(w, 0, i);
    o[i] = c[in.at[0]] ? x[in.at[1]] : y[in.at[2]];
  }
}

template <typename E>
__global__ void stridedCopyKernel(const E* in, E* out, Walk w) {
  for (int64_t i = globalIndex(); i < w.numel; i += globalStride()) {
    const WalkOffsets<2> at = walkOffsets<2>(w, 0, i);
    out[at.at[0]] = in[at.at[1]];
  }
}

template <typename E>
__global__ void fillKernel(E v, E* y, int64_t n) {
  for (int64_t i = globalIndex(); i < n; i += globalStride()) y[i] = v;
}

// Cast through double (exact for every source but i64 beyond 2^53, which the CPU
// kernel converts directly; plans do not cast such values).
__device__ inline double loadAs(DType t, const void* p, int64_t i) {
  switch (t) {
    case DType::F32:
      return static_cast<const float*>(p)[i];
    case DType::F16:
      return __half2float(static_cast<const __half*>(p)[i]);
    case DType::BF16:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case DType::F64:
      return static_cast<const double*>(p)[i];
    case DType::I64:
      return static_cast<double>(static_cast<const int64_t*>(p)[i]);
    case DType::I32:
      return static_cast<const int32_t*>(p)[i];
    case DType::I8:
      return static_cast<const int8_t*>(p)[i];
    case DType::U8:
      return static_cast<const uint8_t*>(p)[i];
    case DType::Bool:
      return static_cast<const bool*>(p)[i] ? 1.0 : 0.0;
  }
  return 0.0;
}

// Saturating truncation toward zero, NaN -> 0, then wrapping into narrow types.
__device__ inline int64_t toInt(double v) {
  if (!(v == v)) return 0;
  if (v <= -9223372036854775808.0) return INT64_MIN;
  if (v >= 9223372036854775808.0) return INT64_MAX;
  return static_cast<int64_t>(v);
}

__device__ inline void storeAs(DType t, void* p, int64_t i, double v) {
  switch (t) {
    case DType::F32:
      static_cast<float*>(p)[i] = static_cast<float>(v);
      return;
    case DType::F16:
      static_cast<__half*>(p)[i] = __float2half_rn(static_cast<float>(v));
      return;
    case DType::BF16:
      static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(static_cast<float>(v));
      return;
    case DType::F64:
      static_cast<double*>(p)[i] = v;
      return;
    case DType::I64:
      static_cast<int64_t*>(p)[i] = toInt(v);
      return;
    case DType::I32:
      static_cast<int32_t*>(p)[i] = static_cast<int32_t>(toInt(v));
      return;
    case DType::I8:
      static_cast<int8_t*>(p)[i] = static_cast<int8_t>(toInt(v));
      return;
    case DType::U8:
      static_cast<uint8_t*>(p)[i] = static_cast<uint8_t>(toInt(v));
      return;
    case DType::Bool:
      static_cast<bool*>(p)[i] = v != 0.0;
      return;
  }
}

// Four values of T in one access (a cast's two sides differ in size, so packs
// count elements, not bytes).
template <typename T>
struct alignas(4 * sizeof(T)) Quad {
  T v[4];
};

// The casts of mixed-precision plans (between f32, f16 and bf16): through f32, one
// rounding to nearest-even; no per-element dtype switch. kPacked: x and y aligned
// for Quad access, four elements a thread per step.
template <bool kPacked, typename S, typename D>
__global__ void convertFloatKernel(const S* x, D* y, int64_t n) {
  int64_t begin = 0;
  if constexpr (kPacked) {
    const int64_t quads = n / 4;
    for (int64_t q = globalIndex(); q < quads; q += globalStride()) {
      const Quad<S> in = reinterpret_cast<const Quad<S>*>(x)[q];
      Quad<D> out;
#pragma unroll
      for (int k = 0; k < 4; ++k) out.v[k] = fromFloat<D>(toFloat(in.v[k]));
      reinterpret_cast<Quad<D>*>(y)[q] = out;
    }
    begin = quads * 4;
  }
  for (int64_t i = begin + globalIndex(); i < n; i += globalStride())
    y[i] = fromFloat<D>(toFloat(x[i]));
}

__global__ void castKernel(DType from, DType to, const void* x, void* y, int64_t n) {
  for (int64_t i = globalIndex(); i < n; i += globalStride()) {
    if (from == DType::I64 && to == DType::I32)  // exact for all values, no detour via double
      static_cast<int32_t*>(y)[i] = static_cast<int32_t>(static_cast<const int64_t*>(x)[i]);
    else
      storeAs(to, y, i, loadAs(from, x, i));
  }
}

__global__ void dropoutKernel(const float* x, float* y, bool* mask, int64_t n, uint64_t key,
                              const uint64_t* key_on_device, uint64_t threshold, float scale) {
  if (key_on_device) key = *key_on_device;
  for (int64_t i = globalIndex(); i < n; i += globalStride()) {
    bool keep = dropoutKeep(key, static_cast<uint64_t>(i), threshold);
    y[i] = keep ? x[i] * scale : 0.0f;
    if (mask) mask[i] = keep;
  }
}

// One thread: the micro-step counts the runs since the step feed last changed.
__global__ void dropoutKeyKernel(DropoutStream stream, const int64_t* step, int64_t* state,
                                 uint64_t* key) {
  stream.step = *step;
  stream.micro_step = stream.step == state[0] ? state[1] + 1 : 0;
  state[0] = stream.step;
  state[1] = stream.micro_step;
  *key = ::ds::dropoutKey(stream);
}

template <typename W>
__device__ inline void copyWords(int64_t from, int64_t to, int64_t bytes) {
  const auto* src = reinterpret_cast<const W*>(from);
  auto* dst = reinterpret_cast<W*>(to);
  for (int64_t i = threadIdx.x; i < bytes / static_cast<int64_t>(sizeof(W)); i += blockDim.x)
    dst[i] = src[i];
}

// Block k copies range k of the table, by the widest words its addresses and
// length allow (16-bit parts of odd length leave the ranges after them 2-aligned).
__global__ void copyBatchKernel(const int64_t* table) {
  const int64_t* range = table + 3 * static_cast<int64_t>(blockIdx.x);
  const int64_t bytes = range[2], alignment = range[0] | range[1] | bytes;
  if ((alignment & 15) == 0) {
    copyWords<uint4>(range[0], range[1], bytes);
  } else if ((alignment & 3) == 0) {
    copyWords<uint32_t>(range[0], range[1], bytes);
  } else if ((alignment & 1) == 0) {
    copyWords<uint16_t>(range[0], range[1], bytes);
  } else {
    copyWords<uint8_t>(range[0], range[1], bytes);
  }
}

__global__ void dropoutRunKeyKernel(uint64_t seed, uint64_t* runs, uint64_t* key) {
  *key = mix64(seed + 0x9e3779b97f4a7c15ull * ++*runs);
}

template <typename E>
__global__ void triluKernel(const E* in, E* out, int64_t total, int64_t rows, int64_t cols,
                            int64_t k, bool upper) {
  for (int64_t i = globalIndex(); i < total; i += globalStride()) {
    int64_t c = i % cols, r = i / cols % rows;
    bool keep = upper ? c >= r + k : c <= r + k;
    out[i] = keep ? in[i] : E(0);
  }
}

template <typename T>
__global__ void rangeKernel(const T* start, const T* delta, T* y, int64_t n) {
  for (int64_t i = globalIndex(); i < n; i += globalStride()) {
    if constexpr (std::is_floating_point_v<T>)
      y[i] = *start + static_cast<T>(i) * *delta;
    else
      y[i] = static_cast<T>(static_cast<int64_t>(*start) + i * static_cast<int64_t>(*delta));
  }
}

// Calls f(E{}) with the unsigned type of `size` bytes.
template <typename F>
void bySize(size_t size, F&& f) {
  switch (size) {
    case 1:
      return f(uint8_t{});
    case 2:
      return f(uint16_t{});
    case 4:
      return f(uint32_t{});
    default:
      return f(uint64_t{});
  }
}

bool isFloat32Or16(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16;
}

}  // namespace

void unary(UnaryOp op, DType t, const void* x, void* y, int64_t n, float alpha, float beta,
           cudaStream_t s) {
  if (n == 0) return;
  if (isFloat32Or16(t))
    byFloatType(t, [&](auto tag) {
      using S = decltype(tag);
      const S* xs = static_cast<const S*>(x);
      S* ys = static_cast<S*>(y);
      const unsigned grid = contiguousGrid<S>(n, packable({x, y}));
      if (packable({x, y}))
        unaryFloatKernel<true><<<grid, kThreads, 0, s>>>(op, xs, ys, n, alpha, beta);
      else
        unaryFloatKernel<false><<<grid, kThreads, 0, s>>>(op, xs, ys, n, alpha, beta);
    });
  else if (t == DType::I64)
    negIntKernel<<<gridFor(n), kThreads, 0, s>>>(static_cast<const int64_t*>(x),
                                                 static_cast<int64_t*>(y), n);
  else
    negIntKernel<<<gridFor(n), kThreads, 0, s>>>(static_cast<const int32_t*>(x),
                                                 static_cast<int32_t*>(y), n);
}

namespace {

// An element-wise gradient dx = f(dy, x) over n contiguous elements of float type t:
// launch(packed, dy, x, dx, grid), packed a std::bool_constant (every pointer
// 16-byte aligned: the packed kernel), the pointers typed.
template <typename Launch>
void elementwiseGrad(DType t, const void* dy, const void* x, void* dx, int64_t n, Launch launch) {
  if (n == 0) return;
  const bool packed = packable({dy, x, dx});
  byFloatType(t, [&](auto tag) {
    using S = decltype(tag);
    auto typed = [&](auto p) {
      launch(p, static_cast<const S*>(dy), static_cast<const S*>(x), static_cast<S*>(dx),
             contiguousGrid<S>(n, packed));
    };
    packed ? typed(std::true_type{}) : typed(std::false_type{});
  });
}

}  // namespace

void reluGrad(DType t, const void* dy, const void* y, void* dx, int64_t n, cudaStream_t s) {
  elementwiseGrad(t, dy, y, dx, n, [&](auto packed, auto dys, auto ys, auto dxs, unsigned grid) {
    reluGradKernel<decltype(packed)::value><<<grid, kThreads, 0, s>>>(dys, ys, dxs, n);
  });
}

void clipGrad(DType t, const void* dy, const void* x, void* dx, int64_t n, float lo, float hi,
              cudaStream_t s) {
  elementwiseGrad(t, dy, x, dx, n, [&](auto packed, auto dys, auto xs, auto dxs, unsigned grid) {
    clipGradKernel<decltype(packed)::value><<<grid, kThreads, 0, s>>>(dys, xs, dxs, n, lo, hi);
  });
}

void leakyReluGrad(DType t, const void* dy, const void* x, void* dx, int64_t n, float alpha,
                   cudaStream_t s) {
  elementwiseGrad(t, dy, x, dx, n, [&](auto packed, auto dys, auto xs, auto dxs, unsigned grid) {
    leakyReluGradKernel<decltype(packed)::value><<<grid, kThreads, 0, s>>>(dys, xs, dxs, n, alpha);
  });
}

void geluGrad(DType t, const void* dy, const void* x, void* dx, int64_t n, bool tanh,
              cudaStream_t s) {
  elementwiseGrad(t, dy, x, dx, n, [&](auto packed, auto dys, auto xs, auto dxs, unsigned grid) {
    geluGradKernel<decltype(packed)::value><<<grid, kThreads, 0, s>>>(dys, xs, dxs, n, tanh);
  });
}

void clipInt(DType t, const void* x, void* y, int64_t n, double lo, double hi, cudaStream_t s) {
  if (n == 0) return;
  auto launch = [&](auto tag) {
    using T = decltype(tag);
    clipIntKernel<<<gridFor(n), kThreads, 0, s>>>(static_cast<const T*>(x), static_cast<T*>(y), n,
                                                  intBound<T>(lo), intBound<T>(hi));
  };
  t == DType::I64 ? launch(int64_t{}) : launch(int32_t{});
}

void logicalNot(const bool* x, bool* y, int64_t n, cudaStream_t s) {
  if (n > 0) notKernel<<<gridFor(n), kThreads, 0, s>>>(x, y, n);
}

void binary(BinaryOp op, DType t, const void* a, const void* b, void* o, const Walk& w,
            cudaStream_t s, bool relu, const void* relu_grad_mask) {
  if (w.numel == 0) return;
  const unsigned grid = gridFor(w.numel);
  auto launch = [&](auto tag) {
    using T = decltype(tag);
    const T* at = static_cast<const T*>(a);
    const T* bt = static_cast<const T*>(b);
    if (isComparison(op))
      compareKernel<<<grid, kThreads, 0, s>>>(op, at, bt, static_cast<bool*>(o), w);
    else
      binaryKernel<<<grid, kThreads, 0, s>>>(op, at, bt, static_cast<T*>(o), w);
  };
  if (isFloat32Or16(t))
    return byFloatType(t, [&](auto tag) {
      using S = decltype(tag);
      const S* as = static_cast<const S*>(a);
      const S* bs = static_cast<const S*>(b);
      const bool contiguous =
          w.rank == 1 && w.strides[0][0] == 1 && w.strides[1][0] == 1 && w.strides[2][0] == 1;
      if (isComparison(op)) {
        compareKernel<<<grid, kThreads, 0, s>>>(op, as, bs, static_cast<bool*>(o), w);
      } else if (contiguous) {
        const S *ac = as + w.base[1], *bc = bs + w.base[2];
        S* oc = static_cast<S*>(o) + w.base[0];
        const S* mask = static_cast<const S*>(relu_grad_mask);
        const bool packed = packable({ac, bc, oc, mask});
        const unsigned cgrid = contiguousGrid<S>(w.numel, packed);
        if (packed)
          binaryContiguousKernel<true>
              <<<cgrid, kThreads, 0, s>>>(op, ac, bc, oc, w.numel, relu, mask);
        else
          binaryContiguousKernel<false>
              <<<cgrid, kThreads, 0, s>>>(op, ac, bc, oc, w.numel, relu, mask);
      } else {
        if (relu_grad_mask) throw std::logic_error("binary: a ReluGrad epilogue needs contiguity");
        binaryFloatKernel<<<grid, kThreads, 0, s>>>(op, as, bs, static_cast<S*>(o), w, relu);
      }
    });
  switch (t) {
    case DType::I64:
      return launch(int64_t{});
    case DType::I32:
      return launch(int32_t{});
    default:  // bool, Equal only
      compareKernel<<<gridFor(w.numel), kThreads, 0, s>>>(op, static_cast<const uint8_t*>(a),
                                                          static_cast<const uint8_t*>(b),
                                                          static_cast<bool*>(o), w);
  }
}

void where(size_t elem_size, const bool* c, const void* x, const void* y, void* o, const Walk& w,
           cudaStream_t s) {
  if (w.numel == 0) return;
  bySize(elem_size, [&](auto tag) {
    using E = decltype(tag);
    whereKernel<<<gridFor(w.numel), kThreads, 0, s>>>(
        c, static_cast<const E*>(x), static_cast<const E*>(y), static_cast<E*>(o), w);
  });
}

void cast(DType from, DType to, const void* x, void* y, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  if (!isFloat32Or16(from) || !isFloat32Or16(to) || from == to) {
    castKernel<<<gridFor(n), kThreads, 0, s>>>(from, to, x, y, n);
    return;
  }
  byFloatType(from, [&](auto from_tag) {
    byFloatType(to, [&](auto to_tag) {
      using S = decltype(from_tag);
      using D = decltype(to_tag);
      if constexpr (!std::is_same_v<S, D>) {  // equal dtypes took the general kernel
        const S* xs = static_cast<const S*>(x);
        D* ys = static_cast<D*>(y);
        const bool packed = reinterpret_cast<uintptr_t>(x) % sizeof(Quad<S>) == 0 &&
                            reinterpret_cast<uintptr_t>(y) % sizeof(Quad<D>) == 0;
        if (packed)
          convertFloatKernel<true>
              <<<gridFor(std::max<int64_t>(n / 4, 1)), kThreads, 0, s>>>(xs, ys, n);
        else
          convertFloatKernel<false><<<gridFor(n), kThreads, 0, s>>>(xs, ys, n);
      }
    });
  });
}

void dropout(const float* x, float* y, bool* mask, int64_t n, uint64_t key,
             const uint64_t* key_on_device, uint64_t threshold, float scale, cudaStream_t s) {
  if (n > 0)
    dropoutKernel<<<gridFor(n), kThreads, 0, s>>>(x, y, mask, n, key, key_on_device, threshold,
                                                  scale);
}

void dropoutKey(const DropoutStream& stream, const int64_t* step, int64_t* state, uint64_t* key,
                cudaStream_t s) {
  dropoutKeyKernel<<<1, 1, 0, s>>>(stream, step, state, key);
}

void dropoutRunKey(uint64_t seed, uint64_t* runs, uint64_t* key, cudaStream_t s) {
  dropoutRunKeyKernel<<<1, 1, 0, s>>>(seed, runs, key);
}

void copyBatch(const int64_t* table, int64_t count, cudaStream_t s) {
  if (count > 0) copyBatchKernel<<<static_cast<unsigned>(count), kThreads, 0, s>>>(table);
}

void fillBits(size_t elem_size, uint64_t bits, void* y, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  bySize(elem_size, [&](auto tag) {
    using E = decltype(tag);
    fillKernel<<<gridFor(n), kThreads, 0, s>>>(static_cast<E>(bits), static_cast<E*>(y), n);
  });
}

void stridedCopy(size_t elem_size, const void* in, void* out, const Walk& w, cudaStream_t s) {
  if (w.numel == 0) return;
  bySize(elem_size, [&](auto tag) {
    using E = decltype(tag);
    stridedCopyKernel<<<gridFor(w.numel), kThreads, 0, s>>>(static_cast<const E*>(in),
                                                            static_cast<E*>(out), w);
  });
}

void trilu(size_t elem_size, const void* in, void* out, int64_t matrices, int64_t rows,
           int64_t cols, int64_t k, bool upper, cudaStream_t s) {
  int64_t total = matrices * rows * cols;
  if (total == 0) return;
  bySize(elem_size, [&](auto tag) {
    using E = decltype(tag);
    triluKernel<<<gridFor(total), kThreads, 0, s>>>(static_cast<const E*>(in), static_cast<E*>(out),
                                                    total, rows, cols, k, upper);
  });
}

void range(DType t, const void* start, const void* delta, void* y, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  auto launch = [&](auto tag) {
    using T = decltype(tag);
    rangeKernel<<<gridFor(n), kThreads, 0, s>>>(
        static_cast<const T*>(start), static_cast<const T*>(delta), static_cast<T*>(y), n);
  };
  if (t == DType::F32) return launch(float{});
  if (t == DType::I64) return launch(int64_t{});
  launch(int32_t{});
}

}  // namespace ds::cuda
