// CPU kernels of the element-wise and reduction families against hand-computed
// values and straightforward double-precision references written here: unary
// math (and the fast float approximations behind it), broadcasting binary ops,
// Where, Cast across every dtype pair, Dropout, ReduceSum/Mean and (Log)Softmax.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>

#include "kernels/cpu/cpu_util.h"
#include "kernels/cpu/run_node.h"

namespace ds::cpu {
namespace {

using Vec = std::vector<double>;
using Ints = std::vector<int64_t>;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

Tensor rnd(DType t, const Shape& s, uint32_t seed, double lo = -3.0, double hi = 3.0) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  Vec v(static_cast<size_t>(numElements(s)));
  for (double& x : v) x = dist(gen);
  return Tensor::fromDoubles(t, s, v);
}

// Compares element-wise with a tolerance fitting the dtype (exact for integers).
void expectNear(const Tensor& got, const Vec& want, double f32_tol = 2e-6) {
  ASSERT_EQ(got.numel(), static_cast<int64_t>(want.size())) << got.type().toString();
  double tol = got.dtype() == DType::F64 ? 1e-12 : isFloat(got.dtype()) ? f32_tol : 0.0;
  if (got.dtype() == DType::F16 || got.dtype() == DType::BF16) tol = 1e-2;
  int bad = 0;
  for (size_t i = 0; i < want.size() && bad < 5; ++i) {
    double g = got.getDouble(static_cast<int64_t>(i)), w = want[i];
    bool ok = (std::isnan(g) && std::isnan(w)) || g == w ||
              std::fabs(g - w) <= tol * std::max(1.0, std::fabs(w));
    if (!ok)
      ++bad, ADD_FAILURE() << got.type().toString() << " element " << i << ": got " << g
                           << ", want " << w;
  }
}

// Linear index into `in` of output element i when `in` broadcasts to `out`.
int64_t bcastIndex(const Shape& in, const Shape& out, int64_t i) {
  int64_t idx = 0, stride = 1;
  size_t offset = out.size() - in.size();
  for (size_t d = out.size(); d-- > 0;) {
    int64_t coord = i % out[d];
    i /= out[d];
    if (d < offset) continue;
    if (in[d - offset] != 1) idx += coord * stride;
    stride *= in[d - offset];
  }
  return idx;
}

// --- unary

struct UnaryCase {
  const char* op;
  std::function<double(double)> ref;
  AttributeMap attrs;
};

std::vector<UnaryCase> unaryCases() {
  auto erfGelu = [](double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); };
  auto tanhGelu = [](double x) {
    return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
  };
  return {{"Relu", [](double x) { return x < 0 ? 0.0 : x; }, {}},
          {"LeakyRelu", [](double x) { return x < 0 ? 0.2 * x : x; }, {{"alpha", 0.2}}},
          {"Clip",
           [](double x) { return std::min(std::max(x, -0.25), 6.0); },
           {{"min", -0.25}, {"max", 6.0}}},
          {"Clip", [](double x) { return std::max(x, 0.0); }, {{"min", 0.0}}},  // no max
          {"Sigmoid", [](double x) { return 1 / (1 + std::exp(-x)); }, {}},
          {"Tanh", [](double x) { return std::tanh(x); }, {}},
          {"Erf", [](double x) { return std::erf(x); }, {}},
          {"Gelu", erfGelu, {}},
          {"Gelu", tanhGelu, {{"approximate", std::string("tanh")}}},
          {"Sqrt", [](double x) { return std::sqrt(x); }, {}},
          {"Softplus", [](double x) { return std::log1p(std::exp(x)); }, {}},
          {"Neg", [](double x) { return -x; }, {}}};
}

TEST(CpuKernelElementwise, UnaryMatchesReference) {
  Vec xs;
  for (int i = -1000; i <= 1000; ++i) xs.push_back(i * 0.0123);
  for (double v : {-100.0, -30.0, 30.0, 100.0, 1e-5, -1e-5, 0.0}) xs.push_back(v);
  for (DType t : {DType::F32, DType::F64, DType::F16, DType::BF16}) {
    Tensor x = Tensor::fromDoubles(t, {static_cast<int64_t>(xs.size())}, xs);
    Vec rounded = x.toDoubles();
    for (const UnaryCase& c : unaryCases()) {
      SCOPED_TRACE(std::string(c.op) + " " + std::string(dtypeName(t)));
      Vec want;
      for (double v : rounded) want.push_back(c.ref(v));
      expectNear(runOp(c.op, {x}, c.attrs)[0], want);
    }
  }
}

