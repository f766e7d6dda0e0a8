// BatchNormalization (inference and training mode) and LayerNormalization, as
// OpenMP loops accumulating statistics in double (BatchNorm: one pass of shifted
// sums; LayerNorm: two passes, mean then the centred sum of squares). Per-channel
// scratch is sized in the factory.
#include <algorithm>
#include <cmath>

#include "ir/ops/shape_helpers.h"
#include "kernels/cpu/layout.h"
#include "kernels/cpu/nn.h"

namespace ds::cpu {

namespace {

// Element i of an f32 or f64 tensor.
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

bool hasOutput(const KernelContext& ctx, size_t i) {
  return i < ctx.outputs.size() && ctx.outputs[i].present();
}

// Y = (X - mean) / sqrt(var + eps) * scale + B per channel (dim 1). In training
// mode mean/var are the batch statistics (biased variance) and the optional
// outputs 1 and 2 get input_mean*momentum + batch_mean*(1-momentum) and
// input_var*momentum + batch_var*(1-momentum). batch_var there is the biased
// (population) variance, as the ONNX BatchNormalization-15 text specifies
// ("ReduceVar ... does not use sample size N - 1"); PyTorch's running_var uses
// the unbiased one instead, which the attribute unbiased_running_var asks for.
//
// X and Y may be channels-last (TensorView::channels_last; both alike). The
// statistics are shifted sums in double, one pass over X, over a fixed split of the
// data (the result does not depend on the thread count); Y is X * mul + add per
// channel in T's own precision, one pass that vectorises along the contiguous dim.
template <typename T>
class BatchNormKernel : public CpuKernel {
 public:
  explicit BatchNormKernel(const KernelContext& ctx) {
    const Shape& s = ctx.input(0).shape();
    n_ = s[0];
    c_ = s[1];
    inner_ = c_ * n_ == 0 ? 0 : ctx.input(0).numel() / (n_ * c_);
    channels_last_ = ctx.input(0).channels_last;
    training_ = ctx.i("training_mode") != 0;
    relu_ = !ctx.epilogue.empty();  // the only epilogue BatchNorm accepts
    eps_ = ctx.f("epsilon");
    momentum_ = ctx.f("momentum");
    const int64_t count = n_ * inner_;
    running_var_scale_ = ctx.i("unbiased_running_var") != 0 && count > 1
                             ? static_cast<double>(count) / static_cast<double>(count - 1)
                             : 1.0;
    mul_.resize(static_cast<size_t>(c_));
    add_.resize(static_cast<size_t>(c_));
    mean_.resize(static_cast<size_t>(c_));
    var_.resize(static_cast<size_t>(c_));
    if (training_ && channels_last_) {
      rows_ = n_ * inner_;
      chunks_ = std::min<int64_t>(rows_, kChunks);
      partial_.resize(static_cast<size_t>(2 * chunks_ * c_));
    }
  }

  void run(const KernelContext& ctx) override {
    const T* x = ctx.input(0).as<T>();
    for (int64_t c = 0; c < c_; ++c) {
      mean_[c] = param(ctx.input(3), c);
      var_[c] = param(ctx.input(4), c);
    }
    if (training_) {
      if (channels_last_) {
        rowStats(x);
      } else {
        planeStats(x);
      }
      double keep = momentum_, take = 1.0 - momentum_;
      for (int64_t c = 0; c < c_; ++c) {
        if (hasOutput(ctx, 1))
          setParam(ctx.output(1), c, param(ctx.input(3), c) * keep + mean_[c] * take);
        if (hasOutput(ctx, 2))
          setParam(ctx.output(2), c,
                   param(ctx.input(4), c) * keep + var_[c] * running_var_scale_ * take);
      }
    }
    for (int64_t c = 0; c < c_; ++c) {
      double mul = param(ctx.input(1), c) / std::sqrt(var_[c] + eps_);
      mul_[c] = static_cast<T>(mul);
      add_[c] = static_cast<T>(param(ctx.input(2), c) - mean_[c] * mul);
    }
    normalize(x, ctx.output(0).as<T>());
  }

 private:
  static constexpr int64_t kChunks = 64;

