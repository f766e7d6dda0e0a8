// CPU kernels of the element-wise ops: unary math and activations, numpy-
// broadcasting binary arithmetic and comparison, Where, Cast and Dropout. Loops
// are kept flat (contiguous segments of a precomputed broadcast walk) so they
// vectorise; f32 transcendental math uses the branch-free approximations of
// cpu_util.h, f64 uses <cmath>, f16/bf16 compute in float.
#include <cmath>
#include <limits>

#include "kernels/cpu/cpu_util.h"
#include "kernels/cpu/layout.h"
#include "kernels/dropout_rng.h"

namespace ds::cpu {
namespace {

// Transcendental ops pay for threads at smaller sizes than cheap ones.
constexpr int64_t kCheap = kParallelMin;
constexpr int64_t kCostly = 4096;

struct ReluOp {
  template <typename C>
  C operator()(C x) const {
    return select(x < C(0), C(0), x);
  }
};
struct LeakyReluOp {
  double alpha;
  template <typename C>
  C operator()(C x) const {
    return select(x < C(0), static_cast<C>(alpha) * x, x);
  }
};
// Clip: NaN passes (both comparisons are false), and min > max gives max, as
// PyTorch's clamp. Integer inputs take the bounds saturated to their type (an
// absent bound is infinite).
struct ClipOp {
  double lo, hi;
  template <typename C>
  static C bound(double b) {
    if constexpr (std::is_integral_v<C>) {
      if (b <= static_cast<double>(std::numeric_limits<C>::lowest()))
        return std::numeric_limits<C>::lowest();
      if (b >= static_cast<double>(std::numeric_limits<C>::max()))
        return std::numeric_limits<C>::max();
    }
    return static_cast<C>(b);
  }
  template <typename C>
  C operator()(C x) const {
    const C l = bound<C>(lo), h = bound<C>(hi);
    const C raised = select(x < l, l, x);
    return select(h < raised, h, raised);
  }
};
struct SigmoidOp {
  template <typename C>
  C operator()(C x) const {
    if constexpr (std::is_same_v<C, float>) return fastSigmoid(x);
    return C(1) / (C(1) + std::exp(-x));
  }
};
struct TanhOp {
  template <typename C>
  C operator()(C x) const {
    if constexpr (std::is_same_v<C, float>) return fastTanh(x);
    return std::tanh(x);
  }
};
struct ErfOp {
  template <typename C>
  C operator()(C x) const {
    if constexpr (std::is_same_v<C, float>) return fastErf(x);
    return std::erf(x);
  }
};
struct GeluErfOp {
  template <typename C>
  C operator()(C x) const {
    C e = ErfOp{}(x * C(0.70710678118654752440));
    return C(0.5) * x * (C(1) + e);
  }
};
struct GeluTanhOp {
  template <typename C>
  C operator()(C x) const {
    C t = TanhOp{}(C(0.79788456080286535588) * (x + C(0.044715) * x * x * x));
    return C(0.5) * x * (C(1) + t);
  }
};
struct SqrtOp {
  template <typename C>
  C operator()(C x) const {
    return std::sqrt(x);
  }
};
struct LogOp {
  template <typename C>
  C operator()(C x) const {
    return std::log(x);
  }
};
// log(1 + e^x) without overflow: max(x, 0) + log1p(e^-|x|).
struct SoftplusOp {
  template <typename C>
  C operator()(C x) const {
    return std::max(x, C(0)) + std::log1p(std::exp(-std::abs(x)));
  }
};
struct NegOp {
  template <typename C>
  C operator()(C x) const {
    if constexpr (std::is_integral_v<C>) return wrapped(C(0), x, std::minus<>());
    return -x;
  }
};
struct NotOp {
  bool operator()(bool x) const { return !x; }
};

template <typename T, typename Op>
class UnaryKernel : public CpuKernel {
 public:
  UnaryKernel(Op op, int64_t min_parallel) : op_(op), min_parallel_(min_parallel) {}
  void run(const KernelContext& ctx) override {
    const T* x = ctx.input(0).as<T>();
    T* y = ctx.output(0).as<T>();
    const Op op = op_;
    parallelChunks(
        ctx.output(0).numel(),
        [&](int64_t begin, int64_t end) {
#pragma omp simd
          for (int64_t i = begin; i < end; ++i) y[i] = store<T>(op(load(x[i])));
        },
        min_parallel_);
  }