TEST(CpuKernelElementwise, UnarySpecialValues) {
  Tensor x = Tensor::fromDoubles(DType::F32, {4}, {kNaN, kInf, -kInf, -0.0});
  expectNear(runOp("Relu", {x})[0], {kNaN, kInf, 0, 0});
  expectNear(runOp("Sigmoid", {x})[0], {kNaN, 1, 0, 0.5});
  expectNear(runOp("Tanh", {x})[0], {kNaN, 1, -1, 0});
  expectNear(runOp("Erf", {x})[0], {kNaN, 1, -1, 0});
  expectNear(runOp("Sqrt", {x})[0], {kNaN, kInf, kNaN, 0});
}

// Relu's gradient from its output, as Where(Equal(Y, 0), 0, dY) computes it: zero
// where Y is ±0, dY elsewhere (a NaN Y passes dY on), in f32 and f64.
TEST(CpuKernelElementwise, ReluGradIsEqualThenWhere) {
  for (DType t : {DType::F32, DType::F64}) {
    Tensor y = Tensor::fromDoubles(t, {5}, {0.0, -0.0, 2.5, kNaN, kInf});
    Tensor dy = Tensor::fromDoubles(t, {5}, {1.5, -2.0, 3.0, 4.0, -0.5});
    Tensor zero = Tensor::fromDoubles(t, {}, {0.0});
    Tensor off = runOp("Equal", {y, zero})[0];
    Tensor want = runOp("Where", {off, zero, dy})[0];
    Tensor got = runOp("ReluGrad", {dy, y})[0];
    EXPECT_EQ(got.toDoubles(), want.toDoubles()) << dtypeName(t);
    EXPECT_EQ(got.toDoubles(), (std::vector<double>{0, 0, 3, 4, -0.5})) << dtypeName(t);
  }
}

TEST(CpuKernelElementwise, FastFloatMathIsAccurate) {
  double worst[4] = {};
  for (int i = -2000000; i <= 2000000; ++i) {
    float x = static_cast<float>(i) * 5e-5f;  // [-100, 100]
    double dx = x;
    double exact[4] = {std::exp(dx), std::tanh(dx), std::erf(dx), 1 / (1 + std::exp(-dx))};
    float fast[4] = {fastExp(x), fastTanh(x), fastErf(x), fastSigmoid(x)};
    for (int k = 0; k < 4; ++k) {
      if (exact[k] > 3.4e38 || std::fabs(exact[k]) < 1.2e-38) continue;  // not a normal float
      double err = std::fabs(fast[k] - exact[k]) / std::max(std::fabs(exact[k]), 1e-30);
      worst[k] = std::max(worst[k], err);
    }
  }
  EXPECT_LT(worst[0], 5e-7) << "exp";
  EXPECT_LT(worst[1], 5e-7) << "tanh";
  EXPECT_LT(worst[2], 5e-7) << "erf";
  EXPECT_LT(worst[3], 5e-7) << "sigmoid";
  EXPECT_EQ(fastExp(-200.0f), 0.0f);
  EXPECT_NEAR(fastExp(-100.0f), std::exp(-100.0), 1e-45);  // subnormal results
  EXPECT_TRUE(std::isinf(fastExp(200.0f)));
}

TEST(CpuKernelElementwise, NotIdentityNegInt) {
  Tensor b = Tensor::fromInts(DType::Bool, {3}, {1, 0, 1});
  EXPECT_EQ(runOp("Not", {b})[0].toInts(), (Ints{0, 1, 0}));
  Tensor i = Tensor::fromInts(DType::I64, {3}, {5, -7, std::numeric_limits<int64_t>::min()});
  EXPECT_EQ(runOp("Identity", {i})[0], i);
  EXPECT_EQ(runOp("Neg", {i})[0].toInts(), (Ints{-5, 7, std::numeric_limits<int64_t>::min()}));
  EXPECT_EQ(runOp("Neg", {Tensor::fromInts(DType::I32, {2}, {3, -4})})[0].toInts(), (Ints{-3, 4}));
}

