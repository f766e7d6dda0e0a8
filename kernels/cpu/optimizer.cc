// Fused optimizer steps on the CPU, element-wise and in place (the outputs are the
// parameter's and its states' own memory). The per-element math is
// kernels/optimizer_math.h's, shared with the CUDA kernels: torch.optim.SGD,
// DeepSpeed's Adam, Lion, torch.optim.Adagrad and DeepSpeed's LAMB in the master's
// type with explicit FMAs. A clipped gradient is scaled in that type first, as
// PyTorch's in-place grad.mul_ stores it.
// The steps read 16-bit gradients and write the rounded 16-bit copy themselves (their
// mixed-precision form), so they are exempt from 16-bit promotion (promote16.h).
// Also ClipCoef (DeepSpeed's clip_grad_norm_), ZerosLike and offload's Copy.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "ir/float16.h"
#include "kernels/cpu/kernel.h"
#include "kernels/optimizer_math.h"

namespace ds::cpu {
namespace {

// The optional scalar input i (f32), or `fallback` when absent.
double optionalScalar(const KernelContext& c, size_t i, double fallback) {
  return c.hasInput(i) ? static_cast<double>(*c.input(i).as<float>()) : fallback;
}

// The overflow check (input i): a non-finite value skips the step. The outputs are
// the inputs' own memory in plans; a kernel run out of place copies them over.
// Outputs [0, updated) are the parameter and its states, in input order.
bool skipStep(const KernelContext& c, size_t check, size_t updated) {
  if (!c.hasInput(check) || std::isfinite(*c.input(check).as<float>())) return false;
  for (size_t o = 0; o < std::min(updated, c.outputs.size()); ++o) {
    const TensorView& in = c.input(o == 0 ? 0 : 4 + (o - 1));
    if (c.output(o).data != in.data) std::memcpy(c.output(o).data, in.data, in.bytes());
  }
  return true;
}

// How a 16-bit operand of a mixed-precision optimizer step is stored: not at all (the
// gradient is the parameter's type, or no rounded copy is written), IEEE half or
// bfloat16 bits.
enum class Bits16 { None, Half, BFloat };

Bits16 bits16(DType t) {
  return t == DType::F16 ? Bits16::Half : t == DType::BF16 ? Bits16::BFloat : Bits16::None;
}

// n 16-bit values widened to f32, and f32 values rounded to 16 bits: F16C's
// eight-at-a-time conversions for halves, a shift (and its rounding) for bfloat16.
void widen16(Bits16 kind, const uint16_t* src, float* dst, int64_t n) {
  if (kind == Bits16::Half) return halvesToFloats(src, dst, n);
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16ToFloat(src[i]);
}

void round16(Bits16 kind, const float* src, uint16_t* dst, int64_t n) {
  if (kind == Bits16::Half) return floatsToHalves(src, dst, n);
  for (int64_t i = 0; i < n; ++i) dst[i] = floatToBf16(src[i]);
}

// A skipped step (overflow) still writes the rounded copy (output `index`, when
// there is one): the unchanged master's.
template <typename T>
void roundUnchanged(const KernelContext& c, size_t index) {
  if constexpr (std::is_same_v<T, float>) {
    if (c.outputs.size() <= index) return;
    round16(bits16(c.output(index).dtype()), c.input(0).as<float>(), c.output(index).as<uint16_t>(),
            c.input(0).numel());
  }
}

// Elements in blocks of this many, in parallel: a block's 16-bit gradient is widened
// (exactly) into a buffer first, and its updated parameters rounded to the 16-bit
// copy after (from the stored f32 values: what Cast computes), so the update's loop
// stays vectorized.
constexpr int64_t kBlock = 4096;

// Elements [begin, end) of the step's gradient (input 1) in the master's type T:
// the gradient itself, or a 16-bit one widened (exactly) into `widened`.
template <typename T>
const T* blockGradient(const KernelContext& c, Bits16 grad16, int64_t begin, int64_t end,
                       T* widened) {
  if constexpr (std::is_same_v<T, float>)
    if (grad16 != Bits16::None) {
      widen16(grad16, c.input(1).as<uint16_t>() + begin, widened, end - begin);
      return widened;
    }
  return c.input(1).as<T>() + begin;
}

// A step with at most one state per element (SGD's optional velocity, Lion's
// exp_avg, Adagrad's sum) and the overflow check at input 7: update(p, state, g)
// per element, `state` null without one, g already scaled. Elements in blocks
// (kBlock), a 16-bit gradient widened and the rounded copy written per block.
template <typename T, typename Update>
void oneStateStep(const KernelContext& c, const Update& update) {
  const size_t updated = c.hasInput(4) ? 2 : 1;  // the parameter and its state
  if (skipStep(c, 7, updated)) {
    roundUnchanged<T>(c, updated);
    return;
  }
  const int64_t n = c.input(0).numel();
  const T* p = c.input(0).as<T>();
  const T scale = static_cast<T>(optionalScalar(c, 5, 1.0));
  T* p_out = c.output(0).as<T>();
  const T* state = c.hasInput(4) ? c.input(4).as<T>() : nullptr;
  T* state_out = state ? c.output(1).as<T>() : nullptr;
  const Bits16 grad16 = bits16(c.input(1).dtype());
  uint16_t* rounded = c.outputs.size() > updated ? c.output(updated).as<uint16_t>() : nullptr;
  if (!std::is_same_v<T, float> && (grad16 != Bits16::None || rounded))
    c.fail("a 16-bit gradient or rounded copy needs an f32 parameter");
  const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for if (n > 32768)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t begin = b * kBlock, end = std::min(n, begin + kBlock);
    T widened[kBlock];
    const T* g = blockGradient<T>(c, grad16, begin, end, widened);
    for (int64_t i = begin; i < end; ++i) {
      T pi = p[i], si = state ? state[i] : T(0);
      update(pi, state ? &si : nullptr, g[i - begin] * scale);
      p_out[i] = pi;
      if (state) state_out[i] = si;
    }
    if constexpr (std::is_same_v<T, float>)
      if (rounded)
        round16(bits16(c.output(updated).dtype()), p_out + begin, rounded + begin, end - begin);
  }
}

template <typename T>
void sgdStep(const KernelContext& c) {
  optimizer_math::SgdCoefficients<T> k;
  k.lr = static_cast<T>(*c.input(2).as<float>());
  k.momentum = static_cast<T>(optionalScalar(c, 6, c.f("momentum")));
  k.one_minus_dampening = static_cast<T>(1 - c.f("dampening"));
  k.weight_decay = static_cast<T>(c.f("weight_decay"));
  k.nesterov = c.i("nesterov") != 0;
  k.first_step = *c.input(3).as<int64_t>() <= 1;
  oneStateStep<T>(c,
                  [&k](T& p, T* velocity, T g) { optimizer_math::sgdUpdate(k, p, velocity, g); });
}

template <typename T>
void lionStep(const KernelContext& c) {
  const auto k = optimizer_math::lionCoefficients<T>(*c.input(2).as<float>(),
                                                     optionalScalar(c, 6, c.f("beta1")),
                                                     c.f("beta2"), c.f("weight_decay"));
  oneStateStep<T>(c, [&k](T& p, T* m, T g) { optimizer_math::lionUpdate(k, p, *m, g); });
}

template <typename T>
void adagradStep(const KernelContext& c) {
  const auto k = optimizer_math::adagradCoefficients<T>(
      *c.input(2).as<float>(), static_cast<long long>(*c.input(3).as<int64_t>()), c.f("lr_decay"),
      c.f("eps"), c.f("weight_decay"), c.f("initial_accumulator_value"));
  oneStateStep<T>(c, [&k](T& p, T* sum, T g) { optimizer_math::adagradUpdate(k, p, *sum, g); });
}

// Adam over the elements, one loop per (clipped, AdamW) combination so that
// its body has no branch and vectorizes (omp simd: in place, every element is read
// before it is written at the same index, so no iteration depends on another), in
// blocks (kBlock).
template <typename T>
struct AdamLoop {
  const T *p, *m, *v;
  const void* g;
  Bits16 grad16 = Bits16::None, round16_to = Bits16::None;
  T *p_out, *m_out, *v_out;
  uint16_t* rounded;  // the fourth output, when round_to
  optimizer_math::AdamCoefficients<T> k;
  T scale;

