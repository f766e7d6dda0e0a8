// SoftmaxCrossEntropyLossGrad(dLoss, scores [N, C, d...], labels [N, d...][,
// weights [C]]) -> dScores. Per sample with label t and weight w = weights[t] (1
// without weights): dScores[:, c] = g·w·(softmax(scores)[c] − [c = t]), where g is
// dLoss for that sample ("none"), the scalar dLoss ("sum"), or the scalar dLoss
// divided by the summed weights of the non-ignored samples ("mean", the forward
// kernel's normaliser in loss.cc). Ignored samples (label == ignore_index; the
// IR's INT64_MIN means unset) get zeros; other labels outside [0, C) fail the step.
// With `classes` (padded scores), only the first `classes` scores of a sample
// count; the padding's gradient is 0.
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/grad_util.h"
#include "kernels/cpu/nn.h"

namespace ds::cpu {

namespace {

constexpr int64_t kUnsetIgnore = std::numeric_limits<int64_t>::min();

template <typename T>
class CrossEntropyGradKernel : public CpuKernel {
 public:
  explicit CrossEntropyGradKernel(const KernelContext& ctx) {
    const Shape& s = ctx.input(1).shape();
    n_ = s[0];
    c_ = s[1];
    d_ = n_ * c_ == 0 ? 0 : ctx.input(1).numel() / (n_ * c_);
    classes_ = paddedClasses(ctx, c_);
    ignore_ = ctx.i("ignore_index");
    const std::string& red = ctx.s("reduction");
    reduction_ = red == "none" ? Reduction::None : red == "sum" ? Reduction::Sum : Reduction::Mean;
    labels32_ = ctx.input(2).dtype() == DType::I32;
    if (!labels32_ && ctx.input(2).dtype() != DType::I64) ctx.fail("labels must be i32 or i64");
  }

  void run(const KernelContext& ctx) override {
    const T* dloss = ctx.input(0).as<T>();
    const T* weights = ctx.hasInput(3) ? ctx.input(3).as<T>() : nullptr;
    int64_t samples = n_ * d_, bad = 0;
    double weight_sum = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : weight_sum, bad)
    for (int64_t s = 0; s < samples; ++s) {
      int64_t label = labelAt(ctx, s);
      if (ignored(label)) continue;
      if (label < 0 || label >= classes_)
        ++bad;
      else
        weight_sum += weights ? static_cast<double>(weights[label]) : 1.0;
    }
    if (bad > 0) ctx.fail(bad, " labels lie outside [0, ", classes_, ") and are not ignore_index");
    double scalar = reduction_ == Reduction::None ? 0.0 : static_cast<double>(dloss[0]);
    if (reduction_ == Reduction::Mean) scalar /= weight_sum;
#pragma omp parallel for schedule(static)
    for (int64_t s = 0; s < samples; ++s) {
      double g = reduction_ == Reduction::None ? static_cast<double>(dloss[s]) : scalar;
      sampleGrad(ctx, s, g, weights);
    }
  }

 private:
  enum class Reduction { None, Sum, Mean };

  bool ignored(int64_t label) const {
    return ignore_ != kUnsetIgnore && label == ignore_;
  }

  // dScores of sample s (class c at stride d_), scaled by g.
  void sampleGrad(const KernelContext& ctx, int64_t s, double g, const T* weights) const {
    int64_t n = s / d_, d = s % d_;
    const T* xs = ctx.input(1).as<T>() + n * c_ * d_ + d;
    T* dxs = ctx.output(0).as<T>() + n * c_ * d_ + d;
    int64_t label = labelAt(ctx, s);
    if (ignored(label)) {
      for (int64_t c = 0; c < c_; ++c) dxs[c * d_] = T(0);
      return;
    }
    double mx = -std::numeric_limits<double>::infinity();
    for (int64_t c = 0; c < classes_; ++c) mx = std::max(mx, static_cast<double>(xs[c * d_]));
    double sum = 0.0;
    for (int64_t c = 0; c < classes_; ++c) sum += std::exp(xs[c * d_] - mx);
    double scale = g * (weights ? static_cast<double>(weights[label]) : 1.0);
    for (int64_t c = 0; c < classes_; ++c) {
      double p = std::exp(xs[c * d_] - mx) / sum;
      dxs[c * d_] = static_cast<T>(scale * (p - (c == label ? 1.0 : 0.0)));
    }
    for (int64_t c = classes_; c < c_; ++c) dxs[c * d_] = T(0);  // padding
  }

  int64_t labelAt(const KernelContext& ctx, int64_t s) const {
    return labels32_ ? ctx.input(2).as<int32_t>()[s] : ctx.input(2).as<int64_t>()[s];
  }

  int64_t n_ = 0, c_ = 0, d_ = 0, classes_ = 0, ignore_ = kUnsetIgnore;
  Reduction reduction_ = Reduction::Mean;
  bool labels32_ = false;
};

std::unique_ptr<CpuKernel> makeCrossEntropyGrad(const KernelContext& ctx) {
  DType t = requireF32OrF64(ctx, 1);
  if (ctx.output(0).numel() == 0) return noopKernel();
  if (t == DType::F32) return std::make_unique<CrossEntropyGradKernel<float>>(ctx);
  return std::make_unique<CrossEntropyGradKernel<double>>(ctx);
}

}  // namespace

void registerLossGradKernels(CpuKernelRegistry& r) {
  r.add("SoftmaxCrossEntropyLossGrad", makeCrossEntropyGrad);
}

}  // namespace ds::cpu
