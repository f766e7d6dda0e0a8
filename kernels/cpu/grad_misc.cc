// CPU kernels of Exp, ReluGrad, ClipGrad, LeakyReluGrad, GeluGrad and of the data-movement backward
// ops, and the registration of every backward kernel family (registerTrainingKernels): GatherGrad
// (zeros, then dY scatter-added at the gathered rows, accumulating repeated indices in index order
// so results are deterministic) and SliceGrad (zeros, then dY written at the sliced positions
// through a strided walk prepared in the factory).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "ir/ops/shape_helpers.h"
#include "kernels/cpu/cpu_util.h"
#include "kernels/cpu/grad_util.h"
#include "kernels/cpu/layout.h"
#include "kernels/cpu/nn.h"
#include "kernels/cpu/slice_geometry.h"

namespace ds::cpu {
namespace {

constexpr int64_t kExpParallelMin = 4096;  // transcendental: threads pay off early

template <typename T>
class ExpKernel : public CpuKernel {
 public:
  void run(const KernelContext& ctx) override {
    const T* x = ctx.input(0).as<T>();
    T* y = ctx.output(0).as<T>();
    parallelChunks(
        ctx.output(0).numel(),
        [&](int64_t begin, int64_t end) {
#pragma omp simd
          for (int64_t i = begin; i < end; ++i) {
            Compute<T> v = load(x[i]);
            if constexpr (std::is_same_v<Compute<T>, float>)
              y[i] = store<T>(fastExp(v));
            else
              y[i] = store<T>(std::exp(v));
          }
        },
        kExpParallelMin);
  }
};

std::unique_ptr<CpuKernel> makeExp(const KernelContext& ctx) {
  std::unique_ptr<CpuKernel> k;
  dispatchOrFail(ctx, FloatTypes{}, ctx.input(0).dtype(), [&](auto tag) {
    k = std::make_unique<ExpKernel<typename decltype(tag)::type>>();
  });
  return k;
}

// ReluGrad(dY, Y): dX = Y == 0 ? 0 : dY, element by element (so NaN passes, as
// Equal and Where would pass it); layout-agnostic, so channels-last operands too.
template <typename T>
class ReluGradKernel : public CpuKernel {
 public:
  void run(const KernelContext& ctx) override {
    const T* dy = ctx.input(0).as<T>();
    const T* y = ctx.input(1).as<T>();
    T* dx = ctx.output(0).as<T>();
    parallelChunks(ctx.output(0).numel(), [&](int64_t begin, int64_t end) {
#pragma omp simd
      for (int64_t i = begin; i < end; ++i) dx[i] = y[i] == T(0) ? T(0) : dy[i];
    });
  }
};

std::unique_ptr<CpuKernel> makeReluGrad(const KernelContext& ctx) {
  if (requireF32OrF64(ctx, 0) == DType::F32) return std::make_unique<ReluGradKernel<float>>();
  return std::make_unique<ReluGradKernel<double>>();
}

// ClipGrad(dY, X){min, max}: dX = min < X < max ? dY : 0 (a NaN input gives 0, as
// torch.clamp's gradient does).
template <typename T>
class ClipGradKernel : public CpuKernel {
 public:
  explicit ClipGradKernel(const KernelContext& ctx)
      : lo_(static_cast<T>(ctx.f("min"))), hi_(static_cast<T>(ctx.f("max"))) {}
  void run(const KernelContext& ctx) override {
    const T* dy = ctx.input(0).as<T>();
    const T* x = ctx.input(1).as<T>();
    T* dx = ctx.output(0).as<T>();
    const T lo = lo_, hi = hi_;
    parallelChunks(ctx.output(0).numel(), [&](int64_t begin, int64_t end) {
#pragma omp simd
      for (int64_t i = begin; i < end; ++i) dx[i] = lo < x[i] && x[i] < hi ? dy[i] : T(0);
    });
  }

