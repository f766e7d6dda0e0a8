// Device kernels of pooling (forward and backward), Gemm's C broadcast, Gather
// and its gradient, and the fused optimizer steps (SGD, Adam, Lion, Adagrad, LAMB; see
// launch.h). Backward kernels gather (one thread per dX element sums what flows
// into it) rather than scatter with atomics, so results are deterministic and equal
// the CPU's order.
// Pooling is templated on the storage type S (f32, f16, bf16): f32 math, each
// 16-bit output rounded once, as the promoted f32 kernel would round it.
#include <algorithm>
#include <type_traits>

#include "kernels/cuda/device_util.h"
#include "kernels/optimizer_math.h"

namespace ds::cuda {
namespace {

// Along dim d of output index o: the in-input taps [lo, hi) and the taps inside
// the explicit padding (AveragePool's divisor with count_include_pad); the CPU's
// tapTable (kernels/cpu/window.cc) computes the same per index.
__device__ inline void taps(const PoolArgs& a, int d, int64_t o, int64_t* lo, int64_t* hi,
                            int64_t* padded) {
  int64_t l = a.kernel[d], h = 0, p = 0;
  for (int64_t k = 0; k < a.kernel[d]; ++k) {
    int64_t pos = o * a.strides[d] - a.pad_begin[d] + k * a.dilations[d];
    if (pos >= 0 && pos < a.in[d]) {
      l = min(l, k);
      h = k + 1;
    }
    if (pos >= -a.pad_begin[d] && pos < a.in[d] + a.pad_end[d]) ++p;
  }
  *lo = min(l, h);
  *hi = h;
  *padded = p;
}

struct PoolWindow {
  int64_t base[3], lo[3], hi[3];
  double count, count_padded;
};

__device__ inline PoolWindow poolWindow(const PoolArgs& a, const int64_t o[3]) {
  PoolWindow w;
  w.count = w.count_padded = 1.0;
  for (int d = 0; d < 3; ++d) {
    int64_t padded;
    taps(a, d, o[d], &w.lo[d], &w.hi[d], &padded);
    w.base[d] = o[d] * a.strides[d] - a.pad_begin[d];
    w.count *= static_cast<double>(w.hi[d] - w.lo[d]);
    w.count_padded *= static_cast<double>(padded);
  }
  return w;
}

__device__ inline void unflatten(const int64_t* dims, int64_t i, int64_t out[3]) {
  out[2] = i % dims[2];
  out[1] = i / dims[2] % dims[1];
  out[0] = i / (dims[1] * dims[2]);
}

// Flat input index of the first maximum of window `w` in plane xp (NaN wins, a
// window of -inf gives its first tap, an empty window -1).
template <typename S>
__device__ inline int64_t argMax(const PoolArgs& a, const PoolWindow& w, const S* xp) {
  int64_t best_at = -1;
  float best = -INFINITY;
  for (int64_t kd = w.lo[0]; kd < w.hi[0]; ++kd)
    for (int64_t kh = w.lo[1]; kh < w.hi[1]; ++kh)
      for (int64_t kw = w.lo[2]; kw < w.hi[2]; ++kw) {
        int64_t i =
            ((w.base[0] + kd * a.dilations[0]) * a.in[1] + w.base[1] + kh * a.dilations[1]) *
                a.in[2] +
            w.base[2] + kw * a.dilations[2];
        float v = toFloat(xp[i]);
        if (best_at < 0) best_at = i;
        if (v > best || isnan(v)) {
          best = v;
          best_at = i;
        }
      }
  return best_at;
}

template <typename S>
__global__ void poolKernel(PoolArgs a, bool max_pool, const S* x, S* y) {
  const int64_t out_size = a.out[0] * a.out[1] * a.out[2], in_size = a.in[0] * a.in[1] * a.in[2];
  for (int64_t t = globalIndex(); t < a.planes * out_size; t += globalStride()) {
    int64_t p = t / out_size, o[3];
    unflatten(a.out, t - p * out_size, o);
    PoolWindow w = poolWindow(a, o);
    const S* xp = x + p * in_size;
    if (max_pool) {
      int64_t at = argMax(a, w, xp);
      y[t] = at < 0 ? fromFloat<S>(-INFINITY) : xp[at];
      continue;
    }
    double sum = 0.0;
    for (int64_t kd = w.lo[0]; kd < w.hi[0]; ++kd)
      for (int64_t kh = w.lo[1]; kh < w.hi[1]; ++kh)
        for (int64_t kw = w.lo[2]; kw < w.hi[2]; ++kw)
          sum += toFloat(
              xp[((w.base[0] + kd * a.dilations[0]) * a.in[1] + w.base[1] + kh * a.dilations[1]) *
                     a.in[2] +
                 w.base[2] + kw * a.dilations[2]]);
    y[t] = fromFloat<S>(static_cast<float>(sum / (a.count_include_pad ? w.count_padded : w.count)));
  }
}

// Output indices along dim d whose tap k lands on input index i (-1 when none).
__device__ inline int64_t outFor(const PoolArgs& a, int d, int64_t i, int64_t k) {
  int64_t t = i + a.pad_begin[d] - k * a.dilations[d];
  if (t < 0 || t % a.strides[d] != 0) return -1;
  t /= a.strides[d];
  return t < a.out[d] ? t : -1;
}

// dX[i] = Σ over windows containing input i of their share of dY, visiting windows
// in row-major output order as the CPU's scatter loop adds them.
template <typename S>
__global__ void poolGradKernel(PoolArgs a, bool max_pool, const S* dy, const S* x, S* dx) {
  const int64_t out_size = a.out[0] * a.out[1] * a.out[2], in_size = a.in[0] * a.in[1] * a.in[2];
  for (int64_t t = globalIndex(); t < a.planes * in_size; t += globalStride()) {
    int64_t p = t / in_size, flat = t - p * in_size, i[3];
    unflatten(a.in, flat, i);
    const S* dyp = dy + p * out_size;
    const S* xp = max_pool ? x + p * in_size : nullptr;
    float acc = 0.0f;
    // Larger taps belong to earlier windows: descending k visits outputs in ascending order.
    for (int64_t kd = a.kernel[0] - 1; kd >= 0; --kd) {
      const int64_t od = outFor(a, 0, i[0], kd);
      if (od < 0) continue;
      for (int64_t kh = a.kernel[1] - 1; kh >= 0; --kh) {
        const int64_t oh = outFor(a, 1, i[1], kh);
        if (oh < 0) continue;
        for (int64_t kw = a.kernel[2] - 1; kw >= 0; --kw) {
          const int64_t ow = outFor(a, 2, i[2], kw);
          if (ow < 0) continue;
          const int64_t o[3] = {od, oh, ow};
          PoolWindow w = poolWindow(a, o);
          float g = toFloat(dyp[(od * a.out[1] + oh) * a.out[2] + ow]);
          if (max_pool) {
            if (argMax(a, w, xp) == flat) acc += g;
          } else {
            acc += static_cast<float>(static_cast<double>(g) /
                                      (a.count_include_pad ? w.count_padded : w.count));
          }
        }
      }
    }
    dx[t] = fromFloat<S>(acc);
  }
}

__global__ void gemmFillCKernel(const float* c, float* y, int64_t m, int64_t n, int64_t c_rows,
                                int64_t c_cols, float beta) {
  for (int64_t t = globalIndex(); t < m * n; t += globalStride()) {
    int64_t i = t / n, j = t - i * n;
    y[t] = static_cast<float>(static_cast<double>(beta) *
                              c[(c_rows > 1 ? i * c_cols : 0) + (c_cols > 1 ? j : 0)]);
  }
}

// Y (16-bit S) = round(acc + beta·C) with C (S) broadcast: f32 math, one rounding.
template <typename S>
__global__ void gemmAddCRoundKernel(const float* acc, const S* c, S* y, int64_t m, int64_t n,
                                    int64_t c_rows, int64_t c_cols, float beta) {
  for (int64_t t = globalIndex(); t < m * n; t += globalStride()) {
    int64_t i = t / n, j = t - i * n;
    const float cv = toFloat(c[(c_rows > 1 ? i * c_cols : 0) + (c_cols > 1 ? j : 0)]);
    y[t] = fromFloat<S>(acc[t] + static_cast<float>(static_cast<double>(beta) * cv));
  }
}

__device__ inline int64_t indexAt(const void* indices, bool indices32, int64_t n, int64_t dim) {
  int64_t v =
      indices32 ? static_cast<const int32_t*>(indices)[n] : static_cast<const int64_t*>(indices)[n];
  return v < 0 ? v + dim : v;
}

// One thread per output element of E; rows are row_elems elements of E.
template <typename E>
__global__ void gatherKernel(const E* data, const void* indices, bool indices32, E* out,
                             int64_t outer, int64_t dim, int64_t count, int64_t row_elems) {
  for (int64_t t = globalIndex(); t < outer * count * row_elems; t += globalStride()) {
    int64_t j = t % row_elems, on = t / row_elems, n = on % count, o = on / count;
    int64_t idx = indexAt(indices, indices32, n, dim);
    out[t] = idx >= 0 && idx < dim ? data[(o * dim + idx) * row_elems + j] : E(0);
  }
}

// Thread (o, j, part) adds, in index order, the dY rows' column j of every index n
// whose row idx is in its part (idx % parts == part): each dX element has one
// thread, which adds what the CPU adds in the CPU's order (deterministic, to the
// bit), while parts x columns threads share the work (an embedding's 768 columns
// alone would be a few blocks). A warp's threads read the same index (a broadcast).
__global__ void gatherGradKernel(const float* dy, const void* indices, bool indices32, float* dx,
                                 int64_t outer, int64_t dim, int64_t count, int64_t inner,
                                 int64_t parts) {
  const int64_t mask = parts - 1;  // parts: a power of two
  for (int64_t t = globalIndex(); t < outer * parts * inner; t += globalStride()) {
    const int64_t j = t % inner, op = t / inner, part = op & mask, o = op / parts;
    const float* dy_o = dy + o * count * inner + j;
    float* dx_o = dx + o * dim * inner + j;
    for (int64_t n = 0; n < count; ++n) {
      const int64_t idx = indexAt(indices, indices32, n, dim);
      if ((idx & mask) == part && idx >= 0 && idx < dim) dx_o[idx * inner] += dy_o[n * inner];
    }
  }
}

// The gradient as the update sees it: scaled by the clipping coefficient in f32
// first, as torch's grad.mul_ stores it (kernels/optimizer_math.h has the rest).
__device__ inline float scaledGrad(float g, const float* scale) {
  return scale ? g * *scale : g;
}

// fp16 loss scaling's overflow check: a non-finite value skips the step, whose
// outputs then keep the inputs' values (copied when the step runs out of place).
__device__ inline bool skipStep(const float* check) {
  return check && !isfinite(*check);
}

// G and R as adamKernel's.
template <typename G, typename R>
__global__ void sgdKernel(SgdArgs a, const float* p, const G* g, const float* lr_ptr,
                          const int64_t* step_ptr, const float* buf, const float* grad_scale,
                          const float* momentum_ptr, const float* check, float* p_out,
                          float* buf_out, R* rounded, int64_t n) {
  constexpr bool kRound = !std::is_same_v<R, float>;
  if (skipStep(check)) {
    for (int64_t i = globalIndex(); i < n; i += globalStride()) {
      const float pi = p[i];
      p_out[i] = pi;
      if (buf && buf_out) buf_out[i] = buf[i];
      if constexpr (kRound) rounded[i] = fromFloat<R>(pi);
    }
    return;
  }
  optimizer_math::SgdCoefficients<float> k;
  k.lr = *lr_ptr;
  k.momentum = momentum_ptr ? *momentum_ptr : static_cast<float>(a.momentum);
  k.one_minus_dampening = static_cast<float>(1 - a.dampening);
  k.weight_decay = static_cast<float>(a.weight_decay);
  k.nesterov = a.nesterov;
  k.first_step = *step_ptr <= 1;
  for (int64_t i = globalIndex(); i < n; i += globalStride()) {
    float pi = p[i], velocity = buf ? buf[i] : 0.0f;
    optimizer_math::sgdUpdate(k, pi, buf ? &velocity : nullptr,
                              scaledGrad(toFloat(g[i]), grad_scale));
    p_out[i] = pi;
    if (buf) buf_out[i] = velocity;
    if constexpr (kRound) rounded[i] = fromFloat<R>(pi);
  }
}

// G: the gradient's storage (f32, or mixed precision's 16-bit gradient, widened
// exactly); R: the rounded copy's (float: none written), rounded from the stored f32
// parameter as Cast would.
template <typename G, typename R, bool kDecoupled>
__global__ void adamKernel(AdamArgs a, const float* p, const G* g, const float* lr_ptr,
                           const int64_t* step_ptr, const float* m, const float* v,
                           const float* grad_scale, const float* beta1_ptr, const float* check,
                           float* p_out, float* m_out, float* v_out, R* rounded, int64_t n) {
  constexpr bool kRound = !std::is_same_v<R, float>;
  if (skipStep(check)) {
    for (int64_t i = globalIndex(); i < n; i += globalStride()) {
      const float pi = p[i];
      p_out[i] = pi;
      m_out[i] = m[i];
      v_out[i] = v[i];
      if constexpr (kRound) rounded[i] = fromFloat<R>(pi);
    }
    return;
  }
  const optimizer_math::AdamCoefficients<float> k = optimizer_math::adamCoefficients<float>(
      *lr_ptr, beta1_ptr ? *beta1_ptr : a.beta1, a.beta2, a.eps, a.weight_decay,
      static_cast<long long>(*step_ptr), a.bias_correction);
  for (int64_t i = globalIndex(); i < n; i += globalStride()) {
    float pi = p[i], mi = m[i], vi = v[i];
    optimizer_math::adamUpdate<kDecoupled>(k, pi, mi, vi, scaledGrad(toFloat(g[i]), grad_scale));
    p_out[i] = pi;
    m_out[i] = mi;
    v_out[i] = vi;
    if constexpr (kRound) rounded[i] = fromFloat<R>(pi);
  }
}

// Lion's and Adagrad's step scalars, computed on the device from the fed lr, step
// and beta1, and their per-element update (kernels/optimizer_math.h).
struct LionRule {
  LionArgs a;
  using Coefficients = optimizer_math::LionCoefficients<float>;
  __device__ Coefficients coefficients(const float* lr, const int64_t*, const float* beta1) const {
    return optimizer_math::lionCoefficients<float>(*lr, beta1 ? *beta1 : a.beta1, a.beta2,
                                                   a.weight_decay);
  }
  __device__ static void update(const Coefficients& k, float& p, float& m, float g) {
    optimizer_math::lionUpdate(k, p, m, g);
  }
};

struct AdagradRule {
  AdagradArgs a;
  using Coefficients = optimizer_math::AdagradCoefficients<float>;
  __device__ Coefficients coefficients(const float* lr, const int64_t* step, const float*) const {
    return optimizer_math::adagradCoefficients<float>(*lr, static_cast<long long>(*step),
                                                      a.lr_decay, a.eps, a.weight_decay,
                                                      a.initial_accumulator_value);
  }
  __device__ static void update(const Coefficients& k, float& p, float& sum, float g) {
    optimizer_math::adagradUpdate(k, p, sum, g);
  }
};

// A step with one state per element by `Rule`; G and R as adamKernel's.
template <typename Rule, typename G, typename R>
__global__ void oneStateKernel(Rule rule, const float* p, const G* g, const float* lr_ptr,
                               const int64_t* step_ptr, const float* state, const float* grad_scale,
                               const float* momentum_ptr, const float* check, float* p_out,
                               float* state_out, R* rounded, int64_t n) {
  constexpr bool kRound = !std::is_same_v<R, float>;
  if (skipStep(check)) {
    for (int64_t i = globalIndex(); i < n; i += globalStride()) {
      const float pi = p[i];
      p_out[i] = pi;
      state_out[i] = state[i];
      if constexpr (kRound) rounded[i] = fromFloat<R>(pi);
    }
    return;
  }
  const typename Rule::Coefficients k = rule.coefficients(lr_ptr, step_ptr, momentum_ptr);
  for (int64_t i = globalIndex(); i < n; i += globalStride()) {
    float pi = p[i], si = state[i];
    Rule::update(k, pi, si, scaledGrad(toFloat(g[i]), grad_scale));
    p_out[i] = pi;
    state_out[i] = si;
    if constexpr (kRound) rounded[i] = fromFloat<R>(pi);
  }
}

// ---- LAMB: three kernels over a fixed grid, so the sums are the same every run ----

constexpr int kLambMaxBlocks = 1024;  // the final sum is one block's

unsigned lambBlocks(int64_t n) {
  return min(gridFor(n), static_cast<unsigned>(kLambMaxBlocks));
}

__device__ inline optimizer_math::LambCoefficients<float> lambCoefficientsOf(const LambArgs& a,
                                                                             const float* lr,
                                                                             const int64_t* step,
                                                                             const float* beta1) {
  return optimizer_math::lambCoefficients<float>(*lr, beta1 ? *beta1 : a.beta1, a.beta2, a.eps,
                                                 a.weight_decay, static_cast<long long>(*step),
                                                 a.bias_correction, a.eps_inside_sqrt);
}

// The moments, and per block Σ p² and Σ u² (u: the update direction) into sums.
template <typename G>
__global__ void lambMomentsKernel(LambArgs a, const float* p, const G* g, const float* lr,
                                  const int64_t* step, const float* m, const float* v,
                                  const float* grad_scale, const float* beta1, const float* check,
                                  float* m_out, float* v_out, double* sums, int64_t n) {
  __shared__ double shared[32];
  double p_sq = 0.0, u_sq = 0.0;
  if (skipStep(check)) {
    for (int64_t i = globalIndex(); i < n; i += globalStride()) {
      m_out[i] = m[i];
      v_out[i] = v[i];
    }
  } else {
    const auto k = lambCoefficientsOf(a, lr, step, beta1);
    for (int64_t i = globalIndex(); i < n; i += globalStride()) {
      float mi = m[i], vi = v[i];
      const float pi = p[i];
      const float u =
          optimizer_math::lambMoments(k, pi, mi, vi, scaledGrad(toFloat(g[i]), grad_scale));
      m_out[i] = mi;
      v_out[i] = vi;
      p_sq += static_cast<double>(pi) * pi;
      u_sq += static_cast<double>(u) * u;
    }
  }
  p_sq = blockSum(p_sq, shared);
  u_sq = blockSum(u_sq, shared);
  if (threadIdx.x == 0) {
    sums[2 * blockIdx.x] = p_sq;
    sums[2 * blockIdx.x + 1] = u_sq;
  }
}

// One block of kLambMaxBlocks threads: the blocks' sums, added in a fixed order,
// into the trust ratio (sums[2 * kLambMaxBlocks]).
__global__ void lambTrustKernel(LambArgs a, double* sums, unsigned blocks) {
  __shared__ double shared[32];
  const unsigned b = threadIdx.x;
  const double p_sq = blockSum(b < blocks ? sums[2 * b] : 0.0, shared);
  const double u_sq = blockSum(b < blocks ? sums[2 * b + 1] : 0.0, shared);
  if (b == 0)
    sums[2 * kLambMaxBlocks] = optimizer_math::lambTrustRatio(p_sq, u_sq, a.min_coeff, a.max_coeff);
}

// The step by the trust ratio; R as adamKernel's.
template <typename R>
__global__ void lambUpdateKernel(LambArgs a, const float* p, const float* lr, const int64_t* step,
                                 const float* beta1, const float* check, const float* m,
                                 const float* v, const double* trust, float* p_out, R* rounded,
                                 int64_t n) {
  constexpr bool kRound = !std::is_same_v<R, float>;
  const bool skip = skipStep(check);
  const auto k = lambCoefficientsOf(a, lr, step, beta1);
  const float step_size = skip ? 0.0f : k.step_size * static_cast<float>(*trust);
  for (int64_t i = globalIndex(); i < n; i += globalStride()) {
    const float pi = p[i];
    const float next = skip ? pi
                            : optimizer_math::fusedMultiplyAdd(
                                  -step_size, optimizer_math::lambDirection(k, pi, m[i], v[i]), pi);
    p_out[i] = next;
    if constexpr (kRound) rounded[i] = fromFloat<R>(next);
  }
}

__global__ void clipCoefKernel(const float* norm, float* coef, double max_norm) {
  const double c = max_norm / (static_cast<double>(*norm) + 1e-6);
  *coef = c < 1.0 ? static_cast<float>(c) : 1.0f;
}

// ---- 2-D max pooling without dilation, in 32-bit index math (64-bit division
// dominates the general kernels) ----

// Plain tensors are planes of pixels; channels-last ones images of pixels of
// `channels` values, a plane's pixels `step` = channels apart.
struct Pool2d {
  int h_in, w_in, h_out, w_out, kh, kw, sh, sw, ph, pw, planes, channels, step;
  bool nhwc;
  explicit Pool2d(const PoolArgs& a)
      : h_in(static_cast<int>(a.in[1])),
        w_in(static_cast<int>(a.in[2])),
        h_out(static_cast<int>(a.out[1])),
        w_out(static_cast<int>(a.out[2])),
        kh(static_cast<int>(a.kernel[1])),
        kw(static_cast<int>(a.kernel[2])),
        sh(static_cast<int>(a.strides[1])),
        sw(static_cast<int>(a.strides[2])),
        ph(static_cast<int>(a.pad_begin[1])),
        pw(static_cast<int>(a.pad_begin[2])),
        planes(static_cast<int>(a.planes)),
        channels(static_cast<int>(a.channels)),
        step(a.channels_last ? static_cast<int>(a.channels) : 1),
        nhwc(a.channels_last) {}