  // Both statistics in one pass: sums of d = x - shift and of d^2, with shift one
  // of the channel's own values, so var = E[d^2] - E[d]^2 cancels no more than
  // the two-pass formula does (the sums are in double).
  void setStats(int64_t c, double shift, double sum, double sq, double count) {
    double m = sum / count;
    mean_[c] = shift + m;
    var_[c] = std::max(0.0, sq / count - m * m);
  }

  // NCHW: one channel's planes are n_ runs of inner_ contiguous elements.
  void planeStats(const T* x) {
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < c_; ++c) {
      const double shift = x[c * inner_];
      double sum = 0.0, sq = 0.0;
      for (int64_t n = 0; n < n_; ++n) {
        const T* xp = x + (n * c_ + c) * inner_;
#pragma omp simd reduction(+ : sum, sq)
        for (int64_t i = 0; i < inner_; ++i) {
          double d = static_cast<double>(xp[i]) - shift;
          sum += d;
          sq += d * d;
        }
      }
      setStats(c, shift, sum, sq, static_cast<double>(n_ * inner_));
    }
  }

  // Channels-last: rows_ rows of c_ channels, shifted by the first row. Each chunk
  // of rows sums into its own per-channel partials, added up in chunk order.
  void rowStats(const T* x) {
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < chunks_; ++k) {
      double* sum = partial_.data() + 2 * k * c_;
      double* sq = sum + c_;
      std::fill(sum, sum + 2 * c_, 0.0);
      for (int64_t r = rows_ * k / chunks_; r < rows_ * (k + 1) / chunks_; ++r) {
        const T* xr = x + r * c_;
#pragma omp simd
        for (int64_t c = 0; c < c_; ++c) {
          double d = static_cast<double>(xr[c]) - static_cast<double>(x[c]);
          sum[c] += d;
          sq[c] += d * d;
        }
      }
    }
    for (int64_t c = 0; c < c_; ++c) {
      double sum = 0.0, sq = 0.0;
      for (int64_t k = 0; k < chunks_; ++k) {
        sum += partial_[2 * k * c_ + c];
        sq += partial_[(2 * k + 1) * c_ + c];
      }
      setStats(c, x[c], sum, sq, static_cast<double>(rows_));
    }
  }

  void normalize(const T* x, T* y) const {
    const T* mul = mul_.data();
    const T* add = add_.data();
    if (channels_last_) {
      int64_t rows = n_ * inner_;
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        const T* xr = x + r * c_;
        T* yr = y + r * c_;
        if (relu_) {
#pragma omp simd
          for (int64_t c = 0; c < c_; ++c) {
            T v = xr[c] * mul[c] + add[c];
            yr[c] = v < T(0) ? T(0) : v;  // NaN stays NaN, as in Relu
          }
        } else {
#pragma omp simd
          for (int64_t c = 0; c < c_; ++c) yr[c] = xr[c] * mul[c] + add[c];
        }
      }
      return;
    }
    int64_t planes = n_ * c_;
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < planes; ++p) {
      const T m = mul[p % c_], a = add[p % c_];
      const T* xp = x + p * inner_;
      T* yp = y + p * inner_;
      if (relu_) {
#pragma omp simd
        for (int64_t i = 0; i < inner_; ++i) {
          T v = xp[i] * m + a;
          yp[i] = v < T(0) ? T(0) : v;
        }
      } else {
#pragma omp simd
        for (int64_t i = 0; i < inner_; ++i) yp[i] = xp[i] * m + a;
      }
    }
  }

  int64_t n_ = 0, c_ = 0, inner_ = 0;
  bool channels_last_ = false, training_ = false;
  bool relu_ = false;  // a fused Relu (kernels/cpu/fusion.h) on X * mul + add
  double eps_ = 0.0, momentum_ = 0.0;
  double running_var_scale_ = 1.0;  // n/(n-1) for PyTorch's unbiased running_var
  int64_t rows_ = 0, chunks_ = 0;
  std::vector<double> mean_, var_;  // per channel: the statistics normalised with
  std::vector<T> mul_, add_;        // per channel: Y = X * mul + add
  std::vector<double> partial_;     // per chunk: c_ sums and c_ sums of squares
};

