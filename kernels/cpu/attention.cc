// FusedAttention and FusedAttentionGrad (ir/ops/attention.cc) on the CPU: one
// (batch, head) pair per work item, the probabilities of one query row at a time
// (never a [Tq, Tk] matrix). Dot products, the weighted sums of V, the row's max
// and its exponentials exp(S − max), exp(S − L) are in the operands' type, as the
// MatMul and Softmax kernels they replace compute them (vectorised: f32 for f32,
// with cpu_util.h's exp; f64 and <cmath> for the f64 oracle); the softmax sum, L =
// max + log(sum), D and dS in double. The gradient recomputes the probabilities
// from the statistics L, as flash attention's backward does:
//   P[i,j] = exp(S[i,j] − L[i]),  D[i] = Σ_d dY[i,d]·Y[i,d],
//   dV[j] += P[i,j]·dY[i],  dS[i,j] = P[i,j]·(dY[i]·V[j] − D[i]),
//   dQ[i] += scale·dS[i,j]·K[j],  dK[j] += scale·dS[i,j]·Q[i].
// Q, K and V may be one packed tensor (ir/ops/attention.cc), and then so are their
// gradients. 16-bit steps run through promotion (kernels/cpu/promote16.h).
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "kernels/attention_dims.h"
#include "kernels/cpu/cpu_util.h"
#include "kernels/cpu/nn.h"

namespace ds::cpu {
namespace {

// Where element (b, t, h) of an operand of T tokens and head size n starts: `row`
// elements between tokens, from `offset` (Q, K and V in their own [B, T, H, n]
// tensors, or packed in one [B, T, 3, H, n]).
struct Rows {
  int64_t len, n, row, offset;
  int64_t at(int64_t b, int64_t t, int64_t h) const { return offset + (b * len + t) * row + h * n; }
};

template <typename T>
double dot(const T* a, const T* b, int64_t n) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t d = 0; d < n; ++d) s += a[d] * b[d];
  return static_cast<double>(s);
}

// x[j] = exp(x[j] + shift) over n elements.
template <typename T>
void expShifted(T* x, T shift, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    if constexpr (std::is_same_v<T, float>)
      x[j] = fastExp(x[j] + shift);
    else
      x[j] = std::exp(x[j] + shift);
  }
}

// acc[e] += w·x[e] over n elements.
template <typename T>
void axpy(T* acc, T w, const T* x, int64_t n) {
#pragma omp simd
  for (int64_t e = 0; e < n; ++e) acc[e] += w * x[e];
}

class AttentionGeometry {
 public:
  explicit AttentionGeometry(const KernelContext& ctx)
      : dims_(attentionDimsOf(ctx)),
        q_{dims_.q_len, dims_.head, dims_.q_row, dims_.q_offset},
        k_{dims_.kv_len, dims_.head, dims_.k_row, dims_.k_offset},
        v_{dims_.kv_len, dims_.value_head, dims_.v_row, dims_.v_offset},
        y_{dims_.q_len, dims_.value_head, dims_.y_row(), 0} {}

  // Keys query i attends to: [0, keys(i)).
  int64_t keys(int64_t i) const { return dims_.causal ? i + 1 : dims_.kv_len; }
  // Runs fn(b, h) for every (batch, head) pair, in parallel.
  template <typename F>
  void forEachHead(F&& fn) const {
    parallelChunks(
        dims_.batch * dims_.heads,
        [&](int64_t begin, int64_t end) {
          for (int64_t bh = begin; bh < end; ++bh) fn(bh / dims_.heads, bh % dims_.heads);
        },
        1);
  }

  const AttentionDims& dims() const { return dims_; }
  const Rows& q() const { return q_; }
  const Rows& k() const { return k_; }
  const Rows& v() const { return v_; }
  const Rows& y() const { return y_; }

 private:
  AttentionDims dims_;
  Rows q_, k_, v_, y_;
};

// FusedAttention(Q, K, V) -> Y, L.
template <typename T, typename L>
class FusedAttentionKernel : public CpuKernel {
 public:
  explicit FusedAttentionKernel(const KernelContext& ctx) : g_(ctx) {}

  void run(const KernelContext& ctx) override {
    const T* q = ctx.input(0).as<T>();
    const T* k = g_.dims().packed ? q : ctx.input(1).as<T>();
    const T* v = g_.dims().packed ? q : ctx.input(2).as<T>();
    T* y = ctx.output(0).as<T>();
    L* stats = ctx.output(1).as<L>();
    const AttentionDims& d = g_.dims();
    g_.forEachHead([&](int64_t b, int64_t h) {
      std::vector<T> p(static_cast<size_t>(d.kv_len));
      std::vector<T> acc(static_cast<size_t>(d.value_head));
      for (int64_t i = 0; i < d.q_len; ++i) {
        const int64_t keys = g_.keys(i);
        T max = -std::numeric_limits<T>::infinity();
        for (int64_t j = 0; j < keys; ++j) {
          p[j] =
              static_cast<T>(d.scale * dot(q + g_.q().at(b, i, h), k + g_.k().at(b, j, h), d.head));
          max = std::max(max, p[j]);
        }
        expShifted(p.data(), -max, keys);
        double sum = 0.0;
        std::fill(acc.begin(), acc.end(), T(0));
        for (int64_t j = 0; j < keys; ++j) {
          sum += p[j];
          axpy(acc.data(), p[j], v + g_.v().at(b, j, h), d.value_head);
        }
        T* yi = y + g_.y().at(b, i, h);
        for (int64_t e = 0; e < d.value_head; ++e) yi[e] = static_cast<T>(acc[e] / sum);
        stats[(b * d.heads + h) * d.q_len + i] = static_cast<L>(max + std::log(sum));
      }
    });
  }