  // Elements [begin, end); g holds their gradients (g[0] is element begin's).
  template <bool kScaled, bool kDecoupled>
  void update(int64_t begin, int64_t end, const T* g) const {
    // Locals, not members, in the loop: the vectorizer cannot hoist loads through this.
    const T *p = this->p + begin, *m = this->m + begin, *v = this->v + begin;
    T *p_out = this->p_out + begin, *m_out = this->m_out + begin, *v_out = this->v_out + begin;
    const optimizer_math::AdamCoefficients<T> k = this->k;
    const T scale = this->scale;
    const int64_t n = end - begin;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      T pi = p[i], mi = m[i], vi = v[i];
      optimizer_math::adamUpdate<kDecoupled>(k, pi, mi, vi, kScaled ? g[i] * scale : g[i]);
      p_out[i] = pi;
      m_out[i] = mi;
      v_out[i] = vi;
    }
  }

  template <bool kScaled, bool kDecoupled>
  void run(int64_t n) const {
    const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for if (n > 32768)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t begin = b * kBlock, end = std::min(n, begin + kBlock);
      if constexpr (std::is_same_v<T, float>) {
        float widened[kBlock];
        const float* grad = static_cast<const float*>(g) + begin;
        if (grad16 != Bits16::None) {
          widen16(grad16, static_cast<const uint16_t*>(g) + begin, widened, end - begin);
          grad = widened;
        }
        update<kScaled, kDecoupled>(begin, end, grad);
        if (rounded) round16(round16_to, p_out + begin, rounded + begin, end - begin);
      } else {
        update<kScaled, kDecoupled>(begin, end, static_cast<const T*>(g) + begin);
      }
    }
  }

  void dispatch(int64_t n, bool scaled, bool decoupled) const {
    if (scaled)
      decoupled ? run<true, true>(n) : run<true, false>(n);
    else
      decoupled ? run<false, true>(n) : run<false, false>(n);
  }
};

