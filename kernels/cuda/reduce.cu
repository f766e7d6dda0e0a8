// Reduction-shaped device kernels (see launch.h): ReduceSum/Mean, (Log)Softmax,
// BatchNormalization and LayerNormalization forward and backward, and softmax
// cross-entropy with its gradient. Statistics accumulate in double with a fixed
// summation order (block-wide tree sums), so results are deterministic and match
// the CPU oracle, which also accumulates in double, to f32 rounding. Sums, softmax
// and the normalisations' data tensors are templated on the storage type S (f32,
// f16, bf16): 16-bit values are widened, the math is the f32 kernel's, and each
// output is rounded from its f32 value once, exactly as the promoted f32 kernel
// would round it (normalisation parameters and statistics stay f32). Exponentials
// are f32 (expf; sums of them in double): in double, GPT-2's 8192 x 50257 scores
// would make the loss FP64-bound.
#include <algorithm>
#include <type_traits>

#include "kernels/cuda/device_util.h"

namespace ds::cuda {
namespace {

// Threads for one block per row: wide blocks when there are few rows to share the GPU.
inline int rowThreads(int64_t rows) {
  return rows < 128 ? 1024 : 256;
}

// Threads for a row of `inner` elements (LayerNorm, softmax, row sums): about 16
// elements each (a warp for 512 or fewer), so the block-wide sums of many short
// rows (GPT's 8192 rows of 768, a 7x7 pool's planes) cost a warp's shuffles rather
// than eight warps' barriers; wide blocks still for few rows.
inline int normRowThreads(int64_t rows, int64_t inner) {
  if (rows < 128) return rowThreads(rows);
  const int64_t warps = std::clamp<int64_t>((inner + 511) / 512, 1, 8);
  return static_cast<int>(warps * 32);
}

inline unsigned rowsGrid(int64_t rows) {
  return static_cast<unsigned>(rows);
}

// The f32 result of a sum rounded to the storage type (16 bits: once more, as
// the promoted f32 kernel's output would be).
template <typename S>
__device__ inline S sumOut(double acc, double scale) {
  return fromFloat<S>(static_cast<float>(acc * scale));
}

// One element's share of a sum: itself, or its square (ReduceSumSquare), in double.
template <bool kSquare, typename S>
__device__ inline double term(S v) {
  const double d = toFloat(v);
  return kSquare ? d * d : d;
}

template <bool kSquare, typename S, typename Y>
__global__ void reduceRowsKernel(const S* x, Y* y, int64_t reduced, double scale) {
  __shared__ double shared[32];
  const S* row = x + static_cast<int64_t>(blockIdx.x) * reduced;
  double acc = 0.0;
  for (int64_t r = threadIdx.x; r < reduced; r += blockDim.x) acc += term<kSquare>(row[r]);
  acc = blockSum(acc, shared);
  if (threadIdx.x == 0) y[blockIdx.x] = sumOut<Y>(acc, scale);
}

// Block (o, p) sums part p of row o (parts of `chunk` elements) into partial[o * parts + p].
template <bool kSquare, typename S>
__global__ void reducePartsKernel(const S* x, double* partial, int64_t reduced, int64_t chunk) {
  __shared__ double shared[32];
  const int64_t o = blockIdx.y, p = blockIdx.x;
  const S* row = x + o * reduced;
  const int64_t end = min(reduced, (p + 1) * chunk);
  double acc = 0.0;
  for (int64_t r = p * chunk + threadIdx.x; r < end; r += blockDim.x) acc += term<kSquare>(row[r]);
  acc = blockSum(acc, shared);
  if (threadIdx.x == 0) partial[o * gridDim.x + p] = acc;
}

template <typename Y>
__global__ void reducePartialsKernel(const double* partial, Y* y, int64_t outer, int64_t parts,
                                     double scale) {
  for (int64_t o = globalIndex(); o < outer; o += globalStride()) {
    double acc = 0.0;
    for (int64_t p = 0; p < parts; ++p) acc += partial[o * parts + p];
    y[o] = sumOut<Y>(acc, scale);
  }
}

// Block (tile, p, o), threads (32, 8): columns [32 tile, 32 tile + 32) of slice o
// summed over rows [p chunk, (p + 1) chunk) into partial[(o * parts + p) * inner + i];
// reads of a warp are consecutive columns (coalesced), rows added in a fixed order.
template <bool kSquare, typename S>
__global__ void reduceColumnPartsKernel(const S* x, double* partial, int64_t reduced, int64_t inner,
                                        int64_t chunk) {
  __shared__ double shared[8][33];
  const int64_t i = blockIdx.x * 32 + threadIdx.x, p = blockIdx.y, o = blockIdx.z;
  const int64_t end = min(reduced, (p + 1) * chunk);
  double acc = 0.0;
  if (i < inner)
    for (int64_t r = p * chunk + threadIdx.y; r < end; r += 8)
      acc += term<kSquare>(x[(o * reduced + r) * inner + i]);
  shared[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y != 0 || i >= inner) return;
  double t = 0.0;
  for (int k = 0; k < 8; ++k) t += shared[k][threadIdx.x];
  partial[(o * gridDim.y + p) * inner + i] = t;
}

template <typename Y>
__global__ void reduceColumnPartialsKernel(const double* partial, Y* y, int64_t outer,
                                           int64_t parts, int64_t inner, double scale) {
  for (int64_t t = globalIndex(); t < outer * inner; t += globalStride()) {
    const int64_t o = t / inner, i = t - o * inner;
    double acc = 0.0;
    for (int64_t p = 0; p < parts; ++p) acc += partial[(o * parts + p) * inner + i];
    y[t] = sumOut<Y>(acc, scale);
  }
}

template <bool kSquare, typename S, typename Y>
__global__ void reduceColumnsKernel(const S* x, Y* y, int64_t outer, int64_t reduced, int64_t inner,
                                    double scale) {
  for (int64_t t = globalIndex(); t < outer * inner; t += globalStride()) {
    int64_t o = t / inner, i = t - o * inner;
    const S* col = x + o * reduced * inner + i;
    double acc = 0.0;
    for (int64_t r = 0; r < reduced; ++r) acc += term<kSquare>(col[r * inner]);
    y[t] = sumOut<Y>(acc, scale);
  }
}

template <bool kSquare, typename S, typename Y>
__global__ void reduceTableKernel(const S* x, Y* y, const int64_t* base, int64_t outputs,
                                  const int64_t* offsets, int64_t reduced, double scale) {
  for (int64_t o = globalIndex(); o < outputs; o += globalStride()) {
    double acc = 0.0;
    for (int64_t r = 0; r < reduced; ++r) acc += term<kSquare>(x[base[o] + offsets[r]]);
    y[o] = sumOut<Y>(acc, scale);
  }
}

// The same with a block per output, for long reductions: the offsets run in the
// input's order, so a warp's reads are contiguous within each run of the fastest
// reduced dim (a conv bias gradient's H·W planes).
template <bool kSquare, typename S, typename Y>
__global__ void reduceTableRowsKernel(const S* x, Y* y, const int64_t* base, const int64_t* offsets,
                                      int64_t reduced, double scale) {
  __shared__ double shared[32];
  const S* from = x + base[blockIdx.x];
  double acc = 0.0;
  for (int64_t r = threadIdx.x; r < reduced; r += blockDim.x)
    acc += term<kSquare>(from[offsets[r]]);
  acc = blockSum(acc, shared);
  if (threadIdx.x == 0) y[blockIdx.x] = sumOut<Y>(acc, scale);
}

// SoftmaxGrad: dX = Y·(dY − Σ dY·Y) along the axis, the dot in double and each
// output rounded once from its f32 value. Rows: one block per row (inner 1).
template <typename S>
__global__ void softmaxGradRowsKernel(const S* dy, const S* y, S* dx, int64_t n) {
  __shared__ double shared[32];
  const int64_t off = static_cast<int64_t>(blockIdx.x) * n;
  double dot = 0.0;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
    dot += static_cast<double>(toFloat(dy[off + j])) * toFloat(y[off + j]);
  dot = blockSum(dot, shared);
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    const double v = toFloat(y[off + j]) * (toFloat(dy[off + j]) - dot);
    dx[off + j] = fromFloat<S>(static_cast<float>(v));
  }
}

// Columns: one thread per (outer, inner) line of stride inner.
template <typename S>
__global__ void softmaxGradColumnsKernel(const S* dy, const S* y, S* dx, int64_t outer, int64_t n,
                                         int64_t inner) {
  for (int64_t t = globalIndex(); t < outer * inner; t += globalStride()) {
    const int64_t off = t / inner * n * inner + t % inner;
    double dot = 0.0;
    for (int64_t a = 0; a < n; ++a)
      dot += static_cast<double>(toFloat(dy[off + a * inner])) * toFloat(y[off + a * inner]);
    for (int64_t a = 0; a < n; ++a) {
      const int64_t i = off + a * inner;
      dx[i] = fromFloat<S>(static_cast<float>(toFloat(y[i]) * (toFloat(dy[i]) - dot)));
    }
  }
}

// One block per row; with `mask` (Softmax's, mask_rows of them) row r adds mask row
// r % mask_rows to its scores, in f32 before anything else.
template <typename S>
__global__ void softmaxRowsKernel(bool log, const S* x, const S* mask, int64_t mask_rows, S* y,
                                  int64_t n) {
  __shared__ double shared[32];
  const int64_t off = static_cast<int64_t>(blockIdx.x) * n;
  const S* mrow = mask ? mask + static_cast<int64_t>(blockIdx.x) % mask_rows * n : nullptr;
  auto score = [&](int64_t j) {
    return mrow ? toFloat(x[off + j]) + toFloat(mrow[j]) : toFloat(x[off + j]);
  };
  double m = -INFINITY;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) m = fmax(m, static_cast<double>(score(j)));
  const float mf = static_cast<float>(blockMax(m, shared));
  double sum = 0.0;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) sum += expf(score(j) - mf);
  sum = blockSum(sum, shared);
  const float lse = static_cast<float>(::log(sum)), inv = static_cast<float>(1.0 / sum);
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    const float d = score(j) - mf;
    y[off + j] = fromFloat<S>(log ? d - lse : expf(d) * inv);
  }
}