// --- binary

double applyRef(const std::string& op, double a, double b) {
  if (op == "Add") return a + b;
  if (op == "Sub") return a - b;
  if (op == "Mul") return a * b;
  if (op == "Equal") return a == b;
  return a / b;
}

void checkBinary(const std::string& op, DType t, const Shape& sa, const Shape& sb,
                 const Shape& out) {
  SCOPED_TRACE(op + " " + std::string(dtypeName(t)) + " " + shapeToString(sa) + " " +
               shapeToString(sb));
  bool is_int = !isFloat(t);
  Tensor a = rnd(t, sa, 1, t == DType::U8 ? 0 : is_int ? -50 : -3, is_int ? 50 : 3);
  Tensor b = rnd(t, sb, 2, 1, is_int ? 9 : 3);  // positive: integer division stays exact-able
  if (op == "Equal") b = a.numel() == b.numel() ? a : b;
  Tensor y = runOp(op, {a, b})[0];
  ASSERT_EQ(y.shape(), out);
  Vec want;
  for (int64_t i = 0; i < numElements(out); ++i) {
    double av = a.getDouble(bcastIndex(sa, out, i)), bv = b.getDouble(bcastIndex(sb, out, i));
    double r = applyRef(op, av, bv);
    want.push_back(is_int && op == "Div" ? std::trunc(r) : r);
  }
  expectNear(y, want);
}

TEST(CpuKernelElementwise, BinaryBroadcasting) {
  struct Shapes {
    Shape a, b, out;
  };
  std::vector<Shapes> shapes = {{{2, 1, 3}, {4, 1}, {2, 4, 3}},
                                {{2, 3}, {2, 3}, {2, 3}},
                                {{}, {2, 3}, {2, 3}},
                                {{2, 3}, {1}, {2, 3}},
                                {{3}, {2, 3}, {2, 3}},
                                {{4, 1}, {1, 5}, {4, 5}},
                                {{300, 200}, {200}, {300, 200}},
                                {{64, 1, 33}, {1, 70, 33}, {64, 70, 33}},
                                {{5, 1}, {1, 9000}, {5, 9000}},
                                {{40000}, {}, {40000}}};
  for (const Shapes& s : shapes)
    for (const char* op : {"Add", "Sub", "Mul", "Div", "Equal"})
      for (DType t : {DType::F32, DType::F64, DType::I64, DType::I32})
        checkBinary(op, t, s.a, s.b, s.out);
  for (DType t : {DType::F16, DType::BF16, DType::I8, DType::U8})
    checkBinary("Add", t, {2, 1, 3}, {4, 1}, {2, 4, 3});
}

TEST(CpuKernelElementwise, IntegerDivisionTruncatesTowardZero) {
  for (DType t : {DType::I64, DType::I32}) {
    Tensor a = Tensor::fromInts(t, {6}, {7, -7, 7, -7, 5, 9});
    Tensor b = Tensor::fromInts(t, {6}, {2, 2, -2, -2, 0, -1});
    EXPECT_EQ(runOp("Div", {a, b})[0].toInts(), (Ints{3, -3, -3, 3, 0, -9}));
  }
}

TEST(CpuKernelElementwise, IntegerArithmeticWraps) {
  int64_t big = std::numeric_limits<int64_t>::max();
  Tensor a = Tensor::fromInts(DType::I64, {1}, {big});
  Tensor one = Tensor::fromInts(DType::I64, {1}, {1});
  EXPECT_EQ(runOp("Add", {a, one})[0].toInts(), (Ints{std::numeric_limits<int64_t>::min()}));
}