 private:
  Op op_;
  int64_t min_parallel_;
};

template <typename List, typename Op>
CpuKernelFactory unary(List list, Op op, int64_t min_parallel) {
  return [=](const KernelContext& ctx) {
    std::unique_ptr<CpuKernel> k;
    dispatchOrFail(ctx, list, ctx.input(0).dtype(), [&](auto tag) {
      k = std::make_unique<UnaryKernel<typename decltype(tag)::type, Op>>(op, min_parallel);
    });
    return k;
  };
}

CpuKernelFactory gelu() {
  return [](const KernelContext& ctx) {
    const std::string& approximate = ctx.s("approximate");
    if (approximate == "tanh") return unary(FloatTypes{}, GeluTanhOp{}, kCostly)(ctx);
    if (approximate != "none") ctx.fail("approximate '", approximate, "' is not supported");
    return unary(FloatTypes{}, GeluErfOp{}, kCostly)(ctx);
  };
}

std::unique_ptr<CpuKernel> copyKernel(const KernelContext&) {
  return statelessKernel([](const KernelContext& ctx) {
    copyBytes(ctx.output(0).data, ctx.input(0).data, ctx.output(0).bytes());
  });
}

// ---- Binary ops: op(a, b) on compute types, broadcast by a precomputed walk.

struct AddOp {
  template <typename X>
  X operator()(X a, X b) const {
    if constexpr (std::is_integral_v<X>) return wrapped(a, b, std::plus<>());
    return a + b;
  }
};
// Add with a fused Relu (kernels/cpu/fusion.h): a residual connection's sum.
struct AddReluOp {
  template <typename X>
  X operator()(X a, X b) const {
    return ReluOp{}(a + b);
  }
};
struct SubOp {
  template <typename X>
  X operator()(X a, X b) const {
    if constexpr (std::is_integral_v<X>) return wrapped(a, b, std::minus<>());
    return a - b;
  }
};
struct MulOp {
  template <typename X>
  X operator()(X a, X b) const {
    if constexpr (std::is_integral_v<X>) return wrapped(a, b, std::multiplies<>());
    return a * b;
  }
};
// Integer division truncates toward zero; x / 0 gives 0 rather than trapping.
struct DivOp {
  template <typename X>
  X operator()(X a, X b) const {
    if constexpr (std::is_integral_v<X>) {
      if (b == 0) return 0;
      if (b == X(-1)) return NegOp{}(a);
    }
    return a / b;
  }
};
struct EqualOp {
  template <typename X>
  bool operator()(X a, X b) const {
    return a == b;
  }
};
struct LessOp {
  template <typename X>
  bool operator()(X a, X b) const {
    return a < b;
  }
};
struct GreaterOp {
  template <typename X>
  bool operator()(X a, X b) const {
    return a > b;
  }
};
// Integer powers are exact (wrapping); a negative exponent truncates 1 / a^n.
template <typename X>
X intPow(X a, int64_t n) {
  if (n < 0) return a == 1 ? X(1) : a == X(-1) ? (n % 2 ? X(-1) : X(1)) : X(0);
  X r = 1;
  for (; n > 0; n >>= 1, a = MulOp{}(a, a))
    if (n & 1) r = MulOp{}(r, a);
  return r;
}
struct PowOp {
  template <typename X, typename Y>
  X operator()(X a, Y b) const {
    if constexpr (std::is_floating_point_v<X>)
      return std::pow(a, static_cast<X>(b));
    else if constexpr (std::is_floating_point_v<Y>)
      return floatToInt<X>(std::pow(static_cast<double>(a), static_cast<double>(b)));
    else
      return intPow(a, static_cast<int64_t>(b));
  }
};

template <typename A, typename B, typename O, typename Op>
class BinaryKernel : public CpuKernel {
 public:
  BinaryKernel(const KernelContext& ctx, Op op)
      : op_(op),
        walk_(broadcastWalk<2>(ctx, ctx.output(0).shape(),
                               {ctx.input(0).shape(), ctx.input(1).shape()})) {}