template <typename S>
__global__ void softmaxColumnsKernel(bool log, const S* x, S* y, int64_t outer, int64_t n,
                                     int64_t inner) {
  for (int64_t t = globalIndex(); t < outer * inner; t += globalStride()) {
    int64_t o = t / inner, i = t - o * inner;
    const S* xc = x + o * n * inner + i;
    S* yc = y + o * n * inner + i;
    float m = -INFINITY;
    for (int64_t a = 0; a < n; ++a) m = fmaxf(m, toFloat(xc[a * inner]));
    double sum = 0.0;
    for (int64_t a = 0; a < n; ++a) sum += expf(toFloat(xc[a * inner]) - m);
    const float lse = static_cast<float>(::log(sum)), inv = static_cast<float>(1.0 / sum);
    for (int64_t a = 0; a < n; ++a) {
      const float d = toFloat(xc[a * inner]) - m;
      yc[a * inner] = fromFloat<S>(log ? d - lse : expf(d) * inv);
    }
  }
}

// ---- BatchNormalization: channels split over blocks for statistics ----
// X, Y, dY and dX are of storage type S; parameters and statistics are f32. Each
// kernel is the f32 one with loads widened by toFloat and stores rounded by
// fromFloat<S> from the f32 value the f32 kernel stores, so for S = float it is
// that kernel and for 16 bits it equals the promoted f32 kernel bit for bit.
// Statistics: block (p, c) sums part p of channel c's n * inner elements in double
// (Σx, Σx², and for the gradient Σdy, Σdy·x); one warp per channel adds the parts
// in a fixed order (deterministic), so a channel of a large image spreads over the GPU.
// I: the index type, 32 bits whenever the tensor allows (64-bit division is slow).

// Flat index of element j (of n * inner) of channel c.
template <typename I>
__device__ inline int64_t channelIndex(I c, I channels, I inner, I j) {
  const I n = j / inner;
  return (static_cast<int64_t>(n) * channels + c) * inner + (j - n * inner);
}

// The gradient a BatchNormalizationGrad reads: dY, or with `relu` (the output R of a
// Relu after the BatchNorm) ReluGrad(dY, R) = (R == 0 ? 0 : dY), applied on read.
template <typename S>
struct GradIn {
  const S* dy = nullptr;
  const S* relu = nullptr;

  __device__ S at(int64_t i) const {
    return relu && toFloat(relu[i]) == 0.0f ? fromFloat<S>(0.0f) : dy[i];
  }
  __device__ Pack<S> pack(int64_t p) const {
    Pack<S> g = loadPack(dy, p);
    if (relu) {
      const Pack<S> r = loadPack(relu, p);
#pragma unroll
      for (int k = 0; k < kPack<S>; ++k)
        if (toFloat(r.v[k]) == 0.0f) g.v[k] = fromFloat<S>(0.0f);
    }
    return g;
  }
};

// Adds one element's terms (x, and dy for the gradient) to the K sums.
template <int K, typename S>
__device__ inline void addChannelTerms(S xv, S gv, double* acc) {
  const double v = toFloat(xv);
  acc[0] += v;
  acc[1] += v * v;
  if constexpr (K == 4) {
    const double g = toFloat(gv);
    acc[2] += g;
    acc[3] += g * v;
  }
}

// Adds the pack at element i (16-byte aligned) of x and dy.
template <int K, typename S>
__device__ inline void addChannelPack(const S* x, const GradIn<S>& dy, int64_t i, double* acc) {
  const Pack<S> v = loadPack(x, i / kPack<S>);
  const Pack<S> g = K == 4 ? dy.pack(i / kPack<S>) : v;
#pragma unroll
  for (int k = 0; k < kPack<S>; ++k) addChannelTerms<K>(v.v[k], g.v[k], acc);
}

// Block (p, c)'s sums into partial[(c * parts + p) * K + k].
template <int K>
__device__ inline void writeChannelPart(double* acc, double* shared, double* partial) {
  for (int k = 0; k < K; ++k) {
    const double t = blockSum(acc[k], shared);
    if (threadIdx.x == 0)
      partial[(static_cast<int64_t>(blockIdx.y) * gridDim.x + blockIdx.x) * K + k] = t;
  }
}