template <typename T>
void adamStep(const KernelContext& c) {
  if (skipStep(c, 8, 3)) {
    roundUnchanged<T>(c, 3);
    return;
  }
  const int64_t n = c.input(0).numel();
  const auto step = static_cast<long long>(*c.input(3).as<int64_t>());
  AdamLoop<T> a;
  a.p = c.input(0).as<T>();
  a.g = c.input(1).data;
  a.m = c.input(4).as<T>();
  a.v = c.input(5).as<T>();
  a.p_out = c.output(0).as<T>();
  a.m_out = c.output(1).as<T>();
  a.v_out = c.output(2).as<T>();
  a.rounded = c.outputs.size() > 3 ? c.output(3).as<uint16_t>() : nullptr;
  a.k = optimizer_math::adamCoefficients<T>(
      *c.input(2).as<float>(), optionalScalar(c, 7, c.f("beta1")), c.f("beta2"), c.f("eps"),
      c.f("weight_decay"), step, c.i("bias_correction") != 0);
  a.scale = static_cast<T>(optionalScalar(c, 6, 1.0));
  const bool scaled = c.hasInput(6), decoupled = c.i("adam_w_mode") != 0;
  a.grad16 = bits16(c.input(1).dtype());
  a.round16_to = a.rounded ? bits16(c.output(3).dtype()) : Bits16::None;
  if (!std::is_same_v<T, float> && (a.grad16 != Bits16::None || a.rounded))
    c.fail("a 16-bit gradient or rounded copy needs an f32 parameter");
  a.dispatch(n, scaled, decoupled);
}

// LAMB over the elements in two passes of blocks (kBlock): the first moves the
// moments and sums, per block in double, the squares of the parameter and of its
// update direction; the block sums are added in block order (the same norms
// whatever the threads), and the second pass steps the parameter by the trust
// ratio, writing the rounded copy. The block sums live in the kernel: no
// allocation per step.
template <typename T>
class LambKernel : public CpuKernel {
 public:
  explicit LambKernel(const KernelContext& c)
      : sums_(2 * static_cast<size_t>((c.input(0).numel() + kBlock - 1) / kBlock)) {
    if (!std::is_same_v<T, float> &&
        (bits16(c.input(1).dtype()) != Bits16::None || c.outputs.size() > 3))
      c.fail("a 16-bit gradient or rounded copy needs an f32 parameter");
  }

  void run(const KernelContext& c) override {
    if (skipStep(c, 8, 3)) {
      roundUnchanged<T>(c, 3);
      return;
    }
    const auto k = optimizer_math::lambCoefficients<T>(
        *c.input(2).as<float>(), optionalScalar(c, 7, c.f("beta1")), c.f("beta2"), c.f("eps"),
        c.f("weight_decay"), static_cast<long long>(*c.input(3).as<int64_t>()),
        c.i("bias_correction") != 0, c.i("eps_inside_sqrt") != 0);
    moveMoments(c, k);
    double p_sum_sq = 0, u_sum_sq = 0;
    for (size_t b = 0; b < sums_.size(); b += 2) {
      p_sum_sq += sums_[b];
      u_sum_sq += sums_[b + 1];
    }
    const T trust = static_cast<T>(
        optimizer_math::lambTrustRatio(p_sum_sq, u_sum_sq, c.f("min_coeff"), c.f("max_coeff")));
    stepParameter(c, k, k.step_size * trust);
  }