  void run(const KernelContext& ctx) override {
    const A* a = ctx.input(0).as<A>();
    const B* b = ctx.input(1).as<B>();
    O* o = ctx.output(0).as<O>();
    const bool ua = walk_.innerStride(0) != 0, ub = walk_.innerStride(1) != 0;
    walk_.run([&](int64_t out, const std::array<int64_t, 2>& in, int64_t len) {
      segment(a + in[0], ua, b + in[1], ub, o + out, len);
    });
  }

 private:
  void segment(const A* a, bool ua, const B* b, bool ub, O* o, int64_t len) const {
    const Op op = op_;
    if (ua && ub) {
#pragma omp simd
      for (int64_t j = 0; j < len; ++j) o[j] = store<O>(op(load(a[j]), load(b[j])));
    } else if (ua) {
      const auto bv = load(*b);
#pragma omp simd
      for (int64_t j = 0; j < len; ++j) o[j] = store<O>(op(load(a[j]), bv));
    } else if (ub) {
      const auto av = load(*a);
#pragma omp simd
      for (int64_t j = 0; j < len; ++j) o[j] = store<O>(op(av, load(b[j])));
    } else {
      const O v = store<O>(op(load(*a), load(*b)));
      std::fill(o, o + len, v);
    }
  }

  Op op_;
  StridedWalk<2> walk_;
};

// Same-dtype binary op whose output has the input dtype (or Out when not void).
template <typename List, typename Op, typename Out = void>
CpuKernelFactory binary(List list, Op op) {
  return [=](const KernelContext& ctx) {
    std::unique_ptr<CpuKernel> k;
    dispatchOrFail(ctx, list, ctx.input(0).dtype(), [&](auto tag) {
      using T = typename decltype(tag)::type;
      using O = std::conditional_t<std::is_void_v<Out>, T, Out>;
      k = std::make_unique<BinaryKernel<T, T, O, Op>>(ctx, op);
    });
    return k;
  };
}

// Pow with a one-element exponent: common exponents run as plain arithmetic.
template <typename X, typename Y>
class ScalarPowKernel : public CpuKernel {
 public:
  explicit ScalarPowKernel(const KernelContext& ctx) : general_(ctx, PowOp{}) {}
  void run(const KernelContext& ctx) override {
    const double e = static_cast<double>(load(*ctx.input(1).as<Y>()));
    const X* x = ctx.input(0).as<X>();
    X* y = ctx.output(0).as<X>();
    auto apply = [&](auto f) {
      parallelChunks(ctx.output(0).numel(), [&](int64_t begin, int64_t end) {
#pragma omp simd
        for (int64_t i = begin; i < end; ++i) y[i] = f(x[i]);
      });
    };
    if (e == 2.0) return apply([](X v) { return v * v; });
    if (e == 3.0) return apply([](X v) { return v * v * v; });
    if (e == 1.0) return copyBytes(y, x, ctx.output(0).bytes());
    if (e == 0.5) return apply([](X v) { return std::sqrt(v); });
    general_.run(ctx);
  }