// Small planes: part p is elements [p chunk, (p + 1) chunk) of channel c's n * inner,
// each thread's next element found by division. kPacked (a.inner and chunk
// multiples of kPack<S>, x and dy aligned): 16-byte packs, which never cross a plane.
template <bool kPacked, typename S, typename I, int K>
__global__ void batchNormPartsKernel(BatchNormArgs a, const S* x, GradIn<S> dy, I chunk,
                                     double* partial) {
  __shared__ double shared[32];
  const I c = blockIdx.y, p = blockIdx.x, m = static_cast<I>(a.n * a.inner);
  const I channels = static_cast<I>(a.c), inner = static_cast<I>(a.inner);
  const I end = min(m, (p + 1) * chunk);
  constexpr int kStep = kPacked ? kPack<S> : 1;
  double acc[K] = {};
  for (I j = p * chunk + threadIdx.x * kStep; j < end; j += blockDim.x * kStep) {
    const int64_t i = channelIndex<I>(c, channels, inner, j);
    if constexpr (kPacked)
      addChannelPack<K>(x, dy, i, acc);
    else
      addChannelTerms<K>(x[i], K == 4 ? dy.at(i) : x[i], acc);
  }
  writeChannelPart<K>(acc, shared, partial);
}

// Large planes: part p is images [p chunk, (p + 1) chunk) of channel c, each plane
// read contiguously, no division. kPacked as above (a.inner a multiple of kPack<S>).
template <bool kPacked, typename S, int K>
__global__ void batchNormPlanePartsKernel(BatchNormArgs a, const S* x, GradIn<S> dy, int64_t chunk,
                                          double* partial) {
  __shared__ double shared[32];
  const int64_t c = blockIdx.y, end = min(a.n, (blockIdx.x + 1) * chunk);
  constexpr int kStep = kPacked ? kPack<S> : 1;
  double acc[K] = {};
  for (int64_t n = blockIdx.x * chunk; n < end; ++n) {
    const int64_t plane = (n * a.c + c) * a.inner;
    for (int64_t k = threadIdx.x * kStep; k < a.inner; k += blockDim.x * kStep) {
      if constexpr (kPacked)
        addChannelPack<K>(x, dy, plane + k, acc);
      else
        addChannelTerms<K>(x[plane + k], K == 4 ? dy.at(plane + k) : x[plane + k], acc);
    }
  }
  writeChannelPart<K>(acc, shared, partial);
}

// Column mode (inner 1: a channels-last or 2-D X, rows of C): block (p, g) sums
// channels [32 g, 32 g + 32) over rows [p chunk, (p + 1) chunk). A warp reads 32
// adjacent channels of a row (coalesced), the block's warps interleave rows, and
// their sums are added in a fixed order in shared memory.
constexpr int kColumnWarps = 8;

template <typename S, int K>
__global__ void batchNormColumnPartsKernel(BatchNormArgs a, const S* x, GradIn<S> dy, int64_t chunk,
                                           double* partial) {
  __shared__ double shared[kColumnWarps][32][K];
  const int64_t c = static_cast<int64_t>(blockIdx.y) * 32 + threadIdx.x;
  const int64_t begin = blockIdx.x * chunk, end = min(a.n, begin + chunk);
  double acc[K] = {};
  if (c < a.c)
    for (int64_t r = begin + threadIdx.y; r < end; r += kColumnWarps) {
      const int64_t i = r * a.c + c;
      addChannelTerms<K>(x[i], K == 4 ? dy.at(i) : x[i], acc);
    }
  for (int k = 0; k < K; ++k) shared[threadIdx.y][threadIdx.x][k] = acc[k];
  __syncthreads();
  if (threadIdx.y != 0 || c >= a.c) return;
  for (int w = 1; w < kColumnWarps; ++w)
    for (int k = 0; k < K; ++k) acc[k] += shared[w][threadIdx.x][k];
  for (int k = 0; k < K; ++k) partial[(c * gridDim.x + blockIdx.x) * K + k] = acc[k];
}

// Channel c's sums over its parts, by the calling warp (column mode has hundreds
// of parts per channel): lane l adds parts l, l + 32, ... in order, then a fixed
// butterfly adds the lanes, which gives every lane the same bits (each addition's
// two operands are the same on both lanes, in either order).
template <int K>
__device__ inline void channelSums(const double* partial, int64_t c, int64_t parts, double* sums) {
  for (int k = 0; k < K; ++k) sums[k] = 0.0;
  for (int64_t p = threadIdx.x & 31; p < parts; p += 32)
    for (int k = 0; k < K; ++k) sums[k] += partial[(c * parts + p) * K + k];
  for (int k = 0; k < K; ++k)
    for (int o = 16; o > 0; o >>= 1) sums[k] += __shfl_xor_sync(0xffffffffu, sums[k], o);
}

// A warp per channel: c over the grid's warps (blockDim.x a multiple of 32); the
// lanes other than 0 only help channelSums.
__device__ inline int64_t warpIndex() {
  return globalIndex() / 32;
}
__device__ inline int64_t warpStride() {
  return globalStride() / 32;
}
__device__ inline bool leadLane() {
  return (threadIdx.x & 31) == 0;
}

// Mean and biased variance from Σx and Σx² of m elements.
__device__ inline void meanVar(const double* sums, int64_t m, double* mean, double* var) {
  *mean = sums[0] / static_cast<double>(m);
  *var = fmax(0.0, sums[1] / static_cast<double>(m) - *mean * *mean);
}

// scratch[c] = mul, scratch[C + c] = add so that Y = X * mul + add.
__global__ void batchNormTrainStatsKernel(BatchNormArgs a, const double* partial, int64_t parts,
                                          const float* scale, const float* bias,
                                          const float* in_mean, const float* in_var,
                                          float* out_mean, float* out_var, double* scratch) {
  const int64_t count = a.n * a.inner;
  for (int64_t c = warpIndex(); c < a.c; c += warpStride()) {
    double sums[2], mean, var;
    channelSums<2>(partial, c, parts, sums);
    if (!leadLane()) continue;
    meanVar(sums, count, &mean, &var);
    const double keep = a.momentum, take = 1.0 - a.momentum;
    if (out_mean) out_mean[c] = static_cast<float>(in_mean[c] * keep + mean * take);
    const double running = a.unbiased_running_var && count > 1
                               ? var * static_cast<double>(count) / static_cast<double>(count - 1)
                               : var;
    if (out_var) out_var[c] = static_cast<float>(in_var[c] * keep + running * take);
    double mul = scale[c] / sqrt(var + a.eps);
    scratch[c] = mul;
    scratch[a.c + c] = bias[c] - mean * mul;
  }
}

__global__ void batchNormInferStatsKernel(BatchNormArgs a, const float* scale, const float* bias,
                                          const float* mean, const float* var, double* scratch) {
  for (int64_t c = globalIndex(); c < a.c; c += globalStride()) {
    double mul = scale[c] / sqrt(static_cast<double>(var[c]) + a.eps);
    scratch[c] = mul;
    scratch[a.c + c] = bias[c] - mean[c] * mul;
  }
}

// Walks the channel of consecutive elements: c and the position r within the
// channel's plane for element i, then next() for i + 1 (no division per element).
template <typename I>
struct ChannelCursor {
  I c, r, inner, channels;
  __device__ ChannelCursor(I i, I inner_, I channels_) : inner(inner_), channels(channels_) {
    const I q = i / inner;
    r = i - q * inner;
    c = q % channels;
  }
  __device__ void next() {
    if (++r == inner) {
      r = 0;
      if (++c == channels) c = 0;
    }
  }
};

