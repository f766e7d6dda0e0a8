// MaxPool, AveragePool and GlobalAveragePool with OpenMP loops over (n, c) planes
// (MaxPool and GlobalAveragePool also over channels-last pixels: kernels/cpu/layout.h).
// Per output index and spatial dim the factory tabulates the range of kernel taps
// that land inside the input, so run() does no bounds tests and no allocation.
// AveragePool's divisor with count_include_pad counts taps inside the explicit
// padding [-pad_begin, in + pad_end) — taps past it that exist only because of
// ceil_mode never count (the PyTorch rule, which ONNX's reference follows).
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/layout.h"
#include "kernels/cpu/nn.h"
#include "kernels/cpu/window.h"

namespace ds::cpu {

namespace {

template <typename T, bool kMax>
class PoolKernel : public CpuKernel {
 public:
  PoolKernel(const Window& w, bool count_include_pad)
      : w_(w.as3d()), count_include_pad_(count_include_pad) {
    for (size_t d = 0; d < 3; ++d) taps_[d] = tapTable(w_, d);
  }

  void run(const KernelContext& ctx) override {
    const T* x = ctx.input(0).as<T>();
    T* y = ctx.output(0).as<T>();
    if (ctx.input(0).channels_last || ctx.output(0).channels_last) {
      if constexpr (kMax) runChannelsLast(ctx);
      return;
    }
    int64_t planes = w_.n * w_.c_in, in_size = w_.inSize(), out_size = w_.outSize();
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < planes; ++p) {
      const T* xp = x + p * in_size;
      T* yp = y + p * out_size;
      for (int64_t od = 0; od < w_.out[0]; ++od)
        for (int64_t oh = 0; oh < w_.out[1]; ++oh)
          for (int64_t ow = 0; ow < w_.out[2]; ++ow)
            yp[(od * w_.out[1] + oh) * w_.out[2] + ow] = window(xp, od, oh, ow);
    }
  }

  // 2-D max pooling with channels-last input and/or output: per output pixel, the
  // maximum over its taps of contiguous channel vectors.
  void runChannelsLast(const KernelContext& ctx) const {
    const T* x = ctx.input(0).as<T>();
    T* y = ctx.output(0).as<T>();
    const bool x_last = ctx.input(0).channels_last, y_last = ctx.output(0).channels_last;
    const int64_t c = w_.c_in, in_hw = w_.in[1] * w_.in[2], out_hw = w_.out[1] * w_.out[2];
    const int64_t xc = x_last ? 1 : in_hw, yc = y_last ? 1 : out_hw;  // channel strides
    const int64_t xp = x_last ? c : 1, yp = y_last ? c : 1;           // pixel strides
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t n = 0; n < w_.n; ++n) {
      for (int64_t oh = 0; oh < w_.out[1]; ++oh) {
        for (int64_t ow = 0; ow < w_.out[2]; ++ow) {
          T* yo = y + n * c * out_hw + (oh * w_.out[2] + ow) * yp;
          for (int64_t ch = 0; ch < c; ++ch) yo[ch * yc] = -std::numeric_limits<T>::infinity();
          int64_t h0 = oh * w_.strides[1] - w_.pad_begin[1];
          int64_t w0 = ow * w_.strides[2] - w_.pad_begin[2];
          for (int64_t kh = taps_[1].lo[oh]; kh < taps_[1].hi[oh]; ++kh) {
            for (int64_t kw = taps_[2].lo[ow]; kw < taps_[2].hi[ow]; ++kw) {
              int64_t pixel = (h0 + kh * w_.dilations[1]) * w_.in[2] + w0 + kw * w_.dilations[2];
              const T* xi = x + n * c * in_hw + pixel * xp;
#pragma omp simd
              for (int64_t ch = 0; ch < c; ++ch) {
                T v = xi[ch * xc], best = yo[ch * yc];
                yo[ch * yc] = (v > best || v != v) ? v : best;
              }
            }
          }
        }
      }
    }
  }