TEST(CpuKernelElementwise, Pow) {
  Tensor x = Tensor::fromDoubles(DType::F32, {4}, {1.5, -2, 0, 4});
  auto scalar = [](double v) { return Tensor::fromDoubles(DType::F32, {}, {v}); };
  expectNear(runOp("Pow", {x, scalar(2)})[0], {2.25, 4, 0, 16});
  expectNear(runOp("Pow", {x, scalar(3)})[0], {3.375, -8, 0, 64});
  expectNear(runOp("Pow", {x, scalar(0.5)})[0], {std::sqrt(1.5), kNaN, 0, 2});
  expectNear(runOp("Pow", {x, scalar(1.5)})[0], {std::pow(1.5, 1.5), kNaN, 0, 8});
  expectNear(runOp("Pow", {x, scalar(1)})[0], {1.5, -2, 0, 4});
  Tensor e = Tensor::fromDoubles(DType::F32, {2, 1}, {2, -1});
  expectNear(runOp("Pow", {x, e})[0], {2.25, 4, 0, 16, 1 / 1.5, -0.5, kInf, 0.25});
  Tensor xd = Tensor::fromDoubles(DType::F64, {2}, {2, 3});
  expectNear(runOp("Pow", {xd, Tensor::fromInts(DType::I64, {}, {3})})[0], {8, 27});
  Tensor xi = Tensor::fromInts(DType::I64, {4}, {3, -2, 2, 1});
  Tensor ei = Tensor::fromInts(DType::I64, {4}, {4, 3, -1, -5});
  EXPECT_EQ(runOp("Pow", {xi, ei})[0].toInts(), (Ints{81, -8, 0, 1}));
  Tensor f16e = Tensor::fromDoubles(DType::F16, {}, {2});
  try {
    runOp("Pow", {x, f16e});
    ADD_FAILURE() << "expected an error";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("dtype f16 is not supported"), std::string::npos)
        << err.what();
  }
}

TEST(CpuKernelElementwise, WhereBroadcasts) {
  for (DType t : {DType::F32, DType::F64, DType::I64, DType::F16, DType::Bool}) {
    Shape sc = {2, 1, 3}, sx = {4, 1}, sy = {}, out = {2, 4, 3};
    Tensor c = Tensor::fromInts(DType::Bool, sc, {1, 0, 1, 0, 0, 1});
    Tensor x = rnd(t, sx, 3, 0, 5), y = Tensor::fromDoubles(t, sy, {1});
    Vec want;
    for (int64_t i = 0; i < numElements(out); ++i)
      want.push_back(c.getInt(bcastIndex(sc, out, i)) ? x.getDouble(bcastIndex(sx, out, i))
                                                      : y.getDouble(0));
    expectNear(runOp("Where", {c, x, y})[0], want);
    Tensor full = rnd(t, {300, 200}, 4, 0, 5), other = rnd(t, {300, 200}, 5, 0, 5);
    Tensor mask = rnd(DType::F32, {200}, 6).castTo(DType::Bool);
    Tensor got = runOp("Where", {mask, full, other})[0];
    for (int64_t i = 0; i < got.numel(); i += 997)
      EXPECT_EQ(got.getDouble(i), mask.getInt(i % 200) ? full.getDouble(i) : other.getDouble(i));
  }
}

// --- Cast

TEST(CpuKernelElementwise, CastEveryDTypePair) {
  const DType all[] = {DType::F32, DType::F64, DType::F16, DType::BF16, DType::I64,
                       DType::I32, DType::I8,  DType::U8,  DType::Bool};
  for (DType from : all) {
    for (DType to : all) {
      Tensor x = Tensor::fromDoubles(from, {4}, {0, 1, 2, 3});
      Tensor y = runOp("Cast", {x}, {{"to", std::string(dtypeName(to))}})[0];
      ASSERT_EQ(y.dtype(), to);
      Vec want = from == DType::Bool ? Vec{0, 1, 1, 1} : Vec{0, 1, 2, 3};
      if (to == DType::Bool) want = {0, 1, 1, 1};
      EXPECT_EQ(y.toDoubles(), want) << dtypeName(from) << " -> " << dtypeName(to);
    }
  }
}