// With a.residual, `r` is the residual Add's other operand: the BatchNorm's output
// is rounded to S as its own step would store it, then added in f32 and rounded
// once, as the Add's kernel does (Relu commutes with rounding).
template <typename S>
__device__ inline S batchNormApply(const BatchNormArgs& a, S x, S r, int64_t c,
                                   const double* scratch) {
  float v = static_cast<float>(toFloat(x) * scratch[c] + scratch[a.c + c]);
  if (a.residual) v = toFloat(fromFloat<S>(v)) + toFloat(r);
  if (a.relu && v < 0.0f) v = 0.0f;  // fused Relu: as binaryFloatKernel's, one rounding
  return fromFloat<S>(v);
}

// out[i] = f(channel of i, x[i], dy[i]) over the [n, c, inner] tensor (dy.dy may be
// null: f then gets x[i] twice). kPacked: 16-byte packs (every pointer aligned),
// then the tail.
template <bool kPacked, typename S, typename I, typename F>
__device__ inline void mapChannels(const BatchNormArgs& a, const S* x, const GradIn<S>& dy, S* out,
                                   F f) {
  const I total = static_cast<I>(a.n * a.c * a.inner), inner = static_cast<I>(a.inner),
          channels = static_cast<I>(a.c);
  I begin = 0;
  if constexpr (kPacked) {
    const I packs = total / kPack<S>;
    for (I p = globalIndex(); p < packs; p += globalStride()) {
      ChannelCursor<I> at(p * kPack<S>, inner, channels);
      const Pack<S> v = loadPack(x, p), g = dy.dy ? dy.pack(p) : v;
      Pack<S> o;
#pragma unroll
      for (int k = 0; k < kPack<S>; ++k, at.next()) o.v[k] = f(at.c, v.v[k], g.v[k]);
      storePack(out, p, o);
    }
    begin = packs * kPack<S>;
  }
  for (I i = begin + globalIndex(); i < total; i += globalStride())
    out[i] = f(i / inner % channels, x[i], dy.dy ? dy.at(i) : x[i]);
}

template <bool kPacked, typename S, typename I>
__global__ void batchNormApplyKernel(BatchNormArgs a, const S* x, const S* residual, S* y,
                                     const double* scratch) {
  // The residual rides in mapChannels' second stream (absent: x again, unused).
  mapChannels<kPacked, S, I>(a, x, GradIn<S>{residual}, y, [&](int64_t c, S v, S r) {
    return batchNormApply(a, v, r, c, scratch);
  });
}

// Per channel: dScale, dBias and scratch = mean, inv_std, mean(dY), mean(dY·x̂).
__global__ void batchNormGradStatsKernel(BatchNormArgs a, const double* partial, int64_t parts,
                                         float* dscale, float* dbias, double* scratch) {
  const int64_t m = a.n * a.inner;
  for (int64_t c = warpIndex(); c < a.c; c += warpStride()) {
    double sums[4], mean, var;
    channelSums<4>(partial, c, parts, sums);
    if (!leadLane()) continue;
    meanVar(sums, m, &mean, &var);
    const double inv = 1.0 / sqrt(var + a.eps);
    const double sb = sums[2], ss = m > 0 ? (sums[3] - mean * sums[2]) * inv : 0.0;
    dscale[c] = static_cast<float>(ss);
    dbias[c] = static_cast<float>(sb);
    scratch[c] = mean;
    scratch[a.c + c] = inv;
    scratch[2 * a.c + c] = sb / static_cast<double>(m);
    scratch[3 * a.c + c] = ss / static_cast<double>(m);
  }
}

template <typename S>
__device__ inline S batchNormGradInput(const BatchNormArgs& a, S dy, S x, int64_t c,
                                       const float* scale, const double* scratch) {
  const double mean = scratch[c], inv = scratch[a.c + c];
  const double xhat = (toFloat(x) - mean) * inv;
  return fromFloat<S>(static_cast<float>(
      scale[c] * inv * (toFloat(dy) - scratch[2 * a.c + c] - xhat * scratch[3 * a.c + c])));
}

template <bool kPacked, typename S, typename I>
__global__ void batchNormGradInputKernel(BatchNormArgs a, GradIn<S> dy, const S* x,
                                         const float* scale, S* dx, const double* scratch) {
  mapChannels<kPacked, S, I>(a, x, dy, dx, [&](int64_t c, S v, S g) {
    return batchNormGradInput(a, g, v, c, scale, scratch);
  });
}

// ---- LayerNormalization: one block per row ----
// Storage as for BatchNormalization: X, Y, dY, dX of type S, the rest f32.

template <typename S>
__device__ inline void rowStats(const S* xr, int64_t inner, double eps, double* shared,
                                double* mean, double* inv) {
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < inner; i += blockDim.x) sum += toFloat(xr[i]);
  *mean = blockSum(sum, shared) / static_cast<double>(inner);
  double sq = 0.0;
  for (int64_t i = threadIdx.x; i < inner; i += blockDim.x) {
    double d = toFloat(xr[i]) - *mean;
    sq += d * d;
  }
  *inv = 1.0 / sqrt(blockSum(sq, shared) / static_cast<double>(inner) + eps);
}

template <typename S>
__global__ void layerNormKernel(const S* x, const float* scale, const float* bias, S* y,
                                float* mean_out, float* inv_out, int64_t inner, double eps) {
  __shared__ double shared[32];
  const int64_t r = blockIdx.x;
  const S* xr = x + r * inner;
  S* yr = y + r * inner;
  double mean, inv;
  rowStats(xr, inner, eps, shared, &mean, &inv);
  for (int64_t i = threadIdx.x; i < inner; i += blockDim.x) {
    double v = (toFloat(xr[i]) - mean) * inv * scale[i];
    yr[i] = fromFloat<S>(static_cast<float>(bias ? v + bias[i] : v));
  }
  if (threadIdx.x == 0 && mean_out) mean_out[r] = static_cast<float>(mean);
  if (threadIdx.x == 0 && inv_out) inv_out[r] = static_cast<float>(inv);
}

template <typename S>
__global__ void layerNormGradRowKernel(const S* dy, const S* x, const float* scale, S* dx,
                                       int64_t outer, int64_t inner, double eps, double* scratch) {
  __shared__ double shared[32];
  const int64_t r = blockIdx.x;
  const S* xr = x + r * inner;
  const S* dyr = dy + r * inner;
  double mean, inv;
  rowStats(xr, inner, eps, shared, &mean, &inv);
  double sg = 0.0, sgx = 0.0;
  for (int64_t i = threadIdx.x; i < inner; i += blockDim.x) {
    double g = static_cast<double>(toFloat(dyr[i])) * scale[i];
    sg += g;
    sgx += g * (toFloat(xr[i]) - mean) * inv;
  }
  const double mean_g = blockSum(sg, shared) / static_cast<double>(inner);
  const double mean_gx = blockSum(sgx, shared) / static_cast<double>(inner);
  for (int64_t i = threadIdx.x; i < inner; i += blockDim.x) {
    double g = static_cast<double>(toFloat(dyr[i])) * scale[i];
    dx[r * inner + i] = fromFloat<S>(
        static_cast<float>(inv * (g - mean_g - (toFloat(xr[i]) - mean) * inv * mean_gx)));
  }
  if (threadIdx.x == 0) {
    scratch[r] = mean;
    scratch[outer + r] = inv;
  }
}

