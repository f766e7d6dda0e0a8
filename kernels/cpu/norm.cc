// BatchNormalization (inference and training mode) and LayerNormalization, as
// OpenMP loops accumulating statistics in double (two passes: mean, then the
// centred sum of squares). Per-channel scratch is sized in the factory.
#include <cmath>

#include "ir/ops/shape_helpers.h"
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
// the unbiased one instead, so exporters that need PyTorch's numbers differ here.
template <typename T>
class BatchNormKernel : public CpuKernel {
 public:
  explicit BatchNormKernel(const KernelContext& ctx) {
    const Shape& s = ctx.input(0).shape();
    n_ = s[0];
    c_ = s[1];
    inner_ = c_ * n_ == 0 ? 0 : ctx.input(0).numel() / (n_ * c_);
    training_ = ctx.i("training_mode") != 0;
    eps_ = ctx.f("epsilon");
    momentum_ = ctx.f("momentum");
    mul_.resize(static_cast<size_t>(c_));
    add_.resize(static_cast<size_t>(c_));
  }

  void run(const KernelContext& ctx) override {
    const T* x = ctx.input(0).as<T>();
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < c_; ++c) {
      double mean = param(ctx.input(3), c), var = param(ctx.input(4), c);
      if (training_) {
        batchStats(x, c, &mean, &var);
        double keep = momentum_, take = 1.0 - momentum_;
        if (hasOutput(ctx, 1))
          setParam(ctx.output(1), c, param(ctx.input(3), c) * keep + mean * take);
        if (hasOutput(ctx, 2))
          setParam(ctx.output(2), c, param(ctx.input(4), c) * keep + var * take);
      }
      double mul = param(ctx.input(1), c) / std::sqrt(var + eps_);
      mul_[c] = mul;
      add_[c] = param(ctx.input(2), c) - mean * mul;
    }
    T* y = ctx.output(0).as<T>();
    int64_t planes = n_ * c_;
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < planes; ++p) {
      double mul = mul_[p % c_], add = add_[p % c_];
      const T* xp = x + p * inner_;
      T* yp = y + p * inner_;
      for (int64_t i = 0; i < inner_; ++i) yp[i] = static_cast<T>(xp[i] * mul + add);
    }
  }

 private:
  void batchStats(const T* x, int64_t c, double* mean, double* var) const {
    double sum = 0.0, sq = 0.0;
    for (int64_t n = 0; n < n_; ++n) {
      const T* xp = x + (n * c_ + c) * inner_;
      for (int64_t i = 0; i < inner_; ++i) sum += xp[i];
    }
    double count = static_cast<double>(n_ * inner_);
    *mean = sum / count;
    for (int64_t n = 0; n < n_; ++n) {
      const T* xp = x + (n * c_ + c) * inner_;
      for (int64_t i = 0; i < inner_; ++i) sq += (xp[i] - *mean) * (xp[i] - *mean);
    }
    *var = sq / count;
  }

  int64_t n_ = 0, c_ = 0, inner_ = 0;
  bool training_ = false;
  double eps_ = 0.0, momentum_ = 0.0;
  std::vector<double> mul_, add_;  // per channel: Y = X * mul + add
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
      for (int64_t i = 0; i < inner_; ++i) {
        double v = (xr[i] - mean) * inv * scale[scale_idx_[i]];
        yr[i] = static_cast<T>(bias ? v + bias[bias_idx_[i]] : v);
      }
      if (mean_out) mean_out[r] = static_cast<float>(mean);
      if (inv_out) inv_out[r] = static_cast<float>(inv);
    }
  }

 private:
  int64_t outer_ = 0, inner_ = 0;
  double eps_ = 0.0;
  std::vector<int64_t> scale_idx_, bias_idx_;  // per normalised element: index into scale/B
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
  r.add("LayerNormalization", makeLayerNorm);
}

}  // namespace ds::cpu