TEST(CpuKernelElementwise, CastRoundingTruncationAndNaN) {
  auto cast = [](const Tensor& x, const char* to) {
    return runOp("Cast", {x}, {{"to", std::string(to)}})[0];
  };
  double ulp = std::ldexp(1.0, -10);
  Tensor x = Tensor::fromDoubles(DType::F32, {8},
                                 {1 + ulp / 2, 1 + 3 * ulp / 2, 65504, 65520, kNaN, -kInf,
                                  std::ldexp(1.0, -24), std::ldexp(1.0, -26)});
  Tensor back = cast(cast(x, "f16"), "f32");
  Vec want = {1, 1 + 2 * ulp, 65504, kInf, kNaN, -kInf, std::ldexp(1.0, -24), 0};
  for (size_t i = 0; i < want.size(); ++i) {
    double g = back.getDouble(static_cast<int64_t>(i));
    EXPECT_TRUE(g == want[i] || (std::isnan(g) && std::isnan(want[i])))
        << i << ": " << g << " vs " << want[i];
  }
  EXPECT_EQ(
      cast(cast(Tensor::fromDoubles(DType::F64, {2}, {1.00390625, 1.01171875}), "bf16"), "f64")
          .toDoubles(),
      (Vec{1.0, 1.015625}));  // ties round to even
  Tensor f = Tensor::fromDoubles(DType::F32, {6}, {2.7, -2.7, 0.5, -0.5, 1e30, kNaN});
  EXPECT_EQ(cast(f, "i64").toInts(), (Ints{2, -2, 0, 0, std::numeric_limits<int64_t>::max(), 0}));
  EXPECT_EQ(cast(f, "i32").getInt(1), -2);
  EXPECT_EQ(cast(Tensor::fromDoubles(DType::F64, {2}, {255.9, -1.5}), "u8").toInts(),
            (Ints{255, 255}));
  EXPECT_EQ(cast(Tensor::fromDoubles(DType::F32, {3}, {0, 0.25, kNaN}), "bool").toInts(),
            (Ints{0, 1, 1}));
  EXPECT_EQ(cast(Tensor::fromInts(DType::I64, {2}, {300, -1}), "u8").toInts(), (Ints{44, 255}));
}

// --- Dropout

std::vector<Tensor> dropout(const Tensor& x, double ratio, int64_t seed, int64_t training) {
  return runOp("Dropout", {x}, {{"ratio", ratio}, {"seed", seed}, {"training_mode", training}}, 2);
}

TEST(CpuKernelElementwise, Dropout) {
  for (DType t : {DType::F32, DType::F64}) {
    Tensor x = rnd(t, {100, 100}, 7, 1, 2);
    std::vector<Tensor> inference = dropout(x, 0.3, 1, 0);
    EXPECT_EQ(inference[0], x);
    EXPECT_EQ(inference[1].toInts(), Ints(10000, 1));
    EXPECT_EQ(dropout(x, 0.0, 1, 1)[0], x);
    std::vector<Tensor> a = dropout(x, 0.3, 42, 1), b = dropout(x, 0.3, 42, 1);
    EXPECT_EQ(a[0], b[0]);
    EXPECT_EQ(a[1], b[1]);
    EXPECT_NE(dropout(x, 0.3, 43, 1)[1], a[1]);
    int64_t kept = 0;
    for (int64_t i = 0; i < x.numel(); ++i) {
      bool keep = a[1].getInt(i) != 0;
      kept += keep;
      double want = keep ? x.getDouble(i) / 0.7 : 0.0;
      EXPECT_NEAR(a[0].getDouble(i), want, 1e-6 * std::fabs(want));
    }
    EXPECT_NEAR(static_cast<double>(kept), 7000.0, 200.0);  // ~4.4 standard deviations
  }
}

TEST(CpuKernelElementwise, DropoutMaskChangesAcrossRuns) {
  Tensor x = rnd(DType::F32, {1000}, 8, 1, 2);
  Tensor y(x.type()), mask1(TensorType{DType::Bool, {1000}}), mask2(mask1.type());
  KernelContext ctx;
  ctx.op = ctx.node_name = "Dropout";
  ctx.attrs = {{"ratio", 0.5}, {"seed", int64_t{3}}, {"training_mode", int64_t{1}}};
  ctx.inputs = {{const_cast<uint8_t*>(x.raw()), x.type()}};
  ctx.outputs = {{y.raw(), y.type()}, {mask1.raw(), mask1.type()}};
  auto kernel = (*CpuKernelRegistry::instance().find("Dropout"))(ctx);
  kernel->run(ctx);
  ctx.outputs[1].data = mask2.raw();
  kernel->run(ctx);
  EXPECT_NE(mask1, mask2);
  EXPECT_EQ(mask1, dropout(x, 0.5, 3, 1)[1]);  // a fresh kernel repeats the first mask
}