// dScale and dBias summed over rows: block (tile, p), threads (32, 8), columns
// [32 tile, 32 tile + 32) over rows [p chunk, (p + 1) chunk) into
// partial[(p * 2 + {0: dScale, 1: dBias}) * inner + i], rows in a fixed order.
template <typename S>
__global__ void layerNormGradParamPartsKernel(const S* dy, const S* x, int64_t outer, int64_t inner,
                                              int64_t chunk, const double* stats, double* partial) {
  __shared__ double shared[2][8][33];
  const int64_t i = blockIdx.x * 32 + threadIdx.x, p = blockIdx.y;
  const int64_t end = min(outer, (p + 1) * chunk);
  double s = 0.0, b = 0.0;
  if (i < inner)
    for (int64_t r = p * chunk + threadIdx.y; r < end; r += 8) {
      const double g = toFloat(dy[r * inner + i]);
      s += g * (toFloat(x[r * inner + i]) - stats[r]) * stats[outer + r];
      b += g;
    }
  shared[0][threadIdx.y][threadIdx.x] = s;
  shared[1][threadIdx.y][threadIdx.x] = b;
  __syncthreads();
  if (threadIdx.y != 0 || i >= inner) return;
  s = b = 0.0;
  for (int k = 0; k < 8; ++k) {
    s += shared[0][k][threadIdx.x];
    b += shared[1][k][threadIdx.x];
  }
  partial[(p * 2) * inner + i] = s;
  partial[(p * 2 + 1) * inner + i] = b;
}

__global__ void layerNormGradParamsKernel(const double* partial, int64_t parts, int64_t inner,
                                          float* dscale, float* dbias) {
  for (int64_t i = globalIndex(); i < inner; i += globalStride()) {
    double s = 0.0, b = 0.0;
    for (int64_t p = 0; p < parts; ++p) {
      s += partial[(p * 2) * inner + i];
      b += partial[(p * 2 + 1) * inner + i];
    }
    dscale[i] = static_cast<float>(s);
    dbias[i] = static_cast<float>(b);
  }
}

// ---- Softmax cross-entropy: one block per sample ----

__device__ inline int64_t labelAt(const CrossEntropyArgs& a, const void* labels, int64_t s) {
  return a.labels32 ? static_cast<const int32_t*>(labels)[s]
                    : static_cast<const int64_t*>(labels)[s];
}

__device__ inline bool ignored(const CrossEntropyArgs& a, int64_t label) {
  return a.ignore_index != INT64_MIN && label == a.ignore_index;
}

// The loss of sample s (scores xs, strided by a.d; lse = log Σ_c exp) and its weight
// into the scratch the total adds up; per sample with reduction none.
template <typename S>
__device__ inline void writeSampleLoss(const CrossEntropyArgs& a, const S* xs, double lse,
                                       const void* labels, const float* weights, int64_t s,
                                       float* loss, double* scratch) {
  const int64_t label = labelAt(a, labels, s);
  double l = 0.0, w = 0.0;
  if (!ignored(a, label)) {
    if (label < 0 || label >= a.classes) {
      l = NAN;
    } else {
      w = weights ? static_cast<double>(weights[label]) : 1.0;
      l = -w * (toFloat(xs[label * a.d]) - lse);
    }
  }
  if (a.reduction == 0) loss[s] = static_cast<float>(l);
  scratch[s] = l;
  scratch[a.n * a.d + s] = w;
}

// log_prob of sample s over classes first, first + step, ...
template <typename S>
__device__ inline void writeLogProb(const CrossEntropyArgs& a, const S* xs, double lse, S* out,
                                    int64_t first, int64_t step) {
  for (int64_t c = first; c < a.c; c += step)
    out[c * a.d] = fromFloat<S>(static_cast<float>(toFloat(xs[c * a.d]) - lse));
}

// What dScores of a non-ignored sample s are scaled by: dLoss, the mean's divisor,
// the label's weight (NaN for a label out of range).
__device__ inline double gradScale(const CrossEntropyArgs& a, const float* dloss, int64_t label,
                                   const float* weights, int64_t s, const double* weight_sum) {
  double g = a.reduction == 0 ? dloss[s] : dloss[0];
  if (a.reduction == 2) g /= *weight_sum;
  if (label < 0 || label >= a.classes) g = NAN;
  return g * (weights && label >= 0 && label < a.classes ? weights[label] : 1.0);
}

// dScores of sample s over classes first, first + step, ... (0 for the padding
// after a.classes).
template <typename S>
__device__ inline void writeSampleGrad(const CrossEntropyArgs& a, const S* xs, double lse,
                                       double scale, int64_t label, S* dxs, int64_t first,
                                       int64_t step) {
  // p in f32 of x − lse taken in double (lse rounded to f32 first would err by
  // half its ulp, a large relative error for large logits), but the label's p − 1
  // in double: it nears 0 as the model grows confident, where f32's absolute error
  // in p would be a large relative one.
  for (int64_t c = first; c < a.c; c += step) {
    const float x = toFloat(xs[c * a.d]);
    const double d =
        c != label ? static_cast<double>(expf(static_cast<float>(static_cast<double>(x) - lse)))
                   : ::exp(static_cast<double>(x) - lse) - 1.0;
    dxs[c * a.d] = fromFloat<S>(c < a.classes ? static_cast<float>(scale * d) : 0.0f);
  }
}

// Online log-sum-exp, so that a sample's scores are read once (GPT's rows of 50304
// classes do not stay in L2 for a second pass): a running maximum m and the sum of
// exp(x - m), rescaled in double when m grows. Terms are f32 exps of x - m, as
// against the final maximum before, each within an ulp.
struct RunningLse {
  float m = -INFINITY;
  double sum = 0.0;

  __device__ void add(float x) {
    if (x > m) {
      sum *= ::exp(static_cast<double>(m) - static_cast<double>(x));  // 0 while m is -inf
      m = x;
    }
    if (x != -INFINITY) sum += expf(x - m);  // NaN and +inf: NaN, as log Σ exp is
  }
  // The sum rescaled to the maximum `to` (>= m). With m still -inf the sum is 0, or
  // NaN from a NaN score, which must reach the result.
  __device__ double sumAt(double to) const {
    return m == -INFINITY ? sum : sum * ::exp(static_cast<double>(m) - to);
  }
};

// log Σ_c exp(scores of sample s), over the block.
template <typename S>
__device__ inline double logSumExp(const CrossEntropyArgs& a, const S* xs, double* shared) {
  RunningLse lse;
  for (int64_t c = threadIdx.x; c < a.classes; c += blockDim.x) lse.add(toFloat(xs[c * a.d]));
  const double m = blockMax(static_cast<double>(lse.m), shared);
  const double sum = blockSum(lse.sumAt(m), shared);
  return m == -INFINITY ? NAN : m + ::log(sum);  // every score -inf: NaN, as on the CPU
}

template <typename S>
__global__ void crossEntropySampleKernel(CrossEntropyArgs a, const S* x, const void* labels,
                                         const float* weights, float* loss, S* log_prob,
                                         double* scratch) {
  __shared__ double shared[32];
  const int64_t s = blockIdx.x, n = s / a.d, d = s - n * a.d;
  const S* xs = x + n * a.c * a.d + d;
  const double lse = logSumExp(a, xs, shared);
  if (log_prob) writeLogProb(a, xs, lse, log_prob + n * a.c * a.d + d, threadIdx.x, blockDim.x);
  if (threadIdx.x == 0) writeSampleLoss(a, xs, lse, labels, weights, s, loss, scratch);
}

