// Gemm (alpha, beta, transA, transB, C broadcast) and MatMul (numpy semantics:
// 1-D operands, broadcast batch dims; transA/transB as strides, no copies; constant
// 2-D weights packed once into oneDNN's preferred layout; bias adds and activations
// that follow fused as post-ops, kernels/cpu/fusion.h). f32 runs one oneDNN
// matmul primitive built in the factory (transposes as strided descriptors, alpha as output scale,
// beta*C through a sum post-op on Y prefilled with C); f64 runs GemmF64.
// WeightBiasGrad runs the MatMul and ReduceSum kernels it fuses, one after the other.
#include <algorithm>
#include <memory>
#include <type_traits>

#include "ir/ops/shape_helpers.h"
#include "kernels/cpu/dnnl_util.h"
#include "kernels/cpu/gemm_ref.h"
#include "kernels/cpu/nn.h"
#include "kernels/weight_bias_grad_parts.h"

namespace ds::cpu {

namespace {

using dnnl::memory;

// Y = alpha * A·B (+ Y when `sum`), then `epilogue` (never with `sum`: only Gemm
// sums, only MatMul fuses), as one oneDNN matmul; descriptors may be batched.
DnnlCall matmulCall(const memory::desc& a, const void* a_data, const memory::desc& b,
                    const void* b_data, const memory::desc& y, void* y_data, float alpha, bool sum,
                    const std::vector<Epilogue>& epilogue = {}) {
  std::vector<std::pair<int, memory>> post_args;
  dnnl::primitive_attr attr = epilogueAttr(epilogue, y.dims(), &post_args);
  if (alpha != 1.0f) attr.set_output_scales(0, {alpha});
  if (sum) {
    dnnl::post_ops ops;
    ops.append_sum(1.0f);
    attr.set_post_ops(ops);
  }
  dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, y), attr, dnnlEngine());
  DnnlCall call(dnnl::matmul(pd), pd);
  call.arg(DNNL_ARG_SRC, wrapMemory(a, a_data));
  call.arg(DNNL_ARG_WEIGHTS, wrapMemory(b, b_data));
  call.arg(DNNL_ARG_DST, wrapMemory(y, y_data));
  for (const auto& [which, mem] : post_args) call.arg(which, mem);
  return call;
}

// A MatMul whose weights are the same in every run (TensorView::constant): the
// primitive picks its preferred weight layout, and the weights are reordered into
// it once, at the first run (2-3x faster matmuls on AVX-512 than plain row-major
// weights: bench/RESULTS.md).
struct PackedMatMul {
  DnnlCall call;
  DnnlCall pack;                // the one-time reorder; invalid when none is needed
  std::vector<uint8_t> packed;  // the weights in the primitive's layout
  bool packed_yet = false;

  PackedMatMul(const memory::desc& a, const void* a_data, const memory::desc& b, const void* b_data,
               const memory::desc& y, void* y_data, float alpha,
               const std::vector<Epilogue>& epilogue) {
    std::vector<std::pair<int, memory>> post_args;
    dnnl::primitive_attr attr = epilogueAttr(epilogue, y.dims(), &post_args);
    if (alpha != 1.0f) attr.set_output_scales(0, {alpha});
    dnnl::matmul::primitive_desc pd(
        dnnl::matmul::desc(
            a, memory::desc(b.dims(), memory::data_type::f32, memory::format_tag::any), y),
        attr, dnnlEngine());
    memory weights = wrapMemory(b, b_data);
    if (pd.weights_desc() != b) {
      packed.resize(pd.weights_desc().get_size());
      memory dst = wrapMemory(pd.weights_desc(), packed.data());
      pack = reorderCall(weights, dst);
      weights = dst;
    }
    call = DnnlCall(dnnl::matmul(pd), pd);
    call.arg(DNNL_ARG_SRC, wrapMemory(a, a_data));
    call.arg(DNNL_ARG_WEIGHTS, weights);
    call.arg(DNNL_ARG_DST, wrapMemory(y, y_data));
    for (const auto& [which, mem] : post_args) call.arg(which, mem);
  }

  void execute() {
    if (!packed_yet && pack.valid()) pack.execute();
    packed_yet = true;
    call.execute();
  }
};

// ---- Gemm ----

