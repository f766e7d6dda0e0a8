// Normalisation backward, recomputing the forward statistics from X (two passes
// in double, as norm.cc computes them) instead of saving them:
//  * BatchNormalizationGrad(dY, X, scale[, R]) -> dX, dScale, dBias (training mode:
//    batch mean and biased variance per channel, over M = N·spatial elements):
//    dBias = Σ dY, dScale = Σ dY·x̂, dX = scale/σ·(dY − dBias/M − x̂·dScale/M);
//    with R (a following Relu's output), dY is read as ReluGrad(dY, R).
//  * LayerNormalizationGrad(dY, X, Scale) -> dX, dScale, dBias over dims
//    [axis, rank), parameter gradients in that normalised shape: with
//    g = dY·Scale per row, dX = (g − mean(g) − x̂·mean(g·x̂))/σ; dScale = Σ_rows dY·x̂,
//    dBias = Σ_rows dY.
// OpenMP runs over channels (BatchNorm), rows and then column blocks (LayerNorm),
// so no two threads write one element; scratch is sized in the factory.
#include <cmath>

#include "ir/ops/shape_helpers.h"
#include "kernels/cpu/cpu_util.h"
#include "kernels/cpu/grad_util.h"
#include "kernels/cpu/nn.h"

namespace ds::cpu {

namespace {

// Element i of an f32 or f64 tensor, and its store.
double param(const TensorView& v, int64_t i) {
  return v.dtype() == DType::F32 ? v.as<float>()[i] : v.as<double>()[i];
}

void setParam(const TensorView& v, int64_t i, double x) {
  if (v.dtype() == DType::F32) {
    v.as<float>()[i] = static_cast<float>(x);
  } else {
    v.as<double>()[i] = x;
  }
}

template <typename T>
class BatchNormGradKernel : public CpuKernel {
 public:
  explicit BatchNormGradKernel(const KernelContext& ctx) {
    const Shape& s = ctx.input(1).shape();
    n_ = s[0];
    c_ = s[1];
    inner_ = c_ * n_ == 0 ? 0 : ctx.input(1).numel() / (n_ * c_);
    eps_ = ctx.f("epsilon");
  }

  void run(const KernelContext& ctx) override {
    const T* dy_in = ctx.input(0).as<T>();
    const T* relu = ctx.hasInput(3) ? ctx.input(3).as<T>() : nullptr;
    // The BatchNorm's output gradient (ReluGrad's rule: 0 where the Relu gave 0).
    auto dy = [&](int64_t i) { return relu && relu[i] == T(0) ? T(0) : dy_in[i]; };
    const T* x = ctx.input(1).as<T>();
    T* dx = ctx.output(0).as<T>();
    const auto m = static_cast<double>(n_ * inner_);
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < c_; ++c) {
      double sum = 0.0, sq = 0.0;
      forChannel(c, [&](int64_t i) { sum += x[i]; });
      double mean = sum / m;
      forChannel(c, [&](int64_t i) { sq += (x[i] - mean) * (x[i] - mean); });
      double inv = 1.0 / std::sqrt(sq / m + eps_);
      double dbias = 0.0, dscale = 0.0;
      forChannel(c, [&](int64_t i) {
        dbias += dy(i);
        dscale += dy(i) * (x[i] - mean) * inv;
      });
      setParam(ctx.output(1), c, dscale);
      setParam(ctx.output(2), c, dbias);
      double gain = param(ctx.input(2), c) * inv, mean_dy = dbias / m, mean_dyx = dscale / m;
      forChannel(c, [&](int64_t i) {
        dx[i] = static_cast<T>(gain * (dy(i) - mean_dy - (x[i] - mean) * inv * mean_dyx));
      });
    }
  }

 private:
  // Calls fn(flat index) for every element of channel c.
  template <typename Fn>
  void forChannel(int64_t c, Fn&& fn) const {
    for (int64_t n = 0; n < n_; ++n) {
      int64_t base = (n * c_ + c) * inner_;
      for (int64_t i = 0; i < inner_; ++i) fn(base + i);
    }
  }