// Scores [n, c, d] with many d: block (tile, n) takes the 32 samples (n, 32 tile +
// lane), threads (32 lanes, 8 class groups), so a warp reads 32 consecutive
// scores (one block per sample would read one score per 4 d bytes apart). log Σ_c
// exp of the lane's sample; every thread of the block must call it.
template <typename S>
__device__ inline double tileLogSumExp(const CrossEntropyArgs& a, const S* xs, bool valid,
                                       double (*shared)[33]) {
  const int lane = threadIdx.x, group = threadIdx.y;
  RunningLse lse;
  if (valid)
    for (int64_t c = group; c < a.classes; c += 8) lse.add(toFloat(xs[c * a.d]));
  shared[group][lane] = lse.m;
  __syncthreads();
  double m = -INFINITY;
  for (int k = 0; k < 8; ++k) m = fmax(m, shared[k][lane]);
  __syncthreads();
  shared[group][lane] = lse.sumAt(m);
  __syncthreads();
  double sum = 0.0;
  for (int k = 0; k < 8; ++k) sum += shared[k][lane];
  return m == -INFINITY ? NAN : m + ::log(sum);  // every score -inf: NaN, as on the CPU
}

// crossEntropySampleKernel over tiles of d.
template <typename S>
__global__ void crossEntropySampleTileKernel(CrossEntropyArgs a, const S* x, const void* labels,
                                             const float* weights, float* loss, S* log_prob,
                                             double* scratch) {
  __shared__ double shared[8][33];
  const int64_t n = blockIdx.y, d = blockIdx.x * 32 + threadIdx.x;
  const S* xs = x + n * a.c * a.d + d;
  const double lse = tileLogSumExp(a, xs, d < a.d, shared);
  if (d >= a.d) return;
  if (log_prob) writeLogProb(a, xs, lse, log_prob + n * a.c * a.d + d, threadIdx.y, 8);
  if (threadIdx.y == 0) writeSampleLoss(a, xs, lse, labels, weights, n * a.d + d, loss, scratch);
}

// crossEntropyGradKernel over tiles of d.
template <typename S>
__global__ void crossEntropyGradTileKernel(CrossEntropyArgs a, const float* dloss, const S* x,
                                           const void* labels, const float* weights, S* dx,
                                           const double* weight_sum) {
  __shared__ double shared[8][33];
  const int64_t n = blockIdx.y, d = blockIdx.x * 32 + threadIdx.x;
  const S* xs = x + n * a.c * a.d + d;
  const double lse = tileLogSumExp(a, xs, d < a.d, shared);
  if (d >= a.d) return;
  S* dxs = dx + n * a.c * a.d + d;
  const int64_t s = n * a.d + d, label = labelAt(a, labels, s);
  if (ignored(a, label)) {
    for (int64_t c = threadIdx.y; c < a.c; c += 8) dxs[c * a.d] = fromFloat<S>(0.0f);
    return;
  }
  const double scale = gradScale(a, dloss, label, weights, s, weight_sum);
  writeSampleGrad(a, xs, lse, scale, label, dxs, threadIdx.y, 8);
}

__global__ void crossEntropyTotalKernel(CrossEntropyArgs a, float* loss, const double* scratch) {
  __shared__ double shared[32];
  const int64_t samples = a.n * a.d;
  double total = 0.0, weight = 0.0;
  for (int64_t s = threadIdx.x; s < samples; s += blockDim.x) {
    total += scratch[s];
    weight += scratch[samples + s];
  }
  total = blockSum(total, shared);
  weight = blockSum(weight, shared);
  if (threadIdx.x == 0) loss[0] = static_cast<float>(a.reduction == 2 ? total / weight : total);
}

__global__ void crossEntropyWeightKernel(CrossEntropyArgs a, const void* labels,
                                         const float* weights, double* weight_sum) {
  __shared__ double shared[32];
  double w = 0.0;
  for (int64_t s = threadIdx.x; s < a.n * a.d; s += blockDim.x) {
    int64_t label = labelAt(a, labels, s);
    if (ignored(a, label)) continue;
    if (label < 0 || label >= a.classes)
      w += NAN;
    else
      w += weights ? static_cast<double>(weights[label]) : 1.0;
  }
  w = blockSum(w, shared);
  if (threadIdx.x == 0) *weight_sum = w;
}

template <typename S>
__global__ void crossEntropyGradKernel(CrossEntropyArgs a, const float* dloss, const S* x,
                                       const void* labels, const float* weights, S* dx,
                                       const double* weight_sum) {
  __shared__ double shared[32];
  const int64_t s = blockIdx.x, n = s / a.d, d = s - n * a.d;
  const S* xs = x + n * a.c * a.d + d;
  S* dxs = dx + n * a.c * a.d + d;
  const int64_t label = labelAt(a, labels, s);
  if (ignored(a, label)) {
    for (int64_t c = threadIdx.x; c < a.c; c += blockDim.x) dxs[c * a.d] = fromFloat<S>(0.0f);
    return;
  }
  const double scale = gradScale(a, dloss, label, weights, s, weight_sum);
  const double lse = logSumExp(a, xs, shared);
  writeSampleGrad(a, xs, lse, scale, label, dxs, threadIdx.x, blockDim.x);
}

}  // namespace

constexpr int64_t kSplitChunk = 32768;  // elements per block when long rows are split

constexpr int64_t kColumnChunk = 64;  // rows per block when few columns are split
constexpr int64_t kMaxColumnPartials = int64_t{1} << 21;  // doubles of scratch at most

int64_t reduceSplitParts(int64_t outer, int64_t reduced, int64_t inner) {
  if (inner == 1) {
    if (outer >= 64 || reduced < 4 * kSplitChunk) return 1;
    return std::min<int64_t>(1024, (reduced + kSplitChunk - 1) / kSplitChunk);
  }
  // One thread per output is enough parallelism only for many outputs.
  const int64_t outputs = outer * inner;
  if (outputs >= 65536 || reduced < 2 * kColumnChunk) return 1;
  const int64_t parts = std::min<int64_t>(1024, (reduced + kColumnChunk - 1) / kColumnChunk);
  return std::max<int64_t>(1, std::min(parts, kMaxColumnPartials / outputs));
}

size_t reduceScratchDoubles(int64_t outer, int64_t reduced, int64_t inner) {
  const int64_t parts = reduceSplitParts(outer, reduced, inner);
  return parts > 1 ? static_cast<size_t>(outer * parts * inner) : 0;
}

namespace {

// reduceBlocks for storage type S, summing elements or (kSquare) their squares into
// Y (S, or f32 for a 16-bit S).
template <bool kSquare, typename S, typename Y>
void reduceBlocksOf(const S* xs, Y* ys, int64_t outer, int64_t reduced, int64_t inner, double scale,
                    double* scratch, cudaStream_t s) {
  const int64_t parts = reduceSplitParts(outer, reduced, inner);
  if (parts > 1 && inner > 1) {
    const int64_t chunk = (reduced + parts - 1) / parts;
    reduceColumnPartsKernel<kSquare>
        <<<dim3(static_cast<unsigned>((inner + 31) / 32), static_cast<unsigned>(parts),
                static_cast<unsigned>(outer)),
           dim3(32, 8), 0, s>>>(xs, scratch, reduced, inner, chunk);
    reduceColumnPartialsKernel<<<gridFor(outer * inner), kThreads, 0, s>>>(scratch, ys, outer,
                                                                           parts, inner, scale);
  } else if (parts > 1) {
    const int64_t chunk = (reduced + parts - 1) / parts;
    reducePartsKernel<kSquare>
        <<<dim3(static_cast<unsigned>(parts), static_cast<unsigned>(outer)), 256, 0, s>>>(
            xs, scratch, reduced, chunk);
    reducePartialsKernel<<<gridFor(outer), kThreads, 0, s>>>(scratch, ys, outer, parts, scale);
  } else if (inner == 1) {
    reduceRowsKernel<kSquare>
        <<<rowsGrid(outer), normRowThreads(outer, reduced), 0, s>>>(xs, ys, reduced, scale);
  } else {
    reduceColumnsKernel<kSquare>
        <<<gridFor(outer * inner), kThreads, 0, s>>>(xs, ys, outer, reduced, inner, scale);
  }
}

}  // namespace

