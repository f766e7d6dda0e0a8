// CPU kernels of ReduceSum/ReduceMean/ReduceSumSquare (axes attribute, keepdims only changes the
// shape), Softmax/LogSoftmax (one axis, stabilised by subtracting the max) and
// Softmax's gradient from its output.
// Floats accumulate in double, integers in wrapping int64. The factory collapses
// the input into [outer, reduced, inner] blocks (or, for interleaved axes, offset
// tables) so run() only streams over memory.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ir/ops/shape_helpers.h"
#include "kernels/cpu/cpu_util.h"
#include "kernels/cpu/reduce_shape.h"

namespace ds::cpu {
namespace {

constexpr int64_t kTile = 64;  // inner elements handled together when the axis is not last
constexpr int64_t kSerial = std::numeric_limits<int64_t>::max();
// A row of kLongRow or more elements, among fewer than kFewRows rows, is summed in
// chunks of kRowChunk in parallel, the partial sums then added in order: the same
// order whatever the thread count (a gradient norm's one row of 42M elements).
constexpr int64_t kRowChunk = 1 << 16;
constexpr int64_t kLongRow = 4 * kRowChunk;
constexpr int64_t kFewRows = 16;

// What a reduction adds up, and whether it divides by the count.
enum class Reduction { Sum, Mean, SumSquare };

// f32 and 16-bit rows are summed in blocks of this many floats (sumFloats).
constexpr int64_t kWiden = 512;

// Σ x[i] (or Σ x[i]², `square`) in double. One function for f32 and widened 16-bit
// values alike, so both add in the same order: not inlined, so that no call site
// gets code vectorized another way.
[[gnu::noinline]] double sumFloats(const float* x, int64_t n, bool square) {
  double acc = 0;
  if (square) {
#pragma omp simd reduction(+ : acc)
    for (int64_t i = 0; i < n; ++i) acc += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  } else {
#pragma omp simd reduction(+ : acc)
    for (int64_t i = 0; i < n; ++i) acc += static_cast<double>(x[i]);
  }
  return acc;
}

void widen(const Half* x, float* y, int64_t n) {
  halvesToFloats(reinterpret_cast<const uint16_t*>(x), y, n);
}

void widen(const BF16* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = load(x[i]);
}

// Input T, output Y: T, or f32 for a 16-bit T (the reductions' `to`: the sum of the
// widened values, as promotion would compute it, without the f32 copy of the input).
template <typename T, typename Y = T>
class ReduceKernel : public CpuKernel {
  using Acc = std::conditional_t<kIsFloat<T>, double, uint64_t>;

 public:
  ReduceKernel(const KernelContext& ctx, const std::vector<bool>& reduced, Reduction kind)
      : shape_(reduceShape(ctx.input(0).shape(), reduced)),
        mean_(kind == Reduction::Mean),
        square_(kind == Reduction::SumSquare) {
    min_parallel_ = ctx.input(0).numel() > kParallelMin ? 0 : kSerial;
    if (!shape_.general && shape_.inner == 1 && shape_.reduced >= kLongRow &&
        shape_.outer < kFewRows)
      partial_.resize(static_cast<size_t>((shape_.reduced + kRowChunk - 1) / kRowChunk));
  }

  void run(const KernelContext& ctx) override {
    const T* x = ctx.input(0).as<T>();
    Y* y = ctx.output(0).as<Y>();
    const ReduceShape& s = shape_;
    if (s.general) {
      parallelChunks(
          static_cast<int64_t>(s.base.size()),
          [&](int64_t begin, int64_t end) {
            for (int64_t o = begin; o < end; ++o) {
              Acc acc = 0;
              for (int64_t off : s.offsets) acc += term(x[s.base[o] + off]);
              y[o] = finish(acc);
            }
          },
          min_parallel_);
    } else if (s.inner == 1 && !partial_.empty()) {
      for (int64_t o = 0; o < s.outer; ++o) y[o] = finish(sumLongRow(x + o * s.reduced));
    } else if (s.inner == 1) {
      parallelChunks(
          s.outer,
          [&](int64_t begin, int64_t end) {
            for (int64_t o = begin; o < end; ++o) y[o] = finish(sumRow(x + o * s.reduced));
          },
          min_parallel_);
    } else {
      const int64_t tiles = (s.inner + kTile - 1) / kTile;
      parallelChunks(
          s.outer * tiles,
          [&](int64_t begin, int64_t end) {
            for (int64_t t = begin; t < end; ++t) columns(x, y, t / tiles, (t % tiles) * kTile);
          },
          min_parallel_);
    }
  }

 private:
  Acc sumRow(const T* x) const { return sumRun(x, shape_.reduced); }