std::unique_ptr<CpuKernel> makeBatchNorm(const KernelContext& ctx) {
  DType t = requireF32OrF64(ctx, 0);
  for (size_t i = 1; i < 5; ++i) requireF32OrF64(ctx, i);
  if (ctx.output(0).numel() == 0) return noopKernel();
  if (t == DType::F32) return std::make_unique<BatchNormKernel<float>>(ctx);
  return std::make_unique<BatchNormKernel<double>>(ctx);
}

// LayerNormalization over dims [axis, rank): per row of the [outer, inner] view,
// Y = (X - mean) * inv_std * scale + B with scale/B broadcast to the normalised
// shape; optional outputs Mean and InvStdDev are f32 (stash_type 1).
template <typename T>
class LayerNormKernel : public CpuKernel {
 public:
  explicit LayerNormKernel(const KernelContext& ctx) {
    LayerNormRows rows = layerNormRows(ctx.input(0).shape(), ctx.i("axis"));
    outer_ = rows.outer;
    inner_ = rows.inner;
    eps_ = ctx.f("epsilon");
    scale_idx_ = broadcastIndices(ctx.input(1).shape(), rows.normalized);
    if (ctx.hasInput(2)) bias_idx_ = broadcastIndices(ctx.input(2).shape(), rows.normalized);
    dense_ = ctx.input(1).numel() == inner_ && (!ctx.hasInput(2) || ctx.input(2).numel() == inner_);
  }

  void run(const KernelContext& ctx) override {
    const T* x = ctx.input(0).as<T>();
    const T* scale = ctx.input(1).as<T>();
    const T* bias = ctx.hasInput(2) ? ctx.input(2).as<T>() : nullptr;
    T* y = ctx.output(0).as<T>();
    float* mean_out = hasOutput(ctx, 1) ? ctx.output(1).as<float>() : nullptr;
    float* inv_out = hasOutput(ctx, 2) ? ctx.output(2).as<float>() : nullptr;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < outer_; ++r) {
      const T* xr = x + r * inner_;
      T* yr = y + r * inner_;
      auto [mean, inv] = rowMoments(xr, inner_, eps_);
      if (dense_) {  // scale and B cover the normalised shape: one vectorised pass
        const T m = static_cast<T>(mean), s = static_cast<T>(inv);
#pragma omp simd
        for (int64_t i = 0; i < inner_; ++i) {
          T v = (xr[i] - m) * s * scale[i];
          yr[i] = bias ? v + bias[i] : v;
        }
      } else {
        for (int64_t i = 0; i < inner_; ++i) {
          double v = (xr[i] - mean) * inv * scale[scale_idx_[i]];
          yr[i] = static_cast<T>(bias ? v + bias[bias_idx_[i]] : v);
        }
      }
      if (mean_out) mean_out[r] = static_cast<float>(mean);
      if (inv_out) inv_out[r] = static_cast<float>(inv);
    }
  }

 private:
  int64_t outer_ = 0, inner_ = 0;
  double eps_ = 0.0;
  std::vector<int64_t> scale_idx_, bias_idx_;  // per normalised element: index into scale/B
  bool dense_ = false;                         // the indices are 0, 1, ..., inner_ - 1
};

std::unique_ptr<CpuKernel> makeLayerNorm(const KernelContext& ctx) {
  DType t = requireF32OrF64(ctx, 0);
  if (ctx.output(0).numel() == 0) return noopKernel();
  if (t == DType::F32) return std::make_unique<LayerNormKernel<float>>(ctx);
  return std::make_unique<LayerNormKernel<double>>(ctx);
}

}  // namespace

LayerNormRows layerNormRows(const Shape& x, int64_t axis) {
  if (axis < 0) axis += static_cast<int64_t>(x.size());
  LayerNormRows rows;
  rows.normalized = Shape(x.begin() + axis, x.end());
  rows.inner = numElements(rows.normalized);
  rows.outer = rows.inner == 0 ? 0 : numElements(x) / rows.inner;
  return rows;
}

void registerNormKernels(CpuKernelRegistry& r) {
  r.add("BatchNormalization", makeBatchNorm);
  r.allowChannelsLast("BatchNormalization", dataInOutTogether);
  r.allowEpilogue("BatchNormalization", [](const KernelContext& ctx, const Epilogue& next) {
    return ctx.epilogue.empty() && next.op == "Relu";
  });
  r.add("LayerNormalization", makeLayerNorm);
}

}  // namespace ds::cpu