  int64_t n_ = 0, c_ = 0, inner_ = 0;
  double eps_ = 0.0;
};

std::unique_ptr<CpuKernel> makeBatchNormGrad(const KernelContext& ctx) {
  DType t = requireF32OrF64(ctx, 0);
  requireF32OrF64(ctx, 2);
  if (ctx.input(1).shape()[1] == 0) return noopKernel();
  if (t == DType::F32) return std::make_unique<BatchNormGradKernel<float>>(ctx);
  return std::make_unique<BatchNormGradKernel<double>>(ctx);
}

template <typename T>
class LayerNormGradKernel : public CpuKernel {
 public:
  explicit LayerNormGradKernel(const KernelContext& ctx) {
    LayerNormRows rows = layerNormRows(ctx.input(1).shape(), ctx.i("axis"));
    outer_ = rows.outer;
    inner_ = rows.inner;
    eps_ = ctx.f("epsilon");
    scale_idx_ = broadcastIndices(ctx.input(2).shape(), rows.normalized);
    mean_.resize(static_cast<size_t>(outer_));
    inv_.resize(static_cast<size_t>(outer_));
    acc_scale_.resize(static_cast<size_t>(inner_));
    acc_bias_.resize(static_cast<size_t>(inner_));
  }

  void run(const KernelContext& ctx) override {
    const T* dy = ctx.input(0).as<T>();
    const T* x = ctx.input(1).as<T>();
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < outer_; ++r) inputGradRow(ctx, r);
    T* dscale = ctx.output(1).as<T>();
    T* dbias = ctx.output(2).as<T>();
    // Column blocks, each owned by one thread; threads pay off once rows × columns is large.
    int64_t work = outer_ * inner_;
    parallelChunks(
        inner_,
        [&](int64_t begin, int64_t end) {
          std::fill(acc_scale_.begin() + begin, acc_scale_.begin() + end, 0.0);
          std::fill(acc_bias_.begin() + begin, acc_bias_.begin() + end, 0.0);
          for (int64_t r = 0; r < outer_; ++r) {
            const T* dyr = dy + r * inner_;
            const T* xr = x + r * inner_;
            for (int64_t i = begin; i < end; ++i) {
              acc_scale_[i] += dyr[i] * (xr[i] - mean_[r]) * inv_[r];
              acc_bias_[i] += dyr[i];
            }
          }
          for (int64_t i = begin; i < end; ++i) {
            dscale[i] = static_cast<T>(acc_scale_[i]);
            dbias[i] = static_cast<T>(acc_bias_[i]);
          }
        },
        work > kParallelMin ? 0 : work);
  }

 private:
  // Row r: its statistics (kept for the parameter pass) and its slice of dX.
  void inputGradRow(const KernelContext& ctx, int64_t r) {
    const T* dyr = ctx.input(0).as<T>() + r * inner_;
    const T* xr = ctx.input(1).as<T>() + r * inner_;
    const T* scale = ctx.input(2).as<T>();
    T* dxr = ctx.output(0).as<T>() + r * inner_;
    const auto n = static_cast<double>(inner_);
    auto [mean, inv] = rowMoments(xr, inner_, eps_);
    double sum_g = 0.0, sum_gx = 0.0;
    for (int64_t i = 0; i < inner_; ++i) {
      double g = dyr[i] * scale[scale_idx_[i]];
      sum_g += g;
      sum_gx += g * (xr[i] - mean) * inv;
    }
    double mean_g = sum_g / n, mean_gx = sum_gx / n;
    for (int64_t i = 0; i < inner_; ++i) {
      double g = dyr[i] * scale[scale_idx_[i]];
      dxr[i] = static_cast<T>(inv * (g - mean_g - (xr[i] - mean) * inv * mean_gx));
    }
    mean_[r] = mean;
    inv_[r] = inv;
  }

  int64_t outer_ = 0, inner_ = 0;
  double eps_ = 0.0;
  std::vector<int64_t> scale_idx_;            // per normalised element: index into Scale
  std::vector<double> mean_, inv_;            // per row
  std::vector<double> acc_scale_, acc_bias_;  // per normalised element
};

std::unique_ptr<CpuKernel> makeLayerNormGrad(const KernelContext& ctx) {
  DType t = requireF32OrF64(ctx, 0);
  if (ctx.input(1).numel() == 0 && ctx.output(1).numel() == 0) return noopKernel();
  if (t == DType::F32) return std::make_unique<LayerNormGradKernel<float>>(ctx);
  return std::make_unique<LayerNormGradKernel<double>>(ctx);
}

}  // namespace

void registerNormGradKernels(CpuKernelRegistry& r) {
  r.add("BatchNormalizationGrad", makeBatchNormGrad);
  r.add("LayerNormalizationGrad", makeLayerNormGrad);
}

}  // namespace ds::cpu