  // Σ term(x[r]) for r < n. f32 and 16-bit rows go through sumFloats in the same
  // blocks, 16-bit ones widened (exactly) first: a 16-bit sum into f32 then adds
  // the same values in the same order as Cast then the f32 sum, to the bit, and
  // the widening is F16C's, eight at a time.
  Acc sumRun(const T* x, int64_t n) const {
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, Half> || std::is_same_v<T, BF16>) {
      Acc acc = 0;
      float widened[kWiden];
      for (int64_t b = 0; b < n; b += kWiden) {
        const int64_t m = std::min(kWiden, n - b);
        if constexpr (std::is_same_v<T, float>) {
          acc += sumFloats(x + b, m, square_);
        } else {
          widen(x + b, widened, m);
          acc += sumFloats(widened, m, square_);
        }
      }
      return acc;
    } else {
      Acc acc = 0;
#pragma omp simd reduction(+ : acc)
      for (int64_t r = 0; r < n; ++r) acc += term(x[r]);
      return acc;
    }
  }

  // A long row: chunks summed in parallel into partial_, then added in order.
  Acc sumLongRow(const T* x) {
    const auto chunks = static_cast<int64_t>(partial_.size());
    parallelChunks(
        chunks,
        [&](int64_t begin, int64_t end) {
          for (int64_t c = begin; c < end; ++c) {
            const int64_t first = c * kRowChunk, n = std::min(kRowChunk, shape_.reduced - first);
            partial_[static_cast<size_t>(c)] = sumRun(x + first, n);
          }
        },
        1);
    Acc total = 0;
    for (Acc p : partial_) total += p;
    return total;
  }

  // One element's share of the sum: itself, or its square (in the accumulator's type).
  Acc term(T x) const {
    const auto v = static_cast<Acc>(load(x));
    return square_ ? v * v : v;
  }

  // Sums columns [i0, i0 + kTile) of block o of a [outer, reduced, inner] input.
  void columns(const T* x, Y* y, int64_t o, int64_t i0) const {
    const ReduceShape& s = shape_;
    const int64_t w = std::min(kTile, s.inner - i0);
    Acc acc[kTile] = {};
    for (int64_t r = 0; r < s.reduced; ++r) {
      const T* row = x + (o * s.reduced + r) * s.inner + i0;
#pragma omp simd
      for (int64_t k = 0; k < w; ++k) acc[k] += term(row[k]);
    }
    for (int64_t k = 0; k < w; ++k) y[o * s.inner + i0 + k] = finish(acc[k]);
  }

  Y finish(Acc acc) const {
    if constexpr (kIsFloat<T>) {
      double v = mean_ ? acc / static_cast<double>(shape_.reduced) : acc;
      return store<Y>(static_cast<Compute<Y>>(v));
    } else {
      auto v = static_cast<int64_t>(acc);
      if (mean_) v = shape_.reduced == 0 ? 0 : v / shape_.reduced;
      return static_cast<Y>(v);
    }
  }

  ReduceShape shape_;
  bool mean_, square_;
  int64_t min_parallel_;
  std::vector<Acc> partial_;  // a long row's chunk sums (sized at load: no allocation per run)
};

// The kernel over `reduced` axes: T's own, or (a 16-bit sum into f32) widening.
std::unique_ptr<CpuKernel> reduceKernel(const KernelContext& ctx, const std::vector<bool>& reduced,
                                        Reduction kind) {
  std::unique_ptr<CpuKernel> k;
  const DType in = ctx.input(0).dtype();
  if (ctx.output(0).dtype() == DType::F32 && (in == DType::F16 || in == DType::BF16)) {
    if (in == DType::F16) return std::make_unique<ReduceKernel<Half, float>>(ctx, reduced, kind);
    return std::make_unique<ReduceKernel<BF16, float>>(ctx, reduced, kind);
  }
  dispatchOrFail(ctx, NumericTypes{}, in, [&](auto tag) {
    k = std::make_unique<ReduceKernel<typename decltype(tag)::type>>(ctx, reduced, kind);
  });
  return k;
}

CpuKernelFactory reduce(Reduction kind) {
  return [kind](const KernelContext& ctx) -> std::unique_ptr<CpuKernel> {
    const std::vector<int64_t>& axes = ctx.ints("axes");
    const int64_t rank = ctx.input(0).rank();
    if (axes.empty() && ctx.i("noop_with_empty_axes") != 0) {
      // ONNX: no axis reduced, each element squared (or widened, with `to`).
      if (kind == Reduction::SumSquare || ctx.output(0).dtype() != ctx.input(0).dtype())
        return reduceKernel(ctx, std::vector<bool>(static_cast<size_t>(rank), false), kind);
      return statelessKernel([](const KernelContext& c) {
        copyBytes(c.output(0).data, c.input(0).data, c.output(0).bytes());
      });
    }
    std::vector<bool> reduced(static_cast<size_t>(rank), axes.empty());
    for (int64_t a : axes) {
      if (a < -rank || a >= rank) ctx.fail("axis ", a, " is out of range for rank ", rank);
      reduced[a < 0 ? a + rank : a] = true;
    }
    return reduceKernel(ctx, reduced, kind);
  };
}

template <typename C>
C expOf(C x) {
  if constexpr (std::is_same_v<C, float>) return fastExp(x);
  return std::exp(x);
}

// Input 0 viewed as [outer, n, inner] around the step's "axis" attribute.
struct AroundAxis {
  int64_t outer = 1, n = 1, inner = 1;
};

AroundAxis aroundAxis(const KernelContext& ctx) {
  const Shape& x = ctx.input(0).shape();
  int64_t rank = ctx.input(0).rank(), axis = ctx.i("axis");
  if (axis < -rank || axis >= rank) ctx.fail("axis ", axis, " is out of range for rank ", rank);
  if (axis < 0) axis += rank;
  AroundAxis g;
  for (int64_t d = 0; d < rank; ++d) (d < axis ? g.outer : d == axis ? g.n : g.inner) *= x[d];
  return g;
}

// Softmax (Log = false) or LogSoftmax over the middle dim of [outer, axis, inner];
// Softmax with a mask M (last axis only): softmax(X + M), row o adding M's row
// o % mask_rows (softmaxMaskRows).
template <typename T, bool Log>
class SoftmaxKernel : public CpuKernel {
  using C = Compute<T>;