 private:
  T window(const T* xp, int64_t od, int64_t oh, int64_t ow) const {
    const int64_t o[3] = {od, oh, ow};
    int64_t base[3], lo[3], hi[3];
    for (int d = 0; d < 3; ++d) {
      base[d] = o[d] * w_.strides[d] - w_.pad_begin[d];
      lo[d] = taps_[d].lo[o[d]];
      hi[d] = taps_[d].hi[o[d]];
    }
    T best = -std::numeric_limits<T>::infinity();
    double sum = 0.0;
    for (int64_t kd = lo[0]; kd < hi[0]; ++kd) {
      int64_t id = base[0] + kd * w_.dilations[0];
      for (int64_t kh = lo[1]; kh < hi[1]; ++kh) {
        int64_t row = (id * w_.in[1] + base[1] + kh * w_.dilations[1]) * w_.in[2] + base[2];
        for (int64_t kw = lo[2]; kw < hi[2]; ++kw) {
          T v = xp[row + kw * w_.dilations[2]];
          if constexpr (kMax) {
            if (v > best || std::isnan(v)) best = v;
          } else {
            sum += v;
          }
        }
      }
    }
    if constexpr (kMax) {
      return best;
    } else {
      double count = 1.0;
      for (int d = 0; d < 3; ++d)
        count *= count_include_pad_ ? taps_[d].padded[o[d]] : hi[d] - lo[d];
      return static_cast<T>(sum / count);
    }
  }

  Window w_;
  bool count_include_pad_;
  TapTable taps_[3];
};

template <bool kMax>
std::unique_ptr<CpuKernel> makePool(const KernelContext& ctx) {
  DType t = requireF32OrF64(ctx, 0);
  Window w = resolveWindow(ctx, ctx.ints("kernel_shape"));
  if (ctx.output(0).numel() == 0) return noopKernel();
  bool include_pad = !kMax && ctx.i("count_include_pad") != 0;
  if (t == DType::F32) return std::make_unique<PoolKernel<float, kMax>>(w, include_pad);
  return std::make_unique<PoolKernel<double, kMax>>(w, include_pad);
}

// The mean of each (n, c) plane; a channels-last input sums its pixel rows into
// per-channel accumulators instead.
template <typename T>
class GlobalAveragePoolKernel : public CpuKernel {
 public:
  explicit GlobalAveragePoolKernel(const KernelContext& ctx) {
    const Shape& s = ctx.input(0).shape();
    n_ = s[0];
    c_ = s[1];
    size_ = n_ * c_ == 0 ? 0 : ctx.input(0).numel() / (n_ * c_);
    channels_last_ = ctx.input(0).channels_last;
    if (channels_last_) sums_.resize(static_cast<size_t>(n_ * c_));
  }

  void run(const KernelContext& ctx) override {
    const T* x = ctx.input(0).as<T>();
    T* y = ctx.output(0).as<T>();
    const double count = static_cast<double>(size_);
    if (channels_last_) {
#pragma omp parallel for schedule(static)
      for (int64_t n = 0; n < n_; ++n) {
        double* acc = sums_.data() + n * c_;
        std::fill(acc, acc + c_, 0.0);
        for (int64_t p = 0; p < size_; ++p) {
          const T* xr = x + (n * size_ + p) * c_;
#pragma omp simd
          for (int64_t ch = 0; ch < c_; ++ch) acc[ch] += xr[ch];
        }
        for (int64_t ch = 0; ch < c_; ++ch) y[n * c_ + ch] = static_cast<T>(acc[ch] / count);
      }
      return;
    }
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < n_ * c_; ++p) {
      double sum = 0.0;
#pragma omp simd reduction(+ : sum)
      for (int64_t i = 0; i < size_; ++i) sum += x[p * size_ + i];
      y[p] = static_cast<T>(sum / count);
    }
  }

 private:
  int64_t n_ = 0, c_ = 0, size_ = 0;
  bool channels_last_ = false;
  std::vector<double> sums_;  // channels-last: per (n, c)
};

std::unique_ptr<CpuKernel> makeGlobalAveragePool(const KernelContext& ctx) {
  if (requireF32OrF64(ctx, 0) == DType::F32)
    return std::make_unique<GlobalAveragePoolKernel<float>>(ctx);
  return std::make_unique<GlobalAveragePoolKernel<double>>(ctx);
}

}  // namespace

void registerPoolKernels(CpuKernelRegistry& r) {
  r.add("MaxPool", makePool<true>);
  r.add("AveragePool", makePool<false>);
  r.add("GlobalAveragePool", makeGlobalAveragePool);
  // Max pooling without the Indices output (its indices are NCHW offsets).
  r.allowChannelsLast("MaxPool", [](const KernelContext& ctx) {
    bool indices = ctx.outputs.size() > 1 && ctx.outputs[1].present();
    return indices ? OperandGroups{} : dataInOutSeparately(ctx);
  });
  r.allowChannelsLast("GlobalAveragePool", dataInOutSeparately);
}

}  // namespace ds::cpu