 private:
  void moveMoments(const KernelContext& c, const optimizer_math::LambCoefficients<T>& k) {
    const int64_t n = c.input(0).numel();
    const T* p = c.input(0).as<T>();
    const T *m = c.input(4).as<T>(), *v = c.input(5).as<T>();
    T *m_out = c.output(1).as<T>(), *v_out = c.output(2).as<T>();
    const T scale = static_cast<T>(optionalScalar(c, 6, 1.0));
    const Bits16 grad16 = bits16(c.input(1).dtype());
    const int64_t blocks = static_cast<int64_t>(sums_.size() / 2);
#pragma omp parallel for if (n > 32768)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t begin = b * kBlock, end = std::min(n, begin + kBlock);
      T widened[kBlock];
      const T* g = blockGradient<T>(c, grad16, begin, end, widened);
      double p_sq = 0, u_sq = 0;
      for (int64_t i = begin; i < end; ++i) {
        T mi = m[i], vi = v[i];
        const T u = optimizer_math::lambMoments(k, p[i], mi, vi, g[i - begin] * scale);
        m_out[i] = mi;
        v_out[i] = vi;
        p_sq += static_cast<double>(p[i]) * static_cast<double>(p[i]);
        u_sq += static_cast<double>(u) * static_cast<double>(u);
      }
      sums_[2 * b] = p_sq;
      sums_[2 * b + 1] = u_sq;
    }
  }

  void stepParameter(const KernelContext& c, const optimizer_math::LambCoefficients<T>& k, T step) {
    const int64_t n = c.input(0).numel();
    const T* p = c.input(0).as<T>();
    const T *m = c.output(1).as<T>(), *v = c.output(2).as<T>();
    T* p_out = c.output(0).as<T>();
    uint16_t* rounded = c.outputs.size() > 3 ? c.output(3).as<uint16_t>() : nullptr;
    const int64_t blocks = static_cast<int64_t>(sums_.size() / 2);
#pragma omp parallel for if (n > 32768)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t begin = b * kBlock, end = std::min(n, begin + kBlock);
      for (int64_t i = begin; i < end; ++i)
        p_out[i] = optimizer_math::fusedMultiplyAdd(
            -step, optimizer_math::lambDirection(k, p[i], m[i], v[i]), p[i]);
      if constexpr (std::is_same_v<T, float>)
        if (rounded)
          round16(bits16(c.output(3).dtype()), p_out + begin, rounded + begin, end - begin);
    }
  }

  std::vector<double> sums_;  // per block: Σ p², Σ u²
};

std::unique_ptr<CpuKernel> lambKernel(const KernelContext& ctx) {
  if (ctx.input(0).dtype() == DType::F32) return std::make_unique<LambKernel<float>>(ctx);
  if (ctx.input(0).dtype() == DType::F64) return std::make_unique<LambKernel<double>>(ctx);
  ctx.fail("dtype ", dtypeName(ctx.input(0).dtype()), " is not supported");
}

void clipCoef(const KernelContext& c) {
  const double norm = *c.input(0).as<float>();
  const double coef = c.f("max_norm") / (norm + 1e-6);
  *c.output(0).as<float>() = coef < 1.0 ? static_cast<float>(coef) : 1.0f;
}

void zerosLike(const KernelContext& c) {
  std::memset(c.output(0).data, 0, c.output(0).bytes());
}

template <void (*F32)(const KernelContext&), void (*F64)(const KernelContext&)>
std::unique_ptr<CpuKernel> byDtype(const KernelContext& ctx) {
  if (ctx.input(0).dtype() == DType::F32) return statelessKernel(F32);
  if (ctx.input(0).dtype() == DType::F64) return statelessKernel(F64);
  ctx.fail("dtype ", dtypeName(ctx.input(0).dtype()), " is not supported");
}

}  // namespace

void registerOptimizerKernels(CpuKernelRegistry& r) {
  r.add("SgdStep", byDtype<sgdStep<float>, sgdStep<double>>);
  r.add("AdamStep", byDtype<adamStep<float>, adamStep<double>>);
  r.add("LionStep", byDtype<lionStep<float>, lionStep<double>>);
  r.add("AdagradStep", byDtype<adagradStep<float>, adagradStep<double>>);
  r.add("LambStep", lambKernel);
  r.add("ClipCoef", [](const KernelContext&) { return statelessKernel(clipCoef); });
  r.add("ZerosLike", [](const KernelContext&) { return statelessKernel(zerosLike); });
  // Host and device memory are one on the CPU: offload's copies are plain copies.
  r.add("Copy", [](const KernelContext&) {
    return statelessKernel([](const KernelContext& c) {
      if (c.output(0).data != c.input(0).data)
        std::memcpy(c.output(0).data, c.input(0).data, c.input(0).bytes());
    });
  });
}

}  // namespace ds::cpu