 public:
  explicit SoftmaxKernel(const KernelContext& ctx) {
    const AroundAxis g = aroundAxis(ctx);
    outer_ = g.outer;
    n_ = g.n;
    inner_ = g.inner;
    min_parallel_ = ctx.input(0).numel() > kCostlyMin ? 0 : kSerial;
    if (ctx.hasInput(1)) {
      mask_rows_ = softmaxMaskRows(ctx.input(0).shape(), ctx.input(1).shape());
      if (mask_rows_ == 0 || inner_ != 1) ctx.fail("the mask does not fit the input");
    }
  }

  void run(const KernelContext& ctx) override {
    const T* x = ctx.input(0).as<T>();
    const T* mask = ctx.hasInput(1) ? ctx.input(1).as<T>() : nullptr;
    T* y = ctx.output(0).as<T>();
    if (n_ == 0) return;
    if (inner_ == 1) {
      parallelChunks(
          outer_,
          [&](int64_t begin, int64_t end) {
            for (int64_t o = begin; o < end; ++o)
              row(x + o * n_, mask ? mask + o % mask_rows_ * n_ : nullptr, y + o * n_);
          },
          min_parallel_);
      return;
    }
    const int64_t tiles = (inner_ + kTile - 1) / kTile;
    parallelChunks(
        outer_ * tiles,
        [&](int64_t begin, int64_t end) {
          for (int64_t t = begin; t < end; ++t) {
            int64_t o = t / tiles, i0 = (t % tiles) * kTile;
            int64_t off = o * n_ * inner_ + i0;
            columns(x + off, y + off, std::min(kTile, inner_ - i0));
          }
        },
        min_parallel_);
  }

 private:
  static constexpr int64_t kCostlyMin = 4096;

  // x + mask (computed, not stored, in C) or x itself.
  static C at(const T* x, const T* mask, int64_t j) {
    return mask ? load(x[j]) + load(mask[j]) : load(x[j]);
  }

