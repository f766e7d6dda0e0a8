// SoftmaxCrossEntropyLoss: scores [N, C, d...], labels [N, d...] (i32/i64),
// optional class weights [C], ignore_index (the IR's INT64_MIN means unset),
// reduction none/sum/mean and the optional log_prob output. Per sample:
// loss = -w[label] * log_softmax(scores)[label], 0 (and weight 0) when ignored.
// "mean" divides the summed loss by the summed weights of the samples that are
// not ignored (their count without weights), as the ONNX definition does; when
// every sample is ignored that is 0/0 = NaN, as in the ONNX reference and PyTorch.
// With `classes` (padded scores), only the first `classes` scores of a sample count.
#include <cmath>
#include <limits>

#include "kernels/cpu/nn.h"

namespace ds::cpu {

namespace {

constexpr int64_t kUnsetIgnore = std::numeric_limits<int64_t>::min();

template <typename T>
class CrossEntropyKernel : public CpuKernel {
 public:
  explicit CrossEntropyKernel(const KernelContext& ctx) {
    const Shape& s = ctx.input(0).shape();
    n_ = s[0];
    c_ = s[1];
    d_ = n_ * c_ == 0 ? 0 : ctx.input(0).numel() / (n_ * c_);
    classes_ = paddedClasses(ctx, c_);
    ignore_ = ctx.i("ignore_index");
    const std::string& red = ctx.s("reduction");
    reduction_ = red == "none" ? Reduction::None : red == "sum" ? Reduction::Sum : Reduction::Mean;
    labels32_ = ctx.input(1).dtype() == DType::I32;
    if (!labels32_ && ctx.input(1).dtype() != DType::I64) ctx.fail("labels must be i32 or i64");
  }

  void run(const KernelContext& ctx) override {
    const T* x = ctx.input(0).as<T>();
    const T* weights = ctx.hasInput(2) ? ctx.input(2).as<T>() : nullptr;
    T* loss = ctx.output(0).as<T>();
    T* log_prob =
        ctx.outputs.size() > 1 && ctx.output(1).present() ? ctx.output(1).as<T>() : nullptr;
    int64_t samples = n_ * d_, bad = 0;
    double total = 0.0, weight_sum = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total, weight_sum, bad)
    for (int64_t s = 0; s < samples; ++s) {
      int64_t n = s / d_, d = s % d_;
      const T* xs = x + n * c_ * d_ + d;  // class c at xs[c * d_]
      double lse = logSumExp(xs);
      if (log_prob) {
        T* ls = log_prob + n * c_ * d_ + d;
        for (int64_t c = 0; c < c_; ++c) ls[c * d_] = static_cast<T>(xs[c * d_] - lse);
      }
      int64_t label = labelAt(ctx, s);
      double l = 0.0, w = 0.0;
      if (label != ignore_ || ignore_ == kUnsetIgnore) {
        if (label < 0 || label >= classes_) {
          ++bad;
        } else {
          w = weights ? static_cast<double>(weights[label]) : 1.0;
          l = -w * (xs[label * d_] - lse);
        }
      }
      if (reduction_ == Reduction::None) loss[s] = static_cast<T>(l);
      total += l;
      weight_sum += w;
    }
    if (bad > 0) ctx.fail(bad, " labels lie outside [0, ", classes_, ") and are not ignore_index");
    if (reduction_ == Reduction::Sum) loss[0] = static_cast<T>(total);
    if (reduction_ == Reduction::Mean) loss[0] = static_cast<T>(total / weight_sum);
  }

 private:
  enum class Reduction { None, Sum, Mean };

  double logSumExp(const T* xs) const {
    double mx = -std::numeric_limits<double>::infinity();
    for (int64_t c = 0; c < classes_; ++c) mx = std::max(mx, static_cast<double>(xs[c * d_]));
    double sum = 0.0;
    for (int64_t c = 0; c < classes_; ++c) sum += std::exp(xs[c * d_] - mx);
    return mx + std::log(sum);
  }

  int64_t labelAt(const KernelContext& ctx, int64_t s) const {
    return labels32_ ? ctx.input(1).as<int32_t>()[s] : ctx.input(1).as<int64_t>()[s];
  }

  int64_t n_ = 0, c_ = 0, d_ = 0, classes_ = 0, ignore_ = kUnsetIgnore;
  Reduction reduction_ = Reduction::Mean;
  bool labels32_ = false;
};

std::unique_ptr<CpuKernel> makeCrossEntropy(const KernelContext& ctx) {
  if (requireF32OrF64(ctx, 0) == DType::F32)
    return std::make_unique<CrossEntropyKernel<float>>(ctx);
  return std::make_unique<CrossEntropyKernel<double>>(ctx);
}

}  // namespace

void registerLossKernels(CpuKernelRegistry& r) {
  r.add("SoftmaxCrossEntropyLoss", makeCrossEntropy);
}

}  // namespace ds::cpu