template <typename T>
class GemmKernel : public CpuKernel {
 public:
  explicit GemmKernel(const KernelContext& ctx) {
    const Shape& a = ctx.input(0).shape();
    bool ta = ctx.i("transA") != 0, tb = ctx.i("transB") != 0;
    m_ = ta ? a[1] : a[0];
    k_ = ta ? a[0] : a[1];
    n_ = ctx.output(0).shape()[1];
    alpha_ = ctx.f("alpha");
    beta_ = ctx.hasInput(2) ? ctx.f("beta") : 0.0;
    if (ctx.hasInput(2)) {
      Shape c = ctx.input(2).shape();
      while (c.size() < 2) c.insert(c.begin(), 1);
      c_rows_ = c[0];
      c_cols_ = c[1];
    }
    if (k_ == 0) return;
    int64_t a_rs = ta ? 1 : k_, a_cs = ta ? m_ : 1, b_rs = tb ? 1 : n_, b_cs = tb ? k_ : 1;
    if constexpr (std::is_same_v<T, float>) {
      call_ =
          matmulCall(stridedDesc({m_, k_}, {a_rs, a_cs}), ctx.input(0).data,
                     stridedDesc({k_, n_}, {b_rs, b_cs}), ctx.input(1).data, plainDesc({m_, n_}),
                     ctx.output(0).data, static_cast<float>(alpha_), beta_ != 0.0);
    } else {
      ref_ = GemmF64(m_, n_, k_, a_rs, a_cs, b_rs, b_cs);
    }
  }

  void run(const KernelContext& ctx) override {
    T* y = ctx.output(0).as<T>();
    if (beta_ != 0.0) {
      fillC(ctx.input(2).as<T>(), y);
    } else if (k_ == 0) {
      std::fill(y, y + m_ * n_, T(0));
    }
    if (k_ == 0) return;
    if constexpr (std::is_same_v<T, float>) {
      call_.execute();
    } else {
      ref_.run(ctx.input(0).as<T>(), ctx.input(1).as<T>(), y, alpha_, beta_ != 0.0);
    }
  }

 private:
  // y = beta * broadcast(C).
  void fillC(const T* c, T* y) const {
    int64_t rows = c_rows_, cols = c_cols_, n = n_;
    double beta = beta_;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < m_; ++i) {
      const T* crow = c + (rows > 1 ? i * cols : 0);
      for (int64_t j = 0; j < n; ++j) y[i * n + j] = static_cast<T>(beta * crow[cols > 1 ? j : 0]);
    }
  }

  int64_t m_ = 0, n_ = 0, k_ = 0, c_rows_ = 1, c_cols_ = 1;
  double alpha_ = 1.0, beta_ = 0.0;
  DnnlCall call_;
  GemmF64 ref_;
};

// ---- MatMul ----

// MatMul operands as batched matrices: 1-D operands gain a unit dim, transposed
// operands (transA/transB) have their last two dims swapped, and both are padded
// with leading unit batch dims to the output's batch rank.
struct MatMulGeom {
  int64_t m = 1, n = 1, k = 1;
  Shape a, b, y;  // logical [batch..., m, k], [batch..., k, n], [batch..., m, n]
  bool trans_a = false, trans_b = false;  // stored as [batch..., k, m] / [batch..., n, k]
  int64_t batches = 1;
};

MatMulGeom matmulGeom(const KernelContext& ctx) {
  MatMulGeom g;
  g.a = ctx.input(0).shape();
  g.b = ctx.input(1).shape();
  g.trans_a = ctx.i("transA") != 0;
  g.trans_b = ctx.i("transB") != 0;
  if (g.trans_a) std::swap(g.a[g.a.size() - 1], g.a[g.a.size() - 2]);
  if (g.trans_b) std::swap(g.b[g.b.size() - 1], g.b[g.b.size() - 2]);
  if (g.a.size() == 1) g.a.insert(g.a.begin(), 1);
  if (g.b.size() == 1) g.b.push_back(1);
  size_t rank = std::max(g.a.size(), g.b.size());
  g.a.insert(g.a.begin(), rank - g.a.size(), 1);
  g.b.insert(g.b.begin(), rank - g.b.size(), 1);
  g.m = g.a[rank - 2];
  g.k = g.a[rank - 1];
  g.n = g.b[rank - 1];
  for (size_t d = 0; d + 2 < rank; ++d) {
    g.y.push_back(std::max(g.a[d], g.b[d]));
    g.batches *= g.y.back();
  }
  g.y.push_back(g.m);
  g.y.push_back(g.n);
  return g;
}

// A logical [batch..., rows, cols] operand stored row-major, or stored as
// [batch..., cols, rows] when `transposed`.
memory::desc operandDesc(const Shape& logical, bool transposed) {
  size_t rank = logical.size();
  int64_t rows = logical[rank - 2], cols = logical[rank - 1];
  memory::dims strides(rank);
  strides[rank - 2] = transposed ? 1 : cols;
  strides[rank - 1] = transposed ? rows : 1;
  int64_t stride = rows * cols;
  for (size_t d = rank - 2; d-- > 0;) {
    strides[d] = stride;
    stride *= logical[d];
  }
  return stridedDesc(toDims(logical), strides);
}

// MatMul's alpha; 1 for plans written before MatMul had one.
double alphaOf(const KernelContext& ctx) {
  return ctx.attrs.count("alpha") ? ctx.f("alpha") : 1.0;
}