// fn(xs, ys) with x of storage type t and y of t or (yt f32) f32.
template <typename F>
void withSumTypes(DType t, DType yt, const void* x, void* y, F&& fn) {
  byFloatType(t, [&](auto tag) {
    using S = decltype(tag);
    const auto* xs = static_cast<const S*>(x);
    if (yt == t)
      fn(xs, static_cast<S*>(y));
    else
      fn(xs, static_cast<float*>(y));
  });
}

void reduceBlocks(DType t, DType yt, const void* x, void* y, int64_t outer, int64_t reduced,
                  int64_t inner, double scale, double* scratch, cudaStream_t s, bool square) {
  if (outer * inner == 0) return;
  withSumTypes(t, yt, x, y, [&](const auto* xs, auto* ys) {
    if (square)
      reduceBlocksOf<true>(xs, ys, outer, reduced, inner, scale, scratch, s);
    else
      reduceBlocksOf<false>(xs, ys, outer, reduced, inner, scale, scratch, s);
  });
}

void reduceTable(DType t, DType yt, const void* x, void* y, const int64_t* base, int64_t outputs,
                 const int64_t* offsets, int64_t reduced, double scale, cudaStream_t s,
                 bool square) {
  if (outputs == 0) return;
  // A thread per output while each is short; a block per output when long.
  constexpr int64_t kLongReduction = 64;
  withSumTypes(t, yt, x, y, [&](const auto* xs, auto* ys) {
    auto launch = [&](auto square_tag) {
      constexpr bool kSquare = decltype(square_tag)::value;
      if (reduced >= kLongReduction)
        reduceTableRowsKernel<kSquare>
            <<<rowsGrid(outputs), normRowThreads(outputs, reduced), 0, s>>>(xs, ys, base, offsets,
                                                                            reduced, scale);
      else
        reduceTableKernel<kSquare>
            <<<gridFor(outputs), kThreads, 0, s>>>(xs, ys, base, outputs, offsets, reduced, scale);
    };
    if (square)
      launch(std::true_type{});
    else
      launch(std::false_type{});
  });
}

void softmax(bool log, DType t, const void* x, const void* mask, int64_t mask_rows, void* y,
             int64_t outer, int64_t n, int64_t inner, cudaStream_t s) {
  if (outer * n * inner == 0) return;
  byFloatType(t, [&](auto tag) {
    using S = decltype(tag);
    const S* xs = static_cast<const S*>(x);
    S* ys = static_cast<S*>(y);
    if (inner == 1)
      softmaxRowsKernel<<<rowsGrid(outer), normRowThreads(outer, n), 0, s>>>(
          log, xs, static_cast<const S*>(mask), mask_rows, ys, n);
    else
      softmaxColumnsKernel<<<gridFor(outer * inner), kThreads, 0, s>>>(log, xs, ys, outer, n,
                                                                       inner);
  });
}

void softmaxGrad(DType t, const void* dy, const void* y, void* dx, int64_t outer, int64_t n,
                 int64_t inner, cudaStream_t s) {
  if (outer * n * inner == 0) return;
  byFloatType(t, [&](auto tag) {
    using S = decltype(tag);
    const S *dys = static_cast<const S*>(dy), *ys = static_cast<const S*>(y);
    S* dxs = static_cast<S*>(dx);
    if (inner == 1)
      softmaxGradRowsKernel<<<rowsGrid(outer), normRowThreads(outer, n), 0, s>>>(dys, ys, dxs, n);
    else
      softmaxGradColumnsKernel<<<gridFor(outer * inner), kThreads, 0, s>>>(dys, ys, dxs, outer, n,
                                                                           inner);
  });
}

int64_t batchNormParts(const BatchNormArgs& a) {
  const int64_t m = a.n * a.inner, c = std::max<int64_t>(a.c, 1);
  if (a.inner == 1) {  // column mode: about 1024 blocks of ceil(C / 32) column groups
    const int64_t groups = (c + 31) / 32;
    return std::clamp<int64_t>(std::min((m + 255) / 256, (1024 + groups - 1) / groups), 1, 1024);
  }
  return std::clamp<int64_t>(std::min((m + 1023) / 1024, (1024 + c - 1) / c), 1, 1024);
}

size_t batchNormScratchDoubles(const BatchNormArgs& a, bool backward) {
  const int64_t k = backward ? 4 : 2;
  return static_cast<size_t>(k * a.c + k * a.c * batchNormParts(a));
}

namespace {

// Runs f(I{}) with the narrowest index type that addresses the whole tensor.
template <typename F>
void byIndexType(const BatchNormArgs& a, F&& f) {
  if (a.n * a.c * a.inner < (int64_t{1} << 31))
    f(uint32_t{});
  else
    f(int64_t{});
}

// Launches the parts kernel (K sums per part) and returns where the partials are.
template <int K, typename S, typename I>
double* launchBatchNormParts(const BatchNormArgs& a, const S* x, GradIn<S> dy, double* scratch,
                             cudaStream_t s) {
  const int64_t parts = batchNormParts(a), m = a.n * a.inner;
  double* partial = scratch + K * a.c;
  const dim3 grid(static_cast<unsigned>(parts), static_cast<unsigned>(a.c));
  const bool packed = a.inner % kPack<S> == 0 && packable({x, dy.dy, dy.relu});
  if (a.inner == 1) {
    const dim3 columns(static_cast<unsigned>(parts), static_cast<unsigned>((a.c + 31) / 32));
    batchNormColumnPartsKernel<S, K>
        <<<columns, dim3(32, kColumnWarps), 0, s>>>(a, x, dy, (a.n + parts - 1) / parts, partial);
    return partial;
  }
  // Whole planes: parts split the images (with fewer images than parts, most
  // blocks would idle, so the parts then split within planes, below).
  if (a.inner >= 128 && a.n >= parts) {
    const int64_t images = (a.n + parts - 1) / parts;
    if (packed)
      batchNormPlanePartsKernel<true, S, K><<<grid, 256, 0, s>>>(a, x, dy, images, partial);
    else
      batchNormPlanePartsKernel<false, S, K><<<grid, 256, 0, s>>>(a, x, dy, images, partial);
    return partial;
  }
  int64_t chunk = (m + parts - 1) / parts;
  if (packed) {
    chunk = (chunk + kPack<S> - 1) / kPack<S> * kPack<S>;
    batchNormPartsKernel<true, S, I, K>
        <<<grid, 256, 0, s>>>(a, x, dy, static_cast<I>(chunk), partial);
  } else {
    batchNormPartsKernel<false, S, I, K>
        <<<grid, 256, 0, s>>>(a, x, dy, static_cast<I>(chunk), partial);
  }
  return partial;
}

}  // namespace