 private:
  BinaryKernel<X, Y, X, PowOp> general_;
};

// Pow: the exponent may have another numeric dtype than the base.
std::unique_ptr<CpuKernel> powKernel(const KernelContext& ctx) {
  using Bases = TypeList<float, double, Half, BF16, int64_t, int32_t>;
  using Exponents = TypeList<float, double, int64_t, int32_t>;
  std::unique_ptr<CpuKernel> k;
  dispatchOrFail(ctx, Bases{}, ctx.input(0).dtype(), [&](auto base) {
    dispatchOrFail(ctx, Exponents{}, ctx.input(1).dtype(), [&](auto exponent) {
      using X = typename decltype(base)::type;
      using Y = typename decltype(exponent)::type;
      bool scalar = ctx.input(1).numel() == 1 && ctx.output(0).shape() == ctx.input(0).shape();
      if constexpr (std::is_floating_point_v<X>)
        if (scalar) k = std::make_unique<ScalarPowKernel<X, Y>>(ctx);
      if (!k) k = std::make_unique<BinaryKernel<X, Y, X, PowOp>>(ctx, PowOp{});
    });
  });
  return k;
}

// ---- Where, Cast, Dropout.

// Where over three broadcast operands; the inner loop is specialised on which
// operands advance (stride 1) or stay (stride 0) so it vectorises.
template <typename T>
class WhereKernel : public CpuKernel {
 public:
  explicit WhereKernel(const KernelContext& ctx)
      : walk_(
            broadcastWalk<3>(ctx, ctx.output(0).shape(),
                             {ctx.input(0).shape(), ctx.input(1).shape(), ctx.input(2).shape()})) {}

  void run(const KernelContext& ctx) override {
    const bool* c = ctx.input(0).as<bool>();
    const T* x = ctx.input(1).as<T>();
    const T* y = ctx.input(2).as<T>();
    T* o = ctx.output(0).as<T>();
    int mode = (walk_.innerStride(0) != 0) | (walk_.innerStride(1) != 0) << 1 |
               (walk_.innerStride(2) != 0) << 2;
    walk_.run([&](int64_t out, const std::array<int64_t, 3>& in, int64_t len) {
      const bool* cs = c + in[0];
      const T *xs = x + in[1], *ys = y + in[2];
      T* os = o + out;
      switch (mode) {
        case 0:
          return segment<0, 0, 0>(cs, xs, ys, os, len);
        case 1:
          return segment<1, 0, 0>(cs, xs, ys, os, len);
        case 2:
          return segment<0, 1, 0>(cs, xs, ys, os, len);
        case 3:
          return segment<1, 1, 0>(cs, xs, ys, os, len);
        case 4:
          return segment<0, 0, 1>(cs, xs, ys, os, len);
        case 5:
          return segment<1, 0, 1>(cs, xs, ys, os, len);
        case 6:
          return segment<0, 1, 1>(cs, xs, ys, os, len);
        default:
          return segment<1, 1, 1>(cs, xs, ys, os, len);
      }
    });
  }

 private:
  template <int SC, int SX, int SY>
  static void segment(const bool* c, const T* x, const T* y, T* o, int64_t len) {
#pragma omp simd
    for (int64_t j = 0; j < len; ++j) {
      const T m = T(0) - static_cast<T>(c[j * SC]);  // all ones where c: a branch-free select
      o[j] = static_cast<T>((x[j * SX] & m) | (y[j * SY] & ~m));
    }
  }