 private:
  T lo_, hi_;
};

std::unique_ptr<CpuKernel> makeClipGrad(const KernelContext& ctx) {
  if (requireF32OrF64(ctx, 0) == DType::F32) return std::make_unique<ClipGradKernel<float>>(ctx);
  return std::make_unique<ClipGradKernel<double>>(ctx);
}

// LeakyReluGrad(dY, X){alpha}: dX = X > 0 ? dY : alpha·dY.
template <typename T>
class LeakyReluGradKernel : public CpuKernel {
 public:
  explicit LeakyReluGradKernel(const KernelContext& ctx) : alpha_(static_cast<T>(ctx.f("alpha"))) {}
  void run(const KernelContext& ctx) override {
    const T* dy = ctx.input(0).as<T>();
    const T* x = ctx.input(1).as<T>();
    T* dx = ctx.output(0).as<T>();
    const T alpha = alpha_;
    parallelChunks(ctx.output(0).numel(), [&](int64_t begin, int64_t end) {
#pragma omp simd
      for (int64_t i = begin; i < end; ++i) dx[i] = x[i] > T(0) ? dy[i] : alpha * dy[i];
    });
  }

 private:
  T alpha_;
};

std::unique_ptr<CpuKernel> makeLeakyReluGrad(const KernelContext& ctx) {
  if (requireF32OrF64(ctx, 0) == DType::F32)
    return std::make_unique<LeakyReluGradKernel<float>>(ctx);
  return std::make_unique<LeakyReluGradKernel<double>>(ctx);
}

// GeluGrad(dY, X): dX = dY·Gelu'(X), computed per element in the operands' type
// (f32 with the vectorising approximations of kernels/cpu/cpu_util.h, as Gelu's
// forward; f64 with <cmath>):
//   erf:  Y = X·Φ(X)              ⇒ Gelu' = Φ(X) + X·φ(X), Φ = ½(1 + erf(X/√2)),
//                                           φ = exp(−X²/2)/√(2π);
//   tanh: Y = ½X(1 + tanh u), u = k(X + aX³) ⇒ Gelu' = ½(1 + tanh u)
//                                           + ½X(1 − tanh²u)·k(1 + 3aX²).
template <typename T>
class GeluGradKernel : public CpuKernel {
 public:
  explicit GeluGradKernel(bool tanh) : tanh_(tanh) {}
  void run(const KernelContext& ctx) override {
    const T* dy = ctx.input(0).as<T>();
    const T* x = ctx.input(1).as<T>();
    T* dx = ctx.output(0).as<T>();
    parallelChunks(
        ctx.output(0).numel(),
        [&](int64_t begin, int64_t end) {
          if (tanh_) {
#pragma omp simd
            for (int64_t i = begin; i < end; ++i) dx[i] = dy[i] * tanhSlope(x[i]);
          } else {
#pragma omp simd
            for (int64_t i = begin; i < end; ++i) dx[i] = dy[i] * erfSlope(x[i]);
          }
        },
        kParallelMin / 8);  // transcendental work: worth threads sooner
  }

 private:
  static T tanhSlope(T x) {
    const T k = T(0.79788456080286535588), a = T(0.044715);  // k = √(2/π)
    T t;
    if constexpr (std::is_same_v<T, float>)
      t = fastTanh(k * (x + a * x * x * x));
    else
      t = std::tanh(k * (x + a * x * x * x));
    // x² bounded: where it would overflow (|x| > 1e15 in f32) 1 − t² is 0 and the
    // term must be 0, not 0·inf.
    const T x2 = std::min(x * x, T(1e30));
    return T(0.5) * (1 + t) + T(0.5) * x * (1 - t * t) * k * (1 + 3 * a * x2);
  }
  static T erfSlope(T x) {
    const T inv_sqrt2 = T(0.70710678118654752440), inv_sqrt2pi = T(0.39894228040143267794);
    T erf, gauss;
    if constexpr (std::is_same_v<T, float>) {
      erf = fastErf(x * inv_sqrt2);
      gauss = fastExp(T(-0.5) * x * x);
    } else {
      erf = std::erf(x * inv_sqrt2);
      gauss = std::exp(T(-0.5) * x * x);
    }
    return T(0.5) * (1 + erf) + x * gauss * inv_sqrt2pi;
  }
  bool tanh_;
};

std::unique_ptr<CpuKernel> makeGeluGrad(const KernelContext& ctx) {
  const bool tanh = ctx.s("approximate") == "tanh";
  if (requireF32OrF64(ctx, 0) == DType::F32) return std::make_unique<GeluGradKernel<float>>(tanh);
  return std::make_unique<GeluGradKernel<double>>(tanh);
}

// GatherGrad: dData viewed as [outer, dim, inner], dY as [outer, count, inner].
template <typename T>
class GatherGradKernel : public CpuKernel {
 public:
  explicit GatherGradKernel(const KernelContext& ctx) {
    const Shape& data = ctx.output(0).shape();
    auto rank = static_cast<int64_t>(data.size());
    int64_t axis = ctx.i("axis");
    if (axis < -rank || axis >= rank) ctx.fail("axis ", axis, " is out of range for rank ", rank);
    if (axis < 0) axis += rank;
    for (int64_t d = 0; d < rank; ++d) (d < axis ? outer_ : d == axis ? dim_ : inner_) *= data[d];
    DType it = ctx.input(1).dtype();
    if (it != DType::I64 && it != DType::I32)
      ctx.fail("indices dtype ", dtypeName(it), " is not supported");
    index_.resize(static_cast<size_t>(ctx.input(1).numel()));
  }