  void row(const T* x, const T* mask, T* y) const {
    if (mask) {
      maskedRow(x, mask, y);
      return;
    }
    C m = -std::numeric_limits<C>::infinity();
#pragma omp simd reduction(max : m)
    for (int64_t j = 0; j < n_; ++j) {
      const C v = load(x[j]);
      m = v > m ? v : m;
    }
    double sum = 0;
    if constexpr (Log) {
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < n_; ++j) sum += expOf(load(x[j]) - m);
      const auto lse = static_cast<C>(std::log(sum));
#pragma omp simd
      for (int64_t j = 0; j < n_; ++j) y[j] = store<T>((load(x[j]) - m) - lse);
    } else {
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < n_; ++j) {
        C e = expOf(load(x[j]) - m);
        y[j] = store<T>(e);
        sum += e;
      }
      const auto inv = static_cast<C>(1.0 / sum);
#pragma omp simd
      for (int64_t j = 0; j < n_; ++j) y[j] = store<T>(load(y[j]) * inv);
    }
  }

  // Softmax(x + mask) of one row (never Log: LogSoftmax takes no mask).
  void maskedRow(const T* x, const T* mask, T* y) const {
    C m = -std::numeric_limits<C>::infinity();
    for (int64_t j = 0; j < n_; ++j) {
      const C v = at(x, mask, j);
      m = v > m ? v : m;
    }
    double sum = 0;
    for (int64_t j = 0; j < n_; ++j) {
      C e = expOf(at(x, mask, j) - m);
      y[j] = store<T>(e);
      sum += e;
    }
    const auto inv = static_cast<C>(1.0 / sum);
    for (int64_t j = 0; j < n_; ++j) y[j] = store<T>(load(y[j]) * inv);
  }

  // The same over `w` columns of stride inner_ at once (axis not last).
  void columns(const T* x, T* y, int64_t w) const {
    C m[kTile];
    double sum[kTile] = {};
    std::fill(m, m + w, -std::numeric_limits<C>::infinity());
    for (int64_t a = 0; a < n_; ++a) {
#pragma omp simd
      for (int64_t k = 0; k < w; ++k) {
        const C v = load(x[a * inner_ + k]);
        m[k] = v > m[k] ? v : m[k];
      }
    }
    for (int64_t a = 0; a < n_; ++a) {
#pragma omp simd
      for (int64_t k = 0; k < w; ++k) {
        C e = expOf(load(x[a * inner_ + k]) - m[k]);
        if constexpr (!Log) y[a * inner_ + k] = store<T>(e);
        sum[k] += e;
      }
    }
    C scale[kTile];
    for (int64_t k = 0; k < w; ++k)
      scale[k] = static_cast<C>(Log ? std::log(sum[k]) : 1.0 / sum[k]);
    for (int64_t a = 0; a < n_; ++a) {
#pragma omp simd
      for (int64_t k = 0; k < w; ++k) {
        int64_t i = a * inner_ + k;
        y[i] = store<T>(Log ? (load(x[i]) - m[k]) - scale[k] : load(y[i]) * scale[k]);
      }
    }
  }

  int64_t outer_ = 1, n_ = 1, inner_ = 1, min_parallel_ = kSerial, mask_rows_ = 0;
};

// SoftmaxGrad(dY, Y) over the middle dim of [outer, axis, inner]: for each line
// along the axis, dot = Σ dY·Y in double, then dX = Y·(dY − dot), each rounded once.
// dX may overwrite dY: a line is read whole before it is written.
template <typename T>
class SoftmaxGradKernel : public CpuKernel {
  using C = Compute<T>;

 public:
  explicit SoftmaxGradKernel(const KernelContext& ctx) : g_(aroundAxis(ctx)) {
    min_parallel_ = ctx.input(0).numel() > kParallelMin ? 0 : kSerial;
  }

  void run(const KernelContext& ctx) override {
    const T* dy = ctx.input(0).as<T>();
    const T* y = ctx.input(1).as<T>();
    T* dx = ctx.output(0).as<T>();
    const int64_t n = g_.n, inner = g_.inner;
    parallelChunks(
        g_.outer * inner,
        [&](int64_t begin, int64_t end) {
          for (int64_t t = begin; t < end; ++t) {
            const int64_t off = t / inner * n * inner + t % inner;
            double dot = 0.0;
            for (int64_t a = 0; a < n; ++a)
              dot += static_cast<double>(load(dy[off + a * inner])) * load(y[off + a * inner]);
            for (int64_t a = 0; a < n; ++a) {
              const int64_t i = off + a * inner;
              dx[i] = store<T>(static_cast<C>(load(y[i]) * (load(dy[i]) - dot)));
            }
          }
        },
        min_parallel_);
  }

 private:
  static constexpr int64_t kParallelMin = 4096;
  AroundAxis g_;
  int64_t min_parallel_ = kSerial;
};

std::unique_ptr<CpuKernel> softmaxGradKernel(const KernelContext& ctx) {
  std::unique_ptr<CpuKernel> k;
  dispatchOrFail(ctx, FloatTypes{}, ctx.input(0).dtype(), [&](auto tag) {
    k = std::make_unique<SoftmaxGradKernel<typename decltype(tag)::type>>(ctx);
  });
  return k;
}

template <bool Log>
std::unique_ptr<CpuKernel> softmaxKernel(const KernelContext& ctx) {
  std::unique_ptr<CpuKernel> k;
  dispatchOrFail(ctx, FloatTypes{}, ctx.input(0).dtype(), [&](auto tag) {
    k = std::make_unique<SoftmaxKernel<typename decltype(tag)::type, Log>>(ctx);
  });
  return k;
}

}  // namespace

void registerReductionKernels(CpuKernelRegistry& r) {
  r.add("ReduceSum", reduce(Reduction::Sum));
  r.add("ReduceMean", reduce(Reduction::Mean));
  r.add("ReduceSumSquare", reduce(Reduction::SumSquare));
  r.add("Softmax", softmaxKernel<false>);
  r.add("LogSoftmax", softmaxKernel<true>);
  r.add("SoftmaxGrad", softmaxGradKernel);
}

}  // namespace ds::cpu