  StridedWalk<3> walk_;
};

std::unique_ptr<CpuKernel> whereKernel(const KernelContext& ctx) {
  std::unique_ptr<CpuKernel> k;
  dispatchSize(dtypeSize(ctx.input(1).dtype()), [&](auto tag) {
    k = std::make_unique<WhereKernel<typename decltype(tag)::type>>(ctx);
  });
  return k;
}

// Converts one element: floats to integers truncate toward zero (saturating, NaN
// -> 0, then wrapping into narrow types), anything to bool is "!= 0".
template <typename D, typename S>
D convertValue(S s) {
  const auto v = load(s);
  if constexpr (std::is_same_v<D, bool>)
    return v != 0;
  else if constexpr (kIsFloat<D>)
    return store<D>(static_cast<Compute<D>>(v));
  else if constexpr (std::is_floating_point_v<decltype(v)>)
    return floatToInt<D>(v);
  else
    return static_cast<D>(v);
}

template <typename S, typename D>
class CastKernel : public CpuKernel {
 public:
  void run(const KernelContext& ctx) override {
    const S* s = ctx.input(0).as<S>();
    D* d = ctx.output(0).as<D>();
    parallelChunks(ctx.output(0).numel(), [&](int64_t begin, int64_t end) {
      if constexpr (std::is_same_v<S, float> && std::is_same_v<D, Half>) {
        floatsToHalves(s + begin, reinterpret_cast<uint16_t*>(d + begin), end - begin);
      } else if constexpr (std::is_same_v<S, Half> && std::is_same_v<D, float>) {
        halvesToFloats(reinterpret_cast<const uint16_t*>(s + begin), d + begin, end - begin);
      } else {
#pragma omp simd
        for (int64_t i = begin; i < end; ++i) d[i] = convertValue<D>(s[i]);
      }
    });
  }
};

std::unique_ptr<CpuKernel> castKernel(const KernelContext& ctx) {
  if (ctx.input(0).dtype() == ctx.output(0).dtype()) return copyKernel(ctx);
  std::unique_ptr<CpuKernel> k;
  dispatchOrFail(ctx, AllTypes{}, ctx.input(0).dtype(), [&](auto src) {
    dispatchOrFail(ctx, AllTypes{}, ctx.output(0).dtype(), [&](auto dst) {
      k = std::make_unique<
          CastKernel<typename decltype(src)::type, typename decltype(dst)::type>>();
    });
  });
  return k;
}

// Dropout: a copy (mask all true) unless training_mode=1 and ratio > 0.
// Training plans give the node a second input, the optimizer step (ds.step):
// the mask is then a pure function of (run seed, seed attribute, node, step,
// micro-step) — kernels/dropout_rng.h — where the micro-step counts the runs since
// the step last changed (accumulation runs micro-steps 0..G-1 of a step in order).
// Without it (ONNX Dropout, inference) run r of the kernel draws from
// (seed attribute, r): reproducible for a seed, a fresh mask on every run.
template <typename T>
class DropoutKernel : public CpuKernel {
 public:
  explicit DropoutKernel(const KernelContext& ctx)
      : ratio_(ctx.f("ratio")),
        seed_(static_cast<uint64_t>(ctx.i("seed"))),
        training_(ctx.i("training_mode") != 0),
        stream_(dropoutStreamOf(ctx)) {
    if (!(ratio_ >= 0.0 && ratio_ < 1.0)) ctx.fail("ratio ", ratio_, " must lie in [0, 1)");
    if (ctx.hasInput(1) && !(ctx.input(1).dtype() == DType::I64 && ctx.input(1).numel() == 1))
      ctx.fail("the step input must be an i64 scalar");
  }

  void run(const KernelContext& ctx) override {
    const int64_t n = ctx.output(0).numel();
    bool* mask = ctx.outputs.size() > 1 ? ctx.output(1).as<bool>() : nullptr;  // null: absent
    if (!training_ || ratio_ == 0.0) {
      copyBytes(ctx.output(0).data, ctx.input(0).data, ctx.output(0).bytes());
      if (mask) std::fill(mask, mask + n, true);
      return;
    }
    const T* x = ctx.input(0).as<T>();
    T* y = ctx.output(0).as<T>();
    const uint64_t key = nextKey(ctx);
    const auto threshold = static_cast<uint64_t>(ratio_ * 4294967296.0);
    const auto scale = static_cast<Compute<T>>(1.0 / (1.0 - ratio_));
    parallelChunks(n, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        bool keep = dropoutKeep(key, static_cast<uint64_t>(i), threshold);
        y[i] = store<T>(select(keep, load(x[i]) * scale, Compute<T>(0)));
        if (mask) mask[i] = keep;
      }
    });
  }