  void run(const KernelContext& ctx) override {
    const TensorView& iv = ctx.input(1);
    for (size_t n = 0; n < index_.size(); ++n) {
      int64_t v = iv.dtype() == DType::I64 ? iv.as<int64_t>()[n] : iv.as<int32_t>()[n];
      if (v < -dim_ || v >= dim_) ctx.fail("index ", v, " is out of range for size ", dim_);
      index_[n] = v < 0 ? v + dim_ : v;
    }
    const T* dy = ctx.input(0).as<T>();
    T* dx = ctx.output(0).as<T>();
    const auto count = static_cast<int64_t>(index_.size());
    parallelChunks(ctx.output(0).numel(),
                   [&](int64_t b, int64_t e) { std::fill(dx + b, dx + e, T(0)); });
    // Lanes (o, j): each is owned by one thread, which adds dY rows in index order.
    int64_t work = count * inner_ * outer_;
    parallelChunks(
        outer_ * inner_,
        [&](int64_t begin, int64_t end) {
          for (int64_t lane = begin; lane < end;) {
            int64_t o = lane / inner_, j0 = lane % inner_;
            int64_t j1 = std::min(inner_, j0 + (end - lane));
            for (int64_t n = 0; n < count; ++n) {
              T* dst = dx + (o * dim_ + index_[n]) * inner_;
              const T* src = dy + (o * count + n) * inner_;
              for (int64_t j = j0; j < j1; ++j) dst[j] += src[j];
            }
            lane += j1 - j0;
          }
        },
        work > kParallelMin ? 0 : work);
  }

 private:
  int64_t outer_ = 1, dim_ = 1, inner_ = 1;
  std::vector<int64_t> index_;
};

std::unique_ptr<CpuKernel> makeGatherGrad(const KernelContext& ctx) {
  if (requireF32OrF64(ctx, 0) == DType::F32) return std::make_unique<GatherGradKernel<float>>(ctx);
  return std::make_unique<GatherGradKernel<double>>(ctx);
}

}  // namespace

void registerMiscGradKernels(CpuKernelRegistry& r) {
  r.add("Exp", makeExp);
  r.add("ReluGrad", makeReluGrad);
  r.allowChannelsLast("ReluGrad", allOperandsWhenSameShape);
  r.add("ClipGrad", makeClipGrad);
  r.allowChannelsLast("ClipGrad", allOperandsWhenSameShape);
  r.add("LeakyReluGrad", makeLeakyReluGrad);
  r.allowChannelsLast("LeakyReluGrad", allOperandsWhenSameShape);
  r.add("GeluGrad", makeGeluGrad);
  r.allowChannelsLast("GeluGrad", allOperandsWhenSameShape);
  r.add("GatherGrad", makeGatherGrad);
  // SliceGrad: zeros, then dY written at the sliced positions of dX.
  r.add("SliceGrad", [](const KernelContext& ctx) {
    return placeKernel(ctx, sliceGeometry(ctx, ctx.output(0).shape(), ctx.input(0).shape()), 0.0);
  });
}

void registerTrainingKernels(CpuKernelRegistry& r) {
  registerConvGradKernels(r);
  registerPoolGradKernels(r);
  registerNormGradKernels(r);
  registerLossGradKernels(r);
  registerMiscGradKernels(r);
}

}  // namespace ds::cpu
