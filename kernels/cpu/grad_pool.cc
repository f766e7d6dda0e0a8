// Pooling backward: MaxPoolGrad(dY, X) -> dX routes each output's gradient to
// the first maximum of its window (taps in row-major order; a NaN wins like in
// the forward kernel; a window of -inf routes to its first tap), as PyTorch does.
// AveragePoolGrad(dY) -> dX spreads dY / divisor over each window's taps, with the
// forward kernel's divisor: taps inside the explicit padding with
// count_include_pad (never the extra ceil_mode taps), taps inside the input
// otherwise. OpenMP runs over (n, c) planes, which never share dX elements; the
// per-dim ranges of in-input taps are tabulated in the factory.
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/grad_util.h"
#include "kernels/cpu/nn.h"

namespace ds::cpu {

namespace {

template <typename T, bool kMax>
class PoolGradKernel : public CpuKernel {
 public:
  PoolGradKernel(const Window& w, bool count_include_pad)
      : w_(w.as3d()), count_include_pad_(count_include_pad) {
    for (size_t d = 0; d < 3; ++d) taps_[d] = tapTable(w_, d);
  }

  void run(const KernelContext& ctx) override {
    const T* dy = ctx.input(0).as<T>();
    const T* x = kMax ? ctx.input(1).as<T>() : nullptr;
    T* dx = ctx.output(0).as<T>();
    int64_t planes = w_.n * w_.c_in, in_size = w_.inSize(), out_size = w_.outSize();
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < planes; ++p) {
      T* dxp = dx + p * in_size;
      std::fill_n(dxp, in_size, T(0));
      const T* dyp = dy + p * out_size;
      for (int64_t o = 0; o < out_size; ++o) {
        int64_t od = o / (w_.out[1] * w_.out[2]), oh = o / w_.out[2] % w_.out[1],
                ow = o % w_.out[2];
        if constexpr (kMax)
          routeMax(x + p * in_size, dxp, dyp[o], od, oh, ow);
        else
          spreadAverage(dxp, dyp[o], od, oh, ow);
      }
    }
  }

 private:
  // Window bounds of output (od, oh, ow): base input index and in-input tap range per dim.
  void bounds(int64_t od, int64_t oh, int64_t ow, int64_t* base, int64_t* lo, int64_t* hi) const {
    const int64_t o[3] = {od, oh, ow};
    for (int d = 0; d < 3; ++d) {
      base[d] = o[d] * w_.strides[d] - w_.pad_begin[d];
      lo[d] = taps_[d].lo[o[d]];
      hi[d] = taps_[d].hi[o[d]];
    }
  }

  // Calls fn(flat input index) for every in-input tap, in row-major tap order.
  template <typename Fn>
  void forTaps(const int64_t* base, const int64_t* lo, const int64_t* hi, Fn&& fn) const {
    for (int64_t kd = lo[0]; kd < hi[0]; ++kd) {
      int64_t id = base[0] + kd * w_.dilations[0];
      for (int64_t kh = lo[1]; kh < hi[1]; ++kh) {
        int64_t row = (id * w_.in[1] + base[1] + kh * w_.dilations[1]) * w_.in[2] + base[2];
        for (int64_t kw = lo[2]; kw < hi[2]; ++kw) fn(row + kw * w_.dilations[2]);
      }
    }
  }

  void routeMax(const T* xp, T* dxp, T g, int64_t od, int64_t oh, int64_t ow) const {
    int64_t base[3], lo[3], hi[3];
    bounds(od, oh, ow, base, lo, hi);
    int64_t best_at = -1;
    T best = -std::numeric_limits<T>::infinity();
    forTaps(base, lo, hi, [&](int64_t i) {
      if (best_at < 0) best_at = i;  // the first tap, should every value be -inf
      if (xp[i] > best || std::isnan(xp[i])) {
        best = xp[i];
        best_at = i;
      }
    });
    if (best_at >= 0) dxp[best_at] += g;
  }

  void spreadAverage(T* dxp, T g, int64_t od, int64_t oh, int64_t ow) const {
    int64_t base[3], lo[3], hi[3];
    bounds(od, oh, ow, base, lo, hi);
    const int64_t o[3] = {od, oh, ow};
    double count = 1.0;
    for (int d = 0; d < 3; ++d)
      count *= static_cast<double>(count_include_pad_ ? taps_[d].padded[o[d]] : hi[d] - lo[d]);
    const T share = static_cast<T>(static_cast<double>(g) / count);
    forTaps(base, lo, hi, [&](int64_t i) { dxp[i] += share; });
  }

  Window w_;
  bool count_include_pad_;
  TapTable taps_[3];
};

template <bool kMax>
std::unique_ptr<CpuKernel> makePoolGrad(const KernelContext& ctx) {
  DType t = requireF32OrF64(ctx, 0);
  const Shape& x = ctx.output(0).shape();
  Window w = forwardWindow(ctx, x, ctx.input(0).shape(), ctx.ints("kernel_shape"));
  if (ctx.output(0).numel() == 0) return noopKernel();
  bool include_pad = !kMax && ctx.i("count_include_pad") != 0;
  if (t == DType::F32) return std::make_unique<PoolGradKernel<float, kMax>>(w, include_pad);
  return std::make_unique<PoolGradKernel<double, kMax>>(w, include_pad);
}

}  // namespace

void registerPoolGradKernels(CpuKernelRegistry& r) {
  r.add("MaxPoolGrad", makePoolGrad<true>);
  r.add("AveragePoolGrad", makePoolGrad<false>);
}

}  // namespace ds::cpu