 private:
  AttentionGeometry g_;
};

// FusedAttentionGrad(dY, Q, K, V, Y, L) -> dQ, dK, dV, or (dY, QKV, Y, L) -> dQKV.
template <typename T, typename L>
class FusedAttentionGradKernel : public CpuKernel {
 public:
  explicit FusedAttentionGradKernel(const KernelContext& ctx) : g_(ctx) {}

  void run(const KernelContext& ctx) override {
    const T* dy = ctx.input(0).as<T>();
    const AttentionDims& d = g_.dims();
    const T* q = ctx.input(1).as<T>();
    const T* k = d.packed ? q : ctx.input(2).as<T>();
    const T* v = d.packed ? q : ctx.input(3).as<T>();
    const size_t after = d.packed ? 2 : 4;  // Y, then L
    const T* y = ctx.input(after).as<T>();
    const L* stats = ctx.input(after + 1).as<L>();
    T* dq = ctx.output(0).as<T>();
    T* dk = d.packed ? dq : ctx.output(1).as<T>();
    T* dv = d.packed ? dq : ctx.output(2).as<T>();
    g_.forEachHead([&](int64_t b, int64_t h) {
      std::vector<T> dk_acc(static_cast<size_t>(d.kv_len * d.head), T(0));
      std::vector<T> dv_acc(static_cast<size_t>(d.kv_len * d.value_head), T(0));
      std::vector<T> dq_acc(static_cast<size_t>(d.head));
      std::vector<T> p(static_cast<size_t>(d.kv_len));
      for (int64_t i = 0; i < d.q_len; ++i) {
        const T* qi = q + g_.q().at(b, i, h);
        const T* dyi = dy + g_.y().at(b, i, h);
        const auto l = static_cast<T>(stats[(b * d.heads + h) * d.q_len + i]);
        const double di = dot(dyi, y + g_.y().at(b, i, h), d.value_head);
        const int64_t keys = g_.keys(i);
        for (int64_t j = 0; j < keys; ++j)
          p[j] = static_cast<T>(d.scale * dot(qi, k + g_.k().at(b, j, h), d.head));
        expShifted(p.data(), -l, keys);  // P[i, j]
        std::fill(dq_acc.begin(), dq_acc.end(), T(0));
        for (int64_t j = 0; j < keys; ++j) {
          const T* kj = k + g_.k().at(b, j, h);
          const double ds = p[j] * (dot(dyi, v + g_.v().at(b, j, h), d.value_head) - di) * d.scale;
          axpy(dv_acc.data() + j * d.value_head, p[j], dyi, d.value_head);
          axpy(dq_acc.data(), static_cast<T>(ds), kj, d.head);
          axpy(dk_acc.data() + j * d.head, static_cast<T>(ds), qi, d.head);
        }
        T* dqi = dq + g_.q().at(b, i, h);
        for (int64_t e = 0; e < d.head; ++e) dqi[e] = static_cast<T>(dq_acc[e]);
      }
      for (int64_t j = 0; j < d.kv_len; ++j) {
        for (int64_t e = 0; e < d.head; ++e)
          dk[g_.k().at(b, j, h) + e] = static_cast<T>(dk_acc[j * d.head + e]);
        for (int64_t e = 0; e < d.value_head; ++e)
          dv[g_.v().at(b, j, h) + e] = static_cast<T>(dv_acc[j * d.value_head + e]);
      }
    });
  }

 private:
  AttentionGeometry g_;
};

template <template <typename, typename> class Kernel>
std::unique_ptr<CpuKernel> makeAttention(const KernelContext& ctx, size_t q) {
  if (requireF32OrF64(ctx, q) == DType::F32) return std::make_unique<Kernel<float, float>>(ctx);
  return std::make_unique<Kernel<double, double>>(ctx);
}

}  // namespace

void registerAttentionKernels(CpuKernelRegistry& r) {
  r.add("FusedAttention",
        [](const KernelContext& ctx) { return makeAttention<FusedAttentionKernel>(ctx, 0); });
  r.add("FusedAttentionGrad",
        [](const KernelContext& ctx) { return makeAttention<FusedAttentionGradKernel>(ctx, 1); });
}

}  // namespace ds::cpu
