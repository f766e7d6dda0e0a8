// The per-element arithmetic of the optimizer steps (SGD, Adam, Lion, Adagrad,
// LAMB), shared by the CPU kernels (kernels/cpu/optimizer.cc, also optimizer
// offload's host steps) and the CUDA kernels (kernels/cuda/nn.cu), so that every
// backend computes the same bits (but for LAMB's norms, whose sums each backend
// orders its own way, each the same every run).
//
// The math type M is the master's: f32 for f32 and mixed-precision plans, as in
// torch.optim and DeepSpeed's FusedAdam and CPU Adam; f64 for f64 plans. Every
// multiply-add is an explicit fused multiply-add: the CPU build never contracts
// (ISO C++), nvcc does, so nothing is left to contract. Division and square root
// are IEEE's on both. The per-step scalars (bias corrections, decay factors) are
// computed in double once, with the same operations on both (nn.cu is compiled
// with --fmad=false, so nvcc fuses none of them), and rounded to M.
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define DS_HOST_DEVICE __host__ __device__
#else
#define DS_HOST_DEVICE
#endif

namespace ds::optimizer_math {

template <typename M>
DS_HOST_DEVICE inline M fusedMultiplyAdd(M a, M b, M c) {
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(M) == 4)
    return fmaf(a, b, c);
  else
    return fma(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

template <typename M>
DS_HOST_DEVICE inline M squareRoot(M x) {
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(M) == 4)
    return sqrtf(x);
  else
    return sqrt(x);
#else
  return std::sqrt(x);
#endif
}

// x^n for a step count n >= 0 by repeated squaring: IEEE multiplies only, so host
// and device agree to the bit (their pow functions may differ in the last place).
DS_HOST_DEVICE inline double power(double x, long long n) {
  double result = 1.0;
  for (; n > 0; n >>= 1) {
    if (n & 1) result *= x;
    x *= x;
  }
  return result;
}

// One step's scalars of Adam's moments, which Adam and LAMB share.
template <typename M>
struct MomentCoefficients {
  M b1, one_minus_b1, b2, one_minus_b2, eps;
  M weight_decay;
};

template <typename M>
DS_HOST_DEVICE inline MomentCoefficients<M> momentCoefficients(double b1, double b2, double eps,
                                                               double weight_decay) {
  MomentCoefficients<M> c;
  c.b1 = static_cast<M>(b1);
  c.one_minus_b1 = static_cast<M>(1 - b1);
  c.b2 = static_cast<M>(b2);
  c.one_minus_b2 = static_cast<M>(1 - b2);
  c.eps = static_cast<M>(eps);
  c.weight_decay = static_cast<M>(weight_decay);
  return c;
}

// Adam's bias corrections of step `step`: 1 − β^t each, or 1 without correction.
struct BiasCorrections {
  double first, second;
};
DS_HOST_DEVICE inline BiasCorrections biasCorrections(double b1, double b2, long long step,
                                                      bool bias_correction) {
  if (!bias_correction) return {1.0, 1.0};
  return {1 - power(b1, step), 1 - power(b2, step)};
}

// One step's Adam scalars; weight_decay is L2's (adam_w_mode off), added to the
// gradient.
template <typename M>
struct AdamCoefficients : MomentCoefficients<M> {
  M lr_decay;      // AdamW: lr · weight_decay, taken off the weight
  M step_size;     // lr / (1 − β1^t)
  M inv_sqrt_bc2;  // 1 / sqrt(1 − β2^t)
};

template <typename M>
DS_HOST_DEVICE inline AdamCoefficients<M> adamCoefficients(double lr, double b1, double b2,
                                                           double eps, double weight_decay,
                                                           long long step, bool bias_correction) {
  const BiasCorrections bc = biasCorrections(b1, b2, step, bias_correction);
  AdamCoefficients<M> c;
  static_cast<MomentCoefficients<M>&>(c) = momentCoefficients<M>(b1, b2, eps, weight_decay);
  c.lr_decay = static_cast<M>(lr * weight_decay);
  c.step_size = static_cast<M>(lr / bc.first);
  c.inv_sqrt_bc2 = static_cast<M>(1 / squareRoot(bc.second));
  return c;
}

// Adam on one element (p, m, v) with gradient g (already scaled): AdamW's decoupled
// decay (kDecoupled) or L2 added to the gradient. DeepSpeed's CPU Adam's order:
// m = β1 m + (1−β1) g, v = β2 v + (1−β2) g², p −= step_size · m / (√v / √bc2 + ε).
template <bool kDecoupled, typename M>
DS_HOST_DEVICE inline void adamUpdate(const AdamCoefficients<M>& c, M& p, M& m, M& v, M g) {
  if constexpr (!kDecoupled) g = fusedMultiplyAdd(c.weight_decay, p, g);
  m = fusedMultiplyAdd(c.b1, m, c.one_minus_b1 * g);
  v = fusedMultiplyAdd(c.b2, v, c.one_minus_b2 * (g * g));
  if constexpr (kDecoupled) p = fusedMultiplyAdd(-c.lr_decay, p, p);
  const M denom = fusedMultiplyAdd(squareRoot(v), c.inv_sqrt_bc2, c.eps);
  p = fusedMultiplyAdd(-c.step_size, m / denom, p);
}

// One step's SGD scalars (torch.optim.SGD).
template <typename M>
struct SgdCoefficients {
  M lr, momentum, one_minus_dampening, weight_decay;
  bool nesterov, first_step;  // the first step starts the velocity at the gradient
};

// SGD on one element p with gradient g (already scaled) and, when `velocity` is
// not null, its momentum buffer.
template <typename M>
DS_HOST_DEVICE inline void sgdUpdate(const SgdCoefficients<M>& c, M& p, M* velocity, M g) {
  M d = c.weight_decay != 0 ? fusedMultiplyAdd(c.weight_decay, p, g) : g;
  if (velocity) {
    const M b =
        c.first_step ? d : fusedMultiplyAdd(c.momentum, *velocity, c.one_minus_dampening * d);
    *velocity = b;
    d = c.nesterov ? fusedMultiplyAdd(c.momentum, b, d) : b;
  }
  p = fusedMultiplyAdd(-c.lr, d, p);
}

// One step's Lion scalars (Chen et al. 2023, "Symbolic Discovery of Optimization
// Algorithms"; DeepSpeed's FusedLion and CPU Lion).
template <typename M>
struct LionCoefficients {
  M b1, one_minus_b1, b2, one_minus_b2, lr;
  M decay;  // 1 − lr · weight_decay: the decoupled decay's factor
};

template <typename M>
DS_HOST_DEVICE inline LionCoefficients<M> lionCoefficients(double lr, double b1, double b2,
                                                           double weight_decay) {
  LionCoefficients<M> c;
  c.b1 = static_cast<M>(b1);
  c.one_minus_b1 = static_cast<M>(1 - b1);
  c.b2 = static_cast<M>(b2);
  c.one_minus_b2 = static_cast<M>(1 - b2);
  c.lr = static_cast<M>(lr);
  c.decay = static_cast<M>(1 - lr * weight_decay);
  return c;
}

// Lion on one element (p, m) with gradient g (already scaled): the update is the
// sign of an interpolation of m and g, then m moves toward g with β2. The sign of 0
// is 0, as the paper's and torch.sign's: a parameter with no gradient and no
// momentum (an unused embedding row) stays put (DeepSpeed's FusedLion moves it by
// +lr). p · 1 is p, so no weight decay changes nothing.
template <typename M>
DS_HOST_DEVICE inline void lionUpdate(const LionCoefficients<M>& c, M& p, M& m, M g) {
  const M interpolated = fusedMultiplyAdd(c.b1, m, c.one_minus_b1 * g);
  const M sign = static_cast<M>((interpolated > M(0)) - (interpolated < M(0)));
  p = fusedMultiplyAdd(-c.lr, sign, p * c.decay);
  m = fusedMultiplyAdd(c.b2, m, c.one_minus_b2 * g);
}

// One step's Adagrad scalars (torch.optim.Adagrad, which DeepSpeed's "Adagrad"
// builds without offload).
template <typename M>
struct AdagradCoefficients {
  M step_size;  // lr / (1 + (step − 1) · lr_decay)
  M eps, weight_decay;
  M initial;        // the sum's value before the first step
  bool first_step;  // the sum starts at `initial`
};

template <typename M>
DS_HOST_DEVICE inline AdagradCoefficients<M> adagradCoefficients(double lr, long long step,
                                                                 double lr_decay, double eps,
                                                                 double weight_decay,
                                                                 double initial) {
  AdagradCoefficients<M> c;
  c.step_size = static_cast<M>(lr / (1 + static_cast<double>(step - 1) * lr_decay));
  c.eps = static_cast<M>(eps);
  c.weight_decay = static_cast<M>(weight_decay);
  c.initial = static_cast<M>(initial);
  c.first_step = step <= 1;
  return c;
}

// Adagrad on one element (p, sum) with gradient g (already scaled): L2 decay added
// to the gradient, sum += g², p −= step_size · g / (√sum + ε).
template <typename M>
DS_HOST_DEVICE inline void adagradUpdate(const AdagradCoefficients<M>& c, M& p, M& sum, M g) {
  g = fusedMultiplyAdd(c.weight_decay, p, g);
  sum = fusedMultiplyAdd(g, g, c.first_step ? c.initial : sum);
  p = fusedMultiplyAdd(-c.step_size, g / (squareRoot(sum) + c.eps), p);
}

// One step's LAMB scalars (DeepSpeed's FusedLamb): Adam's moments, the bias
// correction carried by the step size, and a trust ratio per parameter.
template <typename M>
struct LambCoefficients : MomentCoefficients<M> {
  M step_size;  // lr · √(1 − β2^t) / (1 − β1^t); lr without bias correction
  bool eps_inside_sqrt;
};

template <typename M>
DS_HOST_DEVICE inline LambCoefficients<M> lambCoefficients(double lr, double b1, double b2,
                                                           double eps, double weight_decay,
                                                           long long step, bool bias_correction,
                                                           bool eps_inside_sqrt) {
  const BiasCorrections bc = biasCorrections(b1, b2, step, bias_correction);
  LambCoefficients<M> c;
  static_cast<MomentCoefficients<M>&>(c) = momentCoefficients<M>(b1, b2, eps, weight_decay);
  c.step_size = static_cast<M>(lr * squareRoot(bc.second) / bc.first);
  c.eps_inside_sqrt = eps_inside_sqrt;
  return c;
}

// LAMB's update direction of one element from its new moments:
// m / (√v + ε) (or m / √(v + ε)) + weight_decay · p.
template <typename M>
DS_HOST_DEVICE inline M lambDirection(const LambCoefficients<M>& c, M p, M m, M v) {
  const M denom = c.eps_inside_sqrt ? squareRoot(v + c.eps) : squareRoot(v) + c.eps;
  return fusedMultiplyAdd(c.weight_decay, p, m / denom);
}

// LAMB's first pass on one element: the moments move as Adam's; returns the update
// direction, whose norm the trust ratio takes.
template <typename M>
DS_HOST_DEVICE inline M lambMoments(const LambCoefficients<M>& c, M p, M& m, M& v, M g) {
  m = fusedMultiplyAdd(c.b1, m, c.one_minus_b1 * g);
  v = fusedMultiplyAdd(c.b2, v, c.one_minus_b2 * (g * g));
  return lambDirection(c, p, m, v);
}

// The trust ratio ‖p‖ / ‖u‖ from the parameter's and its update direction's squared
// L2 norms, lowered to max_coeff, then raised to min_coeff, in FusedLamb's order;
// 1 when either norm is 0.
DS_HOST_DEVICE inline double lambTrustRatio(double p_sum_sq, double u_sum_sq, double min_coeff,
                                            double max_coeff) {
  if (p_sum_sq == 0 || u_sum_sq == 0) return 1.0;
  double ratio = squareRoot(p_sum_sq) / squareRoot(u_sum_sq);
  if (ratio > max_coeff) ratio = max_coeff;
  if (ratio < min_coeff) ratio = min_coeff;
  return ratio;
}

}  // namespace ds::optimizer_math
