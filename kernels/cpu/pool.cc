// MaxPool, AveragePool and GlobalAveragePool with OpenMP loops over (n, c) planes.
// Per output index and spatial dim the factory tabulates the range of kernel taps
// that land inside the input, so run() does no bounds tests and no allocation.
// AveragePool's divisor with count_include_pad counts taps inside the explicit
// padding [-pad_begin, in + pad_end) — taps past it that exist only because of
// ceil_mode never count (the PyTorch rule, which ONNX's reference follows).
#include <algorithm>
#include <cmath>
#include <limits>

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

template <typename T>
void globalAveragePool(const KernelContext& ctx) {
  const Shape& s = ctx.input(0).shape();
  int64_t planes = s[0] * s[1];
  int64_t size = planes == 0 ? 0 : ctx.input(0).numel() / planes;
  const T* x = ctx.input(0).as<T>();
  T* y = ctx.output(0).as<T>();
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    double sum = 0.0;
    for (int64_t i = 0; i < size; ++i) sum += x[p * size + i];
    y[p] = static_cast<T>(sum / static_cast<double>(size));
  }
}

std::unique_ptr<CpuKernel> makeGlobalAveragePool(const KernelContext& ctx) {
  if (requireF32OrF64(ctx, 0) == DType::F32) return statelessKernel(globalAveragePool<float>);
  return statelessKernel(globalAveragePool<double>);
}

}  // namespace

void registerPoolKernels(CpuKernelRegistry& r) {
  r.add("MaxPool", makePool<true>);
  r.add("AveragePool", makePool<false>);
  r.add("GlobalAveragePool", makeGlobalAveragePool);
}

}  // namespace ds::cpu