// --- reductions

Vec reduceRef(const Tensor& x, const std::vector<bool>& reduced, bool mean) {
  const Shape& s = x.shape();
  Shape out;
  for (size_t d = 0; d < s.size(); ++d) out.push_back(reduced[d] ? 1 : s[d]);
  Vec sum(static_cast<size_t>(numElements(out)), 0.0);
  for (int64_t i = 0; i < x.numel(); ++i) sum[bcastIndex(out, s, i)] += x.getDouble(i);
  double count = static_cast<double>(x.numel()) / static_cast<double>(sum.size());
  if (mean)
    for (double& v : sum) v = isFloat(x.dtype()) ? v / count : std::trunc(v / count);
  return sum;
}

TEST(CpuKernelReduce, SumAndMeanOverAxes) {
  std::vector<Ints> axes_list = {{}, {0}, {1}, {2}, {-1}, {0, 2}, {0, 1}, {1, 2}, {2, 0, 1}};
  for (DType t : {DType::F32, DType::F64, DType::I64, DType::I32}) {
    Tensor x = rnd(t, {2, 3, 4}, 9, -20, 20);
    for (const Ints& axes : axes_list) {
      for (const char* op : {"ReduceSum", "ReduceMean"}) {
        for (int64_t keep : {0, 1}) {
          SCOPED_TRACE(std::string(op) + " " + shapeToString(axes) + " keep " +
                       std::to_string(keep));
          std::vector<bool> reduced(3, axes.empty());
          for (int64_t a : axes) reduced[(a + 3) % 3] = true;
          Tensor y = runOp(op, {x}, {{"axes", axes}, {"keepdims", keep}})[0];
          expectNear(y, reduceRef(x, reduced, std::string(op) == "ReduceMean"));
        }
      }
    }
  }
  Tensor x = Tensor::fromInts(DType::I64, {2, 2}, {1, 2, -1, -2});
  EXPECT_EQ(runOp("ReduceMean", {x}, {{"axes", Ints{1}}})[0].toInts(), (Ints{1, -1}));
  Tensor same = runOp("ReduceSum", {x}, {{"noop_with_empty_axes", int64_t{1}}})[0];
  EXPECT_EQ(same, x);
}

// A 16-bit sum into f32 (`to`, the mixed-precision gradient norm) reads the 16-bit
// values directly and gives the bits of the same sum over their f32 Cast, for every
// shape of reduction: a long row (chunked), rows, columns, interleaved axes, none.
TEST(CpuKernelReduce, SixteenBitSumsIntoF32EqualTheSumsOfTheCast) {
  struct Case {
    Shape shape;
    AttributeMap attrs;
  };
  const std::vector<Case> cases = {
      {{300000}, {{"keepdims", int64_t{0}}}},
      {{1000, 300}, {{"axes", Ints{1}}}},
      {{1000, 300}, {{"axes", Ints{0}}}},
      {{4, 5, 6}, {{"axes", Ints{0, 2}}}},
      {{4, 5}, {{"noop_with_empty_axes", int64_t{1}}}},
  };
  for (DType t : {DType::F16, DType::BF16})
    for (const char* op : {"ReduceSumSquare", "ReduceSum", "ReduceMean"})
      for (const Case& c : cases) {
        SCOPED_TRACE(std::string(op) + " " + std::string(dtypeName(t)) + " " +
                     shapeToString(c.shape));
        const Tensor x =
            runOp("Cast", {rnd(DType::F32, c.shape, 12)}, {{"to", std::string(dtypeName(t))}})[0];
        const Tensor wide = runOp("Cast", {x}, {{"to", std::string("f32")}})[0];
        AttributeMap attrs = c.attrs;
        const Tensor want = runOp(op, {wide}, attrs)[0];
        attrs["to"] = std::string("f32");
        const Tensor got = runOp(op, {x}, attrs)[0];
        ASSERT_EQ(got.type(), want.type());
        EXPECT_EQ(std::memcmp(got.raw(), want.raw(), want.bytes()), 0);
      }
}