template <typename T>
class MatMulKernel : public CpuKernel {
 public:
  explicit MatMulKernel(const KernelContext& ctx) : g_(matmulGeom(ctx)), alpha_(alphaOf(ctx)) {
    if (g_.k == 0) return;
    if constexpr (std::is_same_v<T, float>) {
      // Constant 2-D weights and a row-major A: A's batch dims fold into its rows, a
      // plain 2-D matmul whose packed weight layout oneDNN's fast kernels want.
      if (ctx.input(1).constant && ctx.input(1).rank() == 2 && !g_.trans_a) {
        const int64_t rows = g_.batches * g_.m;
        packed_ = std::make_unique<PackedMatMul>(
            plainDesc({rows, g_.k}), ctx.input(0).data, operandDesc(Shape{g_.k, g_.n}, g_.trans_b),
            ctx.input(1).data, plainDesc({rows, g_.n}), ctx.output(0).data,
            static_cast<float>(alpha_), ctx.epilogue);
      } else
        call_ =
            matmulCall(operandDesc(g_.a, g_.trans_a), ctx.input(0).data,
                       operandDesc(g_.b, g_.trans_b), ctx.input(1).data, plainDesc(toDims(g_.y)),
                       ctx.output(0).data, static_cast<float>(alpha_), false, ctx.epilogue);
    } else {
      Shape batch(g_.y.begin(), g_.y.end() - 2);
      a_off_ = broadcastIndices(Shape(g_.a.begin(), g_.a.end() - 2), batch);
      b_off_ = broadcastIndices(Shape(g_.b.begin(), g_.b.end() - 2), batch);
      ref_ = GemmF64(g_.m, g_.n, g_.k, g_.trans_a ? 1 : g_.k, g_.trans_a ? g_.m : 1,
                     g_.trans_b ? 1 : g_.n, g_.trans_b ? g_.k : 1);
    }
  }

  void run(const KernelContext& ctx) override {
    T* y = ctx.output(0).as<T>();
    if (g_.k == 0) {
      std::fill(y, y + ctx.output(0).numel(), T(0));
      return;
    }
    if constexpr (std::is_same_v<T, float>) {
      if (packed_)
        packed_->execute();
      else
        call_.execute();
    } else {
      const T* a = ctx.input(0).as<T>();
      const T* b = ctx.input(1).as<T>();
      for (int64_t i = 0; i < g_.batches; ++i)
        ref_.run(a + a_off_[i] * g_.m * g_.k, b + b_off_[i] * g_.k * g_.n, y + i * g_.m * g_.n,
                 alpha_, false);
    }
  }

 private:
  MatMulGeom g_;
  double alpha_;
  std::vector<int64_t> a_off_, b_off_;  // per output batch: batch index into A / B
  DnnlCall call_;
  std::unique_ptr<PackedMatMul> packed_;  // constant 2-D weights
  GemmF64 ref_;
};

template <template <typename> class K>
std::unique_ptr<CpuKernel> makeTyped(const KernelContext& ctx) {
  DType t = requireF32OrF64(ctx, 0);
  if (ctx.output(0).numel() == 0) return noopKernel();
  if (t == DType::F32) return std::make_unique<K<float>>(ctx);
  return std::make_unique<K<double>>(ctx);
}

// ---- WeightBiasGrad ----

// WeightBiasGrad(A, B){bias_input}: the MatMul and ReduceSum kernels of its parts
// (kernels/weight_bias_grad_parts.h), one after the other. Fusing gains a GPU a pass
// over the gradient; oneDNN has no such epilogue to gain from.
class WeightBiasGradKernel : public CpuKernel {
 public:
  explicit WeightBiasGradKernel(const KernelContext& ctx)
      : parts_(weightBiasGradParts(ctx)), product_(part(parts_.product)), sum_(part(parts_.sum)) {}

  void run(const KernelContext&) override {
    product_->run(parts_.product);
    sum_->run(parts_.sum);
  }

 private:
  static std::unique_ptr<CpuKernel> part(const KernelContext& ctx) {
    return (*CpuKernelRegistry::instance().find(ctx.op))(ctx);
  }

  WeightBiasGradParts parts_;  // the kernels may keep references to their contexts
  std::unique_ptr<CpuKernel> product_, sum_;
};

}  // namespace

void registerMatMulKernels(CpuKernelRegistry& r) {
  r.add("Gemm", makeTyped<GemmKernel>);
  r.add("MatMul", makeTyped<MatMulKernel>);
  r.add("WeightBiasGrad", [](const KernelContext& ctx) -> std::unique_ptr<CpuKernel> {
    return std::make_unique<WeightBiasGradKernel>(ctx);
  });
  // Bias adds and activations as oneDNN post-ops of f32 matrix products (no 1-D
  // operands, whose dims the output drops; no empty K, which skips the primitive).
  r.allowEpilogue("MatMul", [](const KernelContext& ctx, const Epilogue& next) {
    return ctx.input(0).dtype() == DType::F32 && ctx.input(0).rank() >= 2 &&
           ctx.input(1).rank() >= 2 && ctx.input(0).numel() > 0 && ctx.input(1).numel() > 0 &&
           epilogueFitsPostOps(ctx, next);
  });
}

}  // namespace ds::cpu