  // Element t (in storage order) of a tensor of `size` pixels per plane: its
  // plane (n * channels + c in both layouts) and its pixel index in that plane.
  __device__ void locate(int t, int size, int* plane, int* pixel) const {
    if (nhwc) {
      const int c = t % channels, rest = t / channels, n = rest / size;
      *pixel = rest - n * size;
      *plane = n * channels + c;
    } else {
      *plane = t / size;
      *pixel = t - *plane * size;
    }
  }
  // Offset of pixel 0 of plane p in a tensor of `size` pixels per plane (pixel k
  // is `k * step` further).
  __device__ int planeBase(int p, int size) const {
    return nhwc ? p / channels * size * channels + p % channels : p * size;
  }

  // Index in its plane of the first maximum of window (oh, ow) of plane xp, as
  // argMax finds it (row-major taps, NaN wins); -1 for a window of no input.
  template <typename S>
  __device__ int argMax(const S* xp, int oh, int ow) const {
    const int h0 = max(0, oh * sh - ph), h1 = min(h_in, oh * sh - ph + kh);
    const int w0 = max(0, ow * sw - pw), w1 = min(w_in, ow * sw - pw + kw);
    float best = -INFINITY;
    int best_at = -1;
    for (int h = h0; h < h1; ++h)
      for (int w = w0; w < w1; ++w) {
        const float v = toFloat(xp[(h * w_in + w) * step]);
        if (best_at < 0) best_at = h * w_in + w;
        if (v > best || isnan(v)) {
          best = v;
          best_at = h * w_in + w;
        }
      }
    return best_at;
  }
};

// MaxPool: each output the maximum of its window (-inf for a window of no input);
// with `at` (MaxPoolGrad's first phase), the window's argMax instead.
template <typename S>
__global__ void maxPool2dKernel(Pool2d g, const S* x, S* y, int* at) {
  const int out_size = g.h_out * g.w_out, total = g.planes * out_size;
  for (int t = static_cast<int>(globalIndex()); t < total; t += static_cast<int>(globalStride())) {
    int p, o;
    g.locate(t, out_size, &p, &o);
    const int oh = o / g.w_out, ow = o - oh * g.w_out;
    const S* xp = x + g.planeBase(p, g.h_in * g.w_in);
    const int best = g.argMax(xp, oh, ow);
    if (at)
      at[t] = best;
    else
      y[t] = best < 0 ? fromFloat<S>(-INFINITY) : xp[best * g.step];
  }
}

// MaxPoolGrad's second phase: dX[i] sums the dY of the windows whose argMax
// (from the first phase) is i, in ascending output order as the CPU adds them.
template <typename S>
__global__ void maxPool2dGradKernel(Pool2d g, const S* dy, const int* at, S* dx) {
  const int in_size = g.h_in * g.w_in, out_size = g.h_out * g.w_out;
  const int total = g.planes * in_size;
  // Outputs o along a dim whose window [o s - pad, o s - pad + k) holds input i.
  auto first = [](int i, int pad, int k, int stride) {
    const int lo = i + pad - k + 1;
    return lo <= 0 ? 0 : (lo + stride - 1) / stride;
  };
  for (int t = static_cast<int>(globalIndex()); t < total; t += static_cast<int>(globalStride())) {
    int p, flat;
    g.locate(t, in_size, &p, &flat);
    const int ih = flat / g.w_in, iw = flat - ih * g.w_in;
    const int base = g.planeBase(p, out_size);
    const int oh_end = min(g.h_out, (ih + g.ph) / g.sh + 1);
    const int ow_end = min(g.w_out, (iw + g.pw) / g.sw + 1);
    float acc = 0.0f;
    for (int oh = first(ih, g.ph, g.kh, g.sh); oh < oh_end; ++oh)
      for (int ow = first(iw, g.pw, g.kw, g.sw); ow < ow_end; ++ow) {
        const int o = base + (oh * g.w_out + ow) * g.step;
        if (at[o] == flat) acc += toFloat(dy[o]);
      }
    dx[t] = fromFloat<S>(acc);
  }
}

}  // namespace

// The 2-D kernels count in int: below 2^30 elements, adding a grid stride (at most
// 2^28 threads) cannot overflow.
bool isPlainMaxPool2d(const PoolArgs& a) {
  constexpr int64_t kIntCount = int64_t{1} << 30;
  return a.in[0] == 1 && a.out[0] == 1 && a.kernel[0] == 1 && a.dilations[1] == 1 &&
         a.dilations[2] == 1 && a.planes * a.in[1] * a.in[2] < kIntCount &&
         a.planes * a.out[1] * a.out[2] < kIntCount;
}

void pool(const PoolArgs& a, bool max_pool, DType t, const void* x, void* y, cudaStream_t s) {
  int64_t n = a.planes * a.out[0] * a.out[1] * a.out[2];
  if (n == 0) return;
  byFloatType(t, [&](auto tag) {
    using S = decltype(tag);
    if (max_pool && isPlainMaxPool2d(a))
      maxPool2dKernel<<<gridFor(n), kThreads, 0, s>>>(Pool2d(a), static_cast<const S*>(x),
                                                      static_cast<S*>(y), nullptr);
    else
      poolKernel<<<gridFor(n), kThreads, 0, s>>>(a, max_pool, static_cast<const S*>(x),
                                                 static_cast<S*>(y));
  });
}

size_t poolGradScratchBytes(const PoolArgs& a, bool max_pool) {
  if (!max_pool || !isPlainMaxPool2d(a)) return 0;
  return static_cast<size_t>(a.planes * a.out[1] * a.out[2]) * sizeof(int);
}

void poolGrad(const PoolArgs& a, bool max_pool, DType t, const void* dy, const void* x, void* dx,
              void* scratch, cudaStream_t s) {
  int64_t n = a.planes * a.in[0] * a.in[1] * a.in[2];
  if (n == 0) return;
  byFloatType(t, [&](auto tag) {
    using S = decltype(tag);
    if (max_pool && isPlainMaxPool2d(a)) {
      const Pool2d g(a);
      auto* at = static_cast<int*>(scratch);
      maxPool2dKernel<<<gridFor(a.planes * a.out[1] * a.out[2]), kThreads, 0, s>>>(
          g, static_cast<const S*>(x), static_cast<S*>(nullptr), at);
      maxPool2dGradKernel<<<gridFor(n), kThreads, 0, s>>>(g, static_cast<const S*>(dy), at,
                                                          static_cast<S*>(dx));
    } else
      poolGradKernel<<<gridFor(n), kThreads, 0, s>>>(a, max_pool, static_cast<const S*>(dy),
                                                     static_cast<const S*>(x), static_cast<S*>(dx));
  });
}

void gemmFillC(const float* c, float* y, int64_t m, int64_t n, int64_t c_rows, int64_t c_cols,
               float beta, cudaStream_t s) {
  if (m * n > 0)
    gemmFillCKernel<<<gridFor(m * n), kThreads, 0, s>>>(c, y, m, n, c_rows, c_cols, beta);
}

void gemmAddCRound(DType t, const float* acc, const void* c, void* y, int64_t m, int64_t n,
                   int64_t c_rows, int64_t c_cols, float beta, cudaStream_t s) {
  if (m * n == 0) return;
  byFloatType(t, [&](auto tag) {
    using S = decltype(tag);
    gemmAddCRoundKernel<<<gridFor(m * n), kThreads, 0, s>>>(
        acc, static_cast<const S*>(c), static_cast<S*>(y), m, n, c_rows, c_cols, beta);
  });
}

void gather(const void* data, const void* indices, bool indices32, void* out, int64_t outer,
            int64_t dim, int64_t count, int64_t row_bytes, cudaStream_t s) {
  auto launch = [&](auto tag) {
    using E = decltype(tag);
    int64_t row = row_bytes / static_cast<int64_t>(sizeof(E)), total = outer * count * row;
    if (total > 0)
      gatherKernel<<<gridFor(total), kThreads, 0, s>>>(static_cast<const E*>(data), indices,
                                                       indices32, static_cast<E*>(out), outer, dim,
                                                       count, row);
  };
  if (row_bytes % 4 == 0) return launch(uint32_t{});
  if (row_bytes % 2 == 0) return launch(uint16_t{});
  launch(uint8_t{});
}

void gatherGrad(const float* dy, const void* indices, bool indices32, float* dx, int64_t outer,
                int64_t dim, int64_t count, int64_t inner, cudaStream_t s) {
  if (outer * dim * inner == 0) return;
  cudaMemsetAsync(dx, 0, static_cast<size_t>(outer * dim * inner) * sizeof(float), s);
  // About 64K threads in all: parts a power of two, at most 1024 and the rows.
  const int64_t wanted = std::clamp<int64_t>(65536 / std::max<int64_t>(outer * inner, 1), 1,
                                             std::min<int64_t>(dim, 1024));
  int64_t parts = 1;
  while (parts * 2 <= wanted) parts *= 2;
  gatherGradKernel<<<gridFor(outer * parts * inner), kThreads, 0, s>>>(
      dy, indices, indices32, dx, outer, dim, count, inner, parts);
}

namespace {

// fn(G{}, R{}) for a step's gradient storage G and rounded copy's R (float: none):
// mixed precision pairs a 16-bit gradient with a copy rounded to the same type, and
// either may stand alone. Two different 16-bit types call nothing: the factories
// (nn_kernels.cc) reject them at load.
template <typename F>
void withStepTypes(DType grad_type, DType round_to, F&& fn) {
  byFloatType(grad_type, [&](auto grad_tag) {
    using G = decltype(grad_tag);
    byFloatType(round_to, [&](auto round_tag) {
      using R = decltype(round_tag);
      if constexpr (std::is_same_v<G, float> || std::is_same_v<R, float> || std::is_same_v<G, R>)
        fn(G{}, R{});
    });
  });
}

}  // namespace

void sgdStep(const SgdArgs& a, const float* p, const void* g, const float* lr, const int64_t* step,
             const float* buf, const float* grad_scale, const float* momentum, const float* check,
             float* p_out, float* buf_out, void* rounded, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  withStepTypes(a.grad_type, a.round_to, [&](auto grad_tag, auto round_tag) {
    using G = decltype(grad_tag);
    using R = decltype(round_tag);
    sgdKernel<<<gridFor(n), kThreads, 0, s>>>(a, p, static_cast<const G*>(g), lr, step, buf,
                                              grad_scale, momentum, check, p_out, buf_out,
                                              static_cast<R*>(rounded), n);
  });
}

namespace {

// Launches oneStateKernel for the step's gradient and rounded-copy types.
template <typename Rule>
void oneStateStep(const Rule& rule, DType grad_type, DType round_to, const float* p, const void* g,
                  const float* lr, const int64_t* step, const float* state, const float* grad_scale,
                  const float* momentum, const float* check, float* p_out, float* state_out,
                  void* rounded, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  withStepTypes(grad_type, round_to, [&](auto grad_tag, auto round_tag) {
    using G = decltype(grad_tag);
    using R = decltype(round_tag);
    oneStateKernel<Rule, G, R><<<gridFor(n), kThreads, 0, s>>>(
        rule, p, static_cast<const G*>(g), lr, step, state, grad_scale, momentum, check, p_out,
        state_out, static_cast<R*>(rounded), n);
  });
}

}  // namespace

void lionStep(const LionArgs& a, const float* p, const void* g, const float* lr, const float* m,
              const float* grad_scale, const float* beta1, const float* check, float* p_out,
              float* m_out, void* rounded, int64_t n, cudaStream_t s) {
  oneStateStep(LionRule{a}, a.grad_type, a.round_to, p, g, lr, nullptr, m, grad_scale, beta1, check,
               p_out, m_out, rounded, n, s);
}

void adagradStep(const AdagradArgs& a, const float* p, const void* g, const float* lr,
                 const int64_t* step, const float* sum, const float* grad_scale, const float* check,
                 float* p_out, float* sum_out, void* rounded, int64_t n, cudaStream_t s) {
  oneStateStep(AdagradRule{a}, a.grad_type, a.round_to, p, g, lr, step, sum, grad_scale, nullptr,
               check, p_out, sum_out, rounded, n, s);
}

size_t lambWorkspaceBytes(int64_t) {
  return (2 * kLambMaxBlocks + 1) * sizeof(double);
}

void lambStep(const LambArgs& a, const float* p, const void* g, const float* lr,
              const int64_t* step, const float* m, const float* v, const float* grad_scale,
              const float* beta1, const float* check, float* p_out, float* m_out, float* v_out,
              void* rounded, int64_t n, void* workspace, cudaStream_t s) {
  if (n == 0) return;
  auto* sums = static_cast<double*>(workspace);
  const unsigned blocks = lambBlocks(n);
  withStepTypes(a.grad_type, a.round_to, [&](auto grad_tag, auto round_tag) {
    using G = decltype(grad_tag);
    using R = decltype(round_tag);
    lambMomentsKernel<G><<<blocks, kThreads, 0, s>>>(a, p, static_cast<const G*>(g), lr, step, m, v,
                                                     grad_scale, beta1, check, m_out, v_out, sums,
                                                     n);
    lambTrustKernel<<<1, kLambMaxBlocks, 0, s>>>(a, sums, blocks);
    lambUpdateKernel<R><<<gridFor(n), kThreads, 0, s>>>(a, p, lr, step, beta1, check, m_out, v_out,
                                                        sums + 2 * kLambMaxBlocks, p_out,
                                                        static_cast<R*>(rounded), n);
  });
}

void adamStep(const AdamArgs& a, const float* p, const void* g, const float* lr,
              const int64_t* step, const float* m, const float* v, const float* grad_scale,
              const float* beta1, const float* check, float* p_out, float* m_out, float* v_out,
              void* rounded, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  withStepTypes(a.grad_type, a.round_to, [&](auto grad_tag, auto round_tag) {
    using G = decltype(grad_tag);
    using R = decltype(round_tag);
    const auto* gs = static_cast<const G*>(g);
    auto* rs = static_cast<R*>(rounded);
    if (a.adam_w_mode)
      adamKernel<G, R, true><<<gridFor(n), kThreads, 0, s>>>(
          a, p, gs, lr, step, m, v, grad_scale, beta1, check, p_out, m_out, v_out, rs, n);
    else
      adamKernel<G, R, false><<<gridFor(n), kThreads, 0, s>>>(
          a, p, gs, lr, step, m, v, grad_scale, beta1, check, p_out, m_out, v_out, rs, n);
  });
}

void clipCoef(const float* norm, float* coef, double max_norm, cudaStream_t s) {
  clipCoefKernel<<<1, 1, 0, s>>>(norm, coef, max_norm);
}

}  // namespace ds::cuda