void batchNormForward(const BatchNormArgs& a, bool training, DType t, const void* x,
                      const float* scale, const float* bias, const float* in_mean,
                      const float* in_var, const void* residual, void* y, float* out_mean,
                      float* out_var, double* scratch, cudaStream_t s) {
  if (a.n * a.c * a.inner == 0) return;
  byFloatType(t, [&](auto tag) {
    using S = decltype(tag);
    const S* xs = static_cast<const S*>(x);
    byIndexType(a, [&](auto index) {
      using I = decltype(index);
      if (training) {
        double* partial = launchBatchNormParts<2, S, I>(a, xs, GradIn<S>{}, scratch, s);
        batchNormTrainStatsKernel<<<gridFor(a.c * 32), kThreads, 0, s>>>(
            a, partial, batchNormParts(a), scale, bias, in_mean, in_var, out_mean, out_var,
            scratch);
      } else {
        batchNormInferStatsKernel<<<gridFor(a.c), kThreads, 0, s>>>(a, scale, bias, in_mean, in_var,
                                                                    scratch);
      }
      const int64_t total = a.n * a.c * a.inner;
      S* ys = static_cast<S*>(y);
      const S* rs = a.residual ? static_cast<const S*>(residual) : nullptr;
      if (packable({x, y, rs}))
        batchNormApplyKernel<true, S, I>
            <<<gridFor(std::max<int64_t>(total / kPack<S>, 1)), kThreads, 0, s>>>(a, xs, rs, ys,
                                                                                  scratch);
      else
        batchNormApplyKernel<false, S, I>
            <<<gridFor(total), kThreads, 0, s>>>(a, xs, rs, ys, scratch);
    });
  });
}

void batchNormBackward(const BatchNormArgs& a, DType t, const void* dy, const void* x,
                       const float* scale, const void* relu, void* dx, float* dscale, float* dbias,
                       double* scratch, cudaStream_t s) {
  if (a.c == 0) return;
  byFloatType(t, [&](auto tag) {
    using S = decltype(tag);
    const S* xs = static_cast<const S*>(x);
    const GradIn<S> dys{static_cast<const S*>(dy), static_cast<const S*>(relu)};
    byIndexType(a, [&](auto index) {
      using I = decltype(index);
      double* partial = launchBatchNormParts<4, S, I>(a, xs, dys, scratch, s);
      batchNormGradStatsKernel<<<gridFor(a.c * 32), kThreads, 0, s>>>(a, partial, batchNormParts(a),
                                                                      dscale, dbias, scratch);
      const int64_t total = a.n * a.c * a.inner;
      S* dxs = static_cast<S*>(dx);
      if (total > 0 && packable({dy, relu, x, dx}))
        batchNormGradInputKernel<true, S, I>
            <<<gridFor(std::max<int64_t>(total / kPack<S>, 1)), kThreads, 0, s>>>(a, dys, xs, scale,
                                                                                  dxs, scratch);
      else if (total > 0)
        batchNormGradInputKernel<false, S, I>
            <<<gridFor(total), kThreads, 0, s>>>(a, dys, xs, scale, dxs, scratch);
    });
  });
}

void layerNormForward(DType t, const void* x, const float* scale, const float* bias, void* y,
                      float* mean, float* inv_std, int64_t outer, int64_t inner, double eps,
                      cudaStream_t s) {
  if (outer * inner == 0) return;
  byFloatType(t, [&](auto tag) {
    using S = decltype(tag);
    layerNormKernel<<<rowsGrid(outer), normRowThreads(outer, inner), 0, s>>>(
        static_cast<const S*>(x), scale, bias, static_cast<S*>(y), mean, inv_std, inner, eps);
  });
}

int64_t layerNormGradParts(int64_t outer) {
  return std::clamp<int64_t>((outer + kColumnChunk - 1) / kColumnChunk, 1, 1024);
}

size_t layerNormGradScratchDoubles(int64_t outer, int64_t inner) {
  return static_cast<size_t>(2 * outer + 2 * layerNormGradParts(outer) * inner);
}

void layerNormBackward(DType t, const void* dy, const void* x, const float* scale, void* dx,
                       float* dscale, float* dbias, int64_t outer, int64_t inner, double eps,
                       double* scratch, cudaStream_t s) {
  if (inner == 0) return;
  byFloatType(t, [&](auto tag) {
    using S = decltype(tag);
    const S *dys = static_cast<const S*>(dy), *xs = static_cast<const S*>(x);
    if (outer > 0)
      layerNormGradRowKernel<<<rowsGrid(outer), normRowThreads(outer, inner), 0, s>>>(
          dys, xs, scale, static_cast<S*>(dx), outer, inner, eps, scratch);
    const int64_t parts = layerNormGradParts(outer), chunk = (outer + parts - 1) / parts;
    double* partial = scratch + 2 * outer;
    if (outer > 0)
      layerNormGradParamPartsKernel<<<dim3(static_cast<unsigned>((inner + 31) / 32),
                                           static_cast<unsigned>(parts)),
                                      dim3(32, 8), 0, s>>>(dys, xs, outer, inner, chunk, scratch,
                                                           partial);
    layerNormGradParamsKernel<<<gridFor(inner), kThreads, 0, s>>>(partial, outer > 0 ? parts : 0,
                                                                  inner, dscale, dbias);
  });
}

namespace {

// Scores with a long trailing dim d go through the tiled kernels.
bool tiledOverD(const CrossEntropyArgs& a) {
  return a.d >= 16 && a.n <= 65535;
}

dim3 tilesOverD(const CrossEntropyArgs& a) {
  return dim3(static_cast<unsigned>((a.d + 31) / 32), static_cast<unsigned>(a.n));
}

}  // namespace

void crossEntropy(const CrossEntropyArgs& a, DType t, const void* scores, const void* labels,
                  const float* weights, float* loss, void* log_prob, double* scratch,
                  cudaStream_t s) {
  const int64_t samples = a.n * a.d;
  byFloatType(t, [&](auto tag) {
    using S = decltype(tag);
    const S* x = static_cast<const S*>(scores);
    S* lp = static_cast<S*>(log_prob);
    if (samples > 0 && tiledOverD(a))
      crossEntropySampleTileKernel<S>
          <<<tilesOverD(a), dim3(32, 8), 0, s>>>(a, x, labels, weights, loss, lp, scratch);
    else if (samples > 0)
      crossEntropySampleKernel<S>
          <<<rowsGrid(samples), 128, 0, s>>>(a, x, labels, weights, loss, lp, scratch);
  });
  if (a.reduction != 0) crossEntropyTotalKernel<<<1, 1024, 0, s>>>(a, loss, scratch);
}

void crossEntropyGrad(const CrossEntropyArgs& a, DType t, const float* dloss, const void* scores,
                      const void* labels, const float* weights, void* dscores, double* scratch,
                      cudaStream_t s) {
  const int64_t samples = a.n * a.d;
  if (samples == 0 || a.c == 0) return;
  crossEntropyWeightKernel<<<1, 1024, 0, s>>>(a, labels, weights, scratch);
  byFloatType(t, [&](auto tag) {
    using S = decltype(tag);
    const S* x = static_cast<const S*>(scores);
    S* dx = static_cast<S*>(dscores);
    if (tiledOverD(a))
      crossEntropyGradTileKernel<S>
          <<<tilesOverD(a), dim3(32, 8), 0, s>>>(a, dloss, x, labels, weights, dx, scratch);
    else
      crossEntropyGradKernel<S>
          <<<rowsGrid(samples), 128, 0, s>>>(a, dloss, x, labels, weights, dx, scratch);
  });
}

}  // namespace ds::cuda