 private:
  uint64_t nextKey(const KernelContext& ctx) {
    if (!ctx.hasInput(1)) return mix64(seed_ + 0x9e3779b97f4a7c15ull * ++runs_);
    int64_t step = *ctx.input(1).as<int64_t>();
    stream_.micro_step = step == stream_.step ? stream_.micro_step + 1 : 0;
    stream_.step = step;
    return dropoutKey(stream_);
  }

  double ratio_;
  uint64_t seed_;
  bool training_;
  uint64_t runs_ = 0;
  DropoutStream stream_;
};

}  // namespace

void registerElementwiseKernels(CpuKernelRegistry& r) {
  r.add("Relu", unary(FloatTypes{}, ReluOp{}, kCheap));
  r.add("LeakyRelu", [](const KernelContext& ctx) {
    return unary(FloatTypes{}, LeakyReluOp{ctx.f("alpha")}, kCheap)(ctx);
  });
  r.add("Clip", [](const KernelContext& ctx) {
    return unary(NumericTypes{}, ClipOp{ctx.f("min"), ctx.f("max")}, kCheap)(ctx);
  });
  r.add("Sigmoid", unary(FloatTypes{}, SigmoidOp{}, kCostly));
  r.add("Tanh", unary(FloatTypes{}, TanhOp{}, kCostly));
  r.add("Erf", unary(FloatTypes{}, ErfOp{}, kCostly));
  r.add("Gelu", gelu());
  r.add("Sqrt", unary(FloatTypes{}, SqrtOp{}, kCostly));
  r.add("Log", unary(FloatTypes{}, LogOp{}, kCostly));
  r.add("Softplus", unary(FloatTypes{}, SoftplusOp{}, kCostly));
  r.add("Neg", unary(NumericTypes{}, NegOp{}, kCheap));
  r.add("Not", unary(TypeList<bool>{}, NotOp{}, kCheap));
  r.add("Identity", copyKernel);
  r.add("Add", [](const KernelContext& ctx) {
    if (!ctx.epilogue.empty()) return binary(FloatTypes{}, AddReluOp{})(ctx);
    return binary(NumericTypes{}, AddOp{})(ctx);
  });
  r.allowEpilogue("Add", [](const KernelContext& ctx, const Epilogue& next) {
    return ctx.epilogue.empty() && next.op == "Relu" && isFloat(ctx.output(0).dtype());
  });
  r.add("Sub", binary(NumericTypes{}, SubOp{}));
  r.add("Mul", binary(NumericTypes{}, MulOp{}));
  r.add("Div", binary(NumericTypes{}, DivOp{}));
  r.add("Equal", binary<AllTypes, EqualOp, bool>(AllTypes{}, EqualOp{}));
  r.add("Less", binary<NumericTypes, LessOp, bool>(NumericTypes{}, LessOp{}));
  r.add("Greater", binary<NumericTypes, GreaterOp, bool>(NumericTypes{}, GreaterOp{}));
  r.add("Pow", powKernel);
  r.add("Where", whereKernel);
  r.add("Cast", castKernel);
  r.add("Dropout", [](const KernelContext& ctx) {
    std::unique_ptr<CpuKernel> k;
    dispatchOrFail(ctx, FloatTypes{}, ctx.input(0).dtype(), [&](auto tag) {
      k = std::make_unique<DropoutKernel<typename decltype(tag)::type>>(ctx);
    });
    return k;
  });
  // Element-wise maps read and write every operand in the same order, so any
  // layout works as long as all share it (no broadcasting).
  for (const char* op : {"Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "Gelu", "Identity", "Add",
                         "Sub", "Mul", "Div"})
    r.allowChannelsLast(op, allOperandsWhenSameShape);
}

}  // namespace ds::cpu