TEST(CpuKernelReduce, LargeReductions) {
  Tensor x = rnd(DType::F32, {1000, 300}, 10);
  expectNear(runOp("ReduceSum", {x}, {{"axes", Ints{1}}})[0], reduceRef(x, {false, true}, false),
             1e-5);
  expectNear(runOp("ReduceMean", {x}, {{"axes", Ints{0}}})[0], reduceRef(x, {true, false}, true));
  // All 300000 elements: one long row, summed in chunks in parallel; the same bits
  // on one thread (the chunks' order does not depend on the thread count).
  expectNear(runOp("ReduceSum", {x})[0], reduceRef(x, {true, true}, false), 1e-5);
  const Tensor all = runOp("ReduceSumSquare", {x})[0];
  double squares = 0;
  for (int64_t i = 0; i < x.numel(); ++i) squares += x.getDouble(i) * x.getDouble(i);
  expectNear(all, {squares}, 1e-5);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const Tensor serial = runOp("ReduceSumSquare", {x})[0];
  omp_set_num_threads(threads);
  EXPECT_EQ(serial.getDouble(0), all.getDouble(0));
  Tensor z = rnd(DType::F32, {0, 3}, 11);
  expectNear(runOp("ReduceSum", {z}, {{"axes", Ints{0}}})[0], {0, 0, 0});
}

Vec softmaxRef(const Tensor& x, int64_t axis, bool log) {
  const Shape& s = x.shape();
  int64_t outer = 1, n = s[axis], inner = 1;
  for (int64_t d = 0; d < static_cast<int64_t>(s.size()); ++d)
    (d < axis ? outer : d > axis ? inner : n) *= d == axis ? 1 : s[d];
  Vec y(static_cast<size_t>(x.numel()));
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t i = 0; i < inner; ++i) {
      auto at = [&](int64_t a) { return (o * n + a) * inner + i; };
      double m = -kInf, sum = 0;
      for (int64_t a = 0; a < n; ++a) m = std::max(m, x.getDouble(at(a)));
      for (int64_t a = 0; a < n; ++a) sum += std::exp(x.getDouble(at(a)) - m);
      for (int64_t a = 0; a < n; ++a) {
        double v = x.getDouble(at(a)) - m;
        y[at(a)] = log ? v - std::log(sum) : std::exp(v) / sum;
      }
    }
  }
  return y;
}

TEST(CpuKernelReduce, SoftmaxAndLogSoftmax) {
  struct Case {
    Shape shape;
    int64_t axis;
  };
  std::vector<Case> cases = {{{2, 3, 4}, -1}, {{2, 3, 4}, 1},    {{2, 3, 4}, 0},
                             {{5}, 0},        {{8, 300, 70}, 1}, {{64, 2000}, 1}};
  for (DType t : {DType::F32, DType::F64, DType::F16})
    for (const Case& c : cases)
      for (bool log : {false, true}) {
        SCOPED_TRACE(shapeToString(c.shape) + " axis " + std::to_string(c.axis));
        Tensor x = rnd(t, c.shape, 12, -10, 10);
        int64_t axis = c.axis < 0 ? c.axis + static_cast<int64_t>(c.shape.size()) : c.axis;
        Tensor y = runOp(log ? "LogSoftmax" : "Softmax", {x}, {{"axis", c.axis}})[0];
        expectNear(y, softmaxRef(x, axis, log), 1e-5);
      }
}

TEST(CpuKernelReduce, SoftmaxIsStableForLargeInputs) {
  Tensor x = Tensor::fromDoubles(DType::F32, {2, 3}, {1000, 1001, 1002, -1000, -1001, -1002});
  double e1 = std::exp(-1.0), e2 = std::exp(-2.0), s = 1 + e1 + e2;
  expectNear(runOp("Softmax", {x})[0], {e2 / s, e1 / s, 1 / s, 1 / s, e1 / s, e2 / s});
  double l = std::log(s);
  expectNear(runOp("LogSoftmax", {x})[0], {-2 - l, -1 - l, -l, -l, -1 - l, -2 - l});
  Tensor cols = x.reshaped({2, 3, 1});
  expectNear(runOp("LogSoftmax", {cols}, {{"axis", int64_t{1}}})[0],
             {-2 - l, -1 - l, -l, -l, -1 - l, -2 - l});
}

}  // namespace
}  // namespace ds::cpu
