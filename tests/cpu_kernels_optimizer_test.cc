// The optimizer-step kernels' optional inputs and the clipping and accumulation
// helpers, against values worked out by hand from torch.optim.SGD, DeepSpeed's
// FusedAdam, the Lion paper, torch.optim.Adagrad, DeepSpeed's FusedLamb and
// DeepSpeed's clip_grad_norm_ (the end-to-end check against PyTorch is
// tests/torch_train_compare.py).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "kernels/cpu/run_node.h"

namespace ds {
namespace {

using cpu::runOp;

Tensor f32(Shape shape, std::vector<double> v) {
  return Tensor::fromDoubles(DType::F32, std::move(shape), v);
}
Tensor scalar(double v) {
  return f32({}, {v});
}
Tensor step(int64_t s) {
  return Tensor::fromInts(DType::I64, {}, {s});
}

TEST(CpuOptimizerKernels, ClipCoefScalesOnlyWhenBelowOne) {
  // coef = max_norm / (norm + 1e-6), used only when < 1.
  EXPECT_EQ(runOp("ClipCoef", {scalar(4.0)}, {{"max_norm", 1.0}})[0].getDouble(0),
            static_cast<float>(1.0 / (4.0 + 1e-6)));
  EXPECT_EQ(runOp("ClipCoef", {scalar(0.5)}, {{"max_norm", 1.0}})[0].getDouble(0), 1.0);
  EXPECT_EQ(runOp("ClipCoef", {scalar(1.0)}, {{"max_norm", 1.0}})[0].getDouble(0),
            static_cast<float>(1.0 / (1.0 + 1e-6)));  // just below 1: scales, as DeepSpeed's
}

TEST(CpuOptimizerKernels, ZerosLike) {
  Tensor z = runOp("ZerosLike", {f32({3}, {1, -2, 3})})[0];
  for (int64_t i = 0; i < 3; ++i) EXPECT_EQ(z.getDouble(i), 0.0);
}

TEST(CpuOptimizerKernels, SgdStepTakesTheGradientScaleAndTheFedMomentum) {
  // d = g * scale = [0.25, -0.5]; the fed momentum 0.8 overrides the attribute 0.9:
  // buf = 0.8 * [0.2, 0.3] + d = [0.41, -0.26]; p' = p - 0.1 * buf = [0.959, 2.026].
  auto out = runOp("SgdStep",
                   {f32({2}, {1, 2}), f32({2}, {0.5, -1}), scalar(0.1), step(2),
                    f32({2}, {0.2, 0.3}), scalar(0.5), scalar(0.8)},
                   {{"momentum", 0.9}}, 2);
  EXPECT_NEAR(out[0].getDouble(0), 0.959, 1e-6);
  EXPECT_NEAR(out[0].getDouble(1), 2.026, 1e-6);
  EXPECT_NEAR(out[1].getDouble(0), 0.41, 1e-6);
  EXPECT_NEAR(out[1].getDouble(1), -0.26, 1e-6);
}

TEST(CpuOptimizerKernels, AdamStepScaleAndBeta1InputsEqualTheirConstantForms) {
  Tensor p = f32({3}, {1, -2, 0.5}), g = f32({3}, {0.4, 0.2, -0.8});
  Tensor m = f32({3}, {0.1, 0, -0.1}), v = f32({3}, {0.01, 0.02, 0.03});
  Tensor half_g = f32({3}, {0.2, 0.1, -0.4});
  // beta1 0.75 is exact in f32, the dtype of the fed momentum.
  auto fed = runOp("AdamStep", {p, g, scalar(0.01), step(3), m, v, scalar(0.5), scalar(0.75)},
                   {{"weight_decay", 0.1}}, 3);
  auto constant = runOp("AdamStep", {p, half_g, scalar(0.01), step(3), m, v},
                        {{"weight_decay", 0.1}, {"beta1", 0.75}}, 3);
  for (size_t k = 0; k < 3; ++k)
    for (int64_t i = 0; i < 3; ++i)
      EXPECT_DOUBLE_EQ(fed[k].getDouble(i), constant[k].getDouble(i)) << k << "," << i;
}

std::string bits(const Tensor& t) {
  return std::string(reinterpret_cast<const char*>(t.raw()), t.bytes());
}

// Mixed precision's fused AdamStep (a 16-bit gradient, the rounded copy as a fourth
// output) against the plain f32 step between the two Casts it replaces: the same
// bits, with and without clipping, and when an overflow skips the step.
TEST(CpuOptimizerKernels, AdamStepOn16BitGradientsEqualsTheStepBetweenCasts) {
  const std::vector<double> pv = {1, -2, 0.5, 3.25, -0.001, 7}, gv = {0.4, 0.2, -0.8, 1e-3, 5, -2};
  Tensor p = f32({6}, pv), m = f32({6}, {0.1, 0, -0.1, 0.2, 0, 1});
  Tensor v = f32({6}, {0.01, 0.02, 0.03, 0, 0.5, 1});
  for (DType t : {DType::F16, DType::BF16}) {
    const std::string name(dtypeName(t));
    SCOPED_TRACE(name);
    Tensor g16 = Tensor::fromDoubles(t, {6}, gv);
    Tensor g32 = runOp("Cast", {g16}, {{"to", std::string("f32")}})[0];
    for (double check : {1.0, double(INFINITY)}) {
      for (bool clipped : {false, true}) {
        std::vector<Tensor> fused_in = {p, g16, scalar(0.01), step(3), m, v};
        std::vector<Tensor> plain_in = {p, g32, scalar(0.01), step(3), m, v};
        // grad_scale (or absent), beta1 absent, the overflow check.
        for (auto* in : {&fused_in, &plain_in}) {
          in->push_back(clipped ? scalar(0.3) : Tensor());
          in->push_back(Tensor());
          in->push_back(scalar(check));
        }
        auto fused = runOp("AdamStep", fused_in,
                           {{"weight_decay", 0.1}, {"round_to", std::string(name)}}, 4);
        auto plain = runOp("AdamStep", plain_in, {{"weight_decay", 0.1}}, 3);
        Tensor rounded = runOp("Cast", {plain[0]}, {{"to", std::string(name)}})[0];
        for (size_t k = 0; k < 3; ++k)
          EXPECT_EQ(bits(fused[k]), bits(plain[k])) << k << " check " << check;
        EXPECT_EQ(fused[3].type(), rounded.type());
        EXPECT_EQ(bits(fused[3]), bits(rounded)) << "check " << check;
        if (check == 1.0) {
          EXPECT_NE(fused[0].getDouble(0), pv[0]);  // the step did step
        }
      }
    }
  }
}

// SgdStep's fused form against the step between Casts, with and without a velocity
// (its rounded copy then the second output, else the third).
TEST(CpuOptimizerKernels, SgdStepOn16BitGradientsEqualsTheStepBetweenCasts) {
  const std::vector<double> gv = {0.4, 0.2, -0.8, 1e-3, 5, -2};
  Tensor p = f32({6}, {1, -2, 0.5, 3.25, -0.001, 7}), buf = f32({6}, {0.1, 0, -0.1, 0.2, 0, 1});
  for (DType t : {DType::F16, DType::BF16}) {
    const std::string name(dtypeName(t));
    Tensor g16 = Tensor::fromDoubles(t, {6}, gv);
    Tensor g32 = runOp("Cast", {g16}, {{"to", std::string("f32")}})[0];
    for (bool velocity : {false, true})
      for (double check : {1.0, double(INFINITY)}) {
        SCOPED_TRACE(name + (velocity ? " velocity" : "") + " check " + std::to_string(check));
        auto inputs = [&](const Tensor& g) {
          return std::vector<Tensor>{
              p,           g,        scalar(0.1),  step(3), velocity ? buf : Tensor(),
              scalar(0.5), Tensor(), scalar(check)};
        };
        const AttributeMap attrs = {
            {"momentum", 0.9}, {"nesterov", int64_t{1}}, {"weight_decay", 0.01}};
        AttributeMap fused_attrs = attrs;
        fused_attrs["round_to"] = name;
        const size_t updated = velocity ? 2 : 1;
        auto fused = runOp("SgdStep", inputs(g16), fused_attrs, updated + 1);
        auto plain = runOp("SgdStep", inputs(g32), attrs, updated);
        Tensor rounded = runOp("Cast", {plain[0]}, {{"to", name}})[0];
        for (size_t k = 0; k < updated; ++k) EXPECT_EQ(bits(fused[k]), bits(plain[k])) << k;
        EXPECT_EQ(bits(fused[updated]), bits(rounded));
      }
  }
}

TEST(CpuOptimizerKernels, LionStepTakesTheSignOfTheInterpolatedMomentum) {
  // c = 0.9 m + 0.1 g = [0.13, -0.43, -0.08, 0]: sign [1, -1, -1, 0];
  // p' = p (1 - 0.01 * 0.1) - 0.01 sign(c); m' = 0.99 m + 0.01 g.
  auto out = runOp("LionStep",
                   {f32({4}, {1, -2, 0.5, 3}), f32({4}, {0.4, 0.2, -0.8, 0}), scalar(0.01), step(5),
                    f32({4}, {0.1, -0.5, 0, 0})},
                   {{"beta1", 0.9}, {"beta2", 0.99}, {"weight_decay", 0.1}}, 2);
  const std::vector<double> p = {0.989, -1.988, 0.5095, 2.997}, m = {0.103, -0.493, -0.008, 0};
  for (int64_t i = 0; i < 4; ++i) {
    EXPECT_NEAR(out[0].getDouble(i), p[i], 1e-6) << i;
    EXPECT_NEAR(out[1].getDouble(i), m[i], 1e-6) << i;
  }
}

TEST(CpuOptimizerKernels, LionStepFedBeta1EqualsTheAttribute) {
  Tensor p = f32({3}, {1, -2, 0.5}), g = f32({3}, {0.4, 0.2, -0.8}), m = f32({3}, {-0.3, 0.1, 0});
  auto fed = runOp("LionStep", {p, g, scalar(0.01), step(2), m, scalar(0.5), scalar(0.75)}, {}, 2);
  auto constant = runOp("LionStep", {p, f32({3}, {0.2, 0.1, -0.4}), scalar(0.01), step(2), m},
                        {{"beta1", 0.75}}, 2);
  for (size_t k = 0; k < 2; ++k)
    for (int64_t i = 0; i < 3; ++i)
      EXPECT_DOUBLE_EQ(fed[k].getDouble(i), constant[k].getDouble(i)) << k << "," << i;
}

TEST(CpuOptimizerKernels, AdagradStepDecaysTheLearningRateAndAddsL2) {
  // Step 3: lr 0.1 / (1 + 2 * 0.5) = 0.05; g = 2 * [0.5, -1] + 0.1 p = [1.1, -2.2];
  // sum' = sum + g^2; p' = p - 0.05 g / (sqrt(sum') + 1e-10).
  auto out = runOp("AdagradStep",
                   {f32({2}, {1, -2}), f32({2}, {0.5, -1}), scalar(0.1), step(3),
                    f32({2}, {0.25, 1}), scalar(2)},
                   {{"lr_decay", 0.5}, {"weight_decay", 0.1}}, 2);
  const double sum[] = {0.25 + 1.1 * 1.1, 1 + 2.2 * 2.2};
  EXPECT_NEAR(out[1].getDouble(0), sum[0], 1e-6);
  EXPECT_NEAR(out[1].getDouble(1), sum[1], 1e-6);
  EXPECT_NEAR(out[0].getDouble(0), 1 - 0.05 * 1.1 / std::sqrt(sum[0]), 1e-6);
  EXPECT_NEAR(out[0].getDouble(1), -2 + 0.05 * 2.2 / std::sqrt(sum[1]), 1e-6);
}

TEST(CpuOptimizerKernels, AdagradStepStartsTheSumAtTheInitialValueOnTheFirstStep) {
  // torch.optim.Adagrad's initial_accumulator_value: sum = 0.5 + g^2 on step 1 only.
  const AttributeMap attrs = {{"initial_accumulator_value", 0.5}};
  Tensor p = f32({2}, {1, -2}), g = f32({2}, {0.5, -1}), zero = f32({2}, {0, 0});
  auto first = runOp("AdagradStep", {p, g, scalar(0.1), step(1), zero}, attrs, 2);
  EXPECT_NEAR(first[1].getDouble(0), 0.75, 1e-7);
  EXPECT_NEAR(first[1].getDouble(1), 1.5, 1e-7);
  EXPECT_NEAR(first[0].getDouble(0), 1 - 0.1 * 0.5 / std::sqrt(0.75), 1e-6);
  auto second = runOp("AdagradStep", {p, g, scalar(0.1), step(2), first[1]}, attrs, 2);
  EXPECT_NEAR(second[1].getDouble(0), 1.0, 1e-7);  // 0.75 + 0.25: no second 0.5
  EXPECT_NEAR(second[1].getDouble(1), 2.5, 1e-7);
}

// DeepSpeed's FusedLamb, written out in double: Adam's moments, the direction
// u = m / (sqrt(v) + eps) + wd p, the trust ratio |p| / |u| within [min, max], and
// the step lr sqrt(1 - b2^t) / (1 - b1^t) x trust x u.
std::vector<double> lambByHand(const std::vector<double>& p, const std::vector<double>& g,
                               std::vector<double> m, std::vector<double> v, int step, double lr,
                               double wd, double min_coeff, double max_coeff) {
  const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
  std::vector<double> u(p.size());
  double p_sq = 0, u_sq = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    m[i] = b1 * m[i] + (1 - b1) * g[i];
    v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
    u[i] = m[i] / (std::sqrt(v[i]) + eps) + wd * p[i];
    p_sq += p[i] * p[i];
    u_sq += u[i] * u[i];
  }
  double trust = p_sq > 0 && u_sq > 0 ? std::sqrt(p_sq) / std::sqrt(u_sq) : 1.0;
  trust = std::min(max_coeff, std::max(min_coeff, trust));
  const double step_size = lr * std::sqrt(1 - std::pow(b2, step)) / (1 - std::pow(b1, step));
  std::vector<double> out(p.size());
  for (size_t i = 0; i < p.size(); ++i) out[i] = p[i] - step_size * trust * u[i];
  return out;
}

TEST(CpuOptimizerKernels, LambStepScalesTheDirectionByTheClampedTrustRatio) {
  const std::vector<double> g = {0.4, 0.2, -0.8}, m = {0.1, 0, -0.1}, v = {0.01, 0.02, 0.03};
  // Ratios |p| / |u|: about 1.4 (unclamped), 2000 (clamped to 10), 0 (p = 0: trust 1).
  for (const std::vector<double>& p :
       std::vector<std::vector<double>>{{1, -2, 0.5}, {1000, -2000, 500}, {0, 0, 0}}) {
    SCOPED_TRACE(p[0]);
    auto out = runOp("LambStep",
                     {f32({3}, p), f32({3}, g), scalar(0.01), step(3), f32({3}, m), f32({3}, v)},
                     {{"weight_decay", 0.1}}, 3);
    const std::vector<double> want = lambByHand(p, g, m, v, 3, 0.01, 0.1, 0.01, 10);
    for (int64_t i = 0; i < 3; ++i)
      EXPECT_NEAR(out[0].getDouble(i), want[i], 1e-6 * std::max(1.0, std::abs(want[i]))) << i;
    EXPECT_NEAR(out[1].getDouble(0), 0.9 * 0.1 + 0.1 * 0.4, 1e-7);  // Adam's first moment
  }
}

// 40000 elements: several blocks' sums (in parallel) make the norms.
TEST(CpuOptimizerKernels, LambStepSumsTheNormsOverEveryBlock) {
  const int n = 40000;
  std::vector<double> p(n), g(n), m(n), v(n);
  for (int i = 0; i < n; ++i) {  // values f32 holds exactly
    p[i] = static_cast<float>(std::sin(0.01 * i));
    g[i] = static_cast<float>(std::cos(0.03 * i) * 0.1);
    m[i] = static_cast<float>(0.01 * std::sin(0.7 * i));
    v[i] = static_cast<float>(0.001 * (1 + std::cos(0.2 * i)));
  }
  auto out =
      runOp("LambStep", {f32({n}, p), f32({n}, g), scalar(0.01), step(2), f32({n}, m), f32({n}, v)},
            {{"weight_decay", 0.01}}, 3);
  const std::vector<double> want = lambByHand(p, g, m, v, 2, 0.01, 0.01, 0.01, 10);
  for (int i = 0; i < n; i += 997) EXPECT_NEAR(out[0].getDouble(i), want[i], 1e-6) << i;
}

TEST(CpuOptimizerKernels, LambStepOn16BitGradientsEqualsTheStepBetweenCasts) {
  const std::vector<double> gv = {0.4, 0.2, -0.8, 1e-3, 5, -2};
  Tensor p = f32({6}, {1, -2, 0.5, 3.25, -0.001, 7}), m = f32({6}, {0.1, 0, -0.1, 0.2, 0, 1});
  Tensor v = f32({6}, {0.01, 0.02, 0.03, 0, 0.5, 1});
  for (DType t : {DType::F16, DType::BF16})
    for (double check : {1.0, double(INFINITY)}) {
      const std::string name(dtypeName(t));
      SCOPED_TRACE(name + " check " + std::to_string(check));
      Tensor g16 = Tensor::fromDoubles(t, {6}, gv);
      Tensor g32 = runOp("Cast", {g16}, {{"to", std::string("f32")}})[0];
      auto inputs = [&](const Tensor& g) {
        return std::vector<Tensor>{p, g,           scalar(0.01), step(3),      m,
                                   v, scalar(0.5), Tensor(),     scalar(check)};
      };
      auto fused = runOp("LambStep", inputs(g16), {{"round_to", name}}, 4);
      auto plain = runOp("LambStep", inputs(g32), {}, 3);
      for (size_t k = 0; k < 3; ++k) EXPECT_EQ(bits(fused[k]), bits(plain[k])) << k;
      EXPECT_EQ(bits(fused[3]), bits(runOp("Cast", {plain[0]}, {{"to", name}})[0]));
      EXPECT_EQ(bits(plain[0]) == bits(p), check != 1.0);  // stepped unless skipped
    }
}

// Lion's and Adagrad's fused forms against the step between Casts, and an overflow
// skipping the step, as SgdStep's.
TEST(CpuOptimizerKernels, LionAndAdagradOn16BitGradientsEqualTheStepBetweenCasts) {
  const std::vector<double> gv = {0.4, 0.2, -0.8, 1e-3, 5, -2};
  Tensor p = f32({6}, {1, -2, 0.5, 3.25, -0.001, 7}), state = f32({6}, {0.1, 0, 0.1, 0.2, 0, 1});
  for (const std::string op : {"LionStep", "AdagradStep"})
    for (DType t : {DType::F16, DType::BF16}) {
      const std::string name(dtypeName(t));
      Tensor g16 = Tensor::fromDoubles(t, {6}, gv);
      Tensor g32 = runOp("Cast", {g16}, {{"to", std::string("f32")}})[0];
      for (double check : {1.0, double(INFINITY)}) {
        SCOPED_TRACE(op + " " + name + " check " + std::to_string(check));
        auto inputs = [&](const Tensor& g) {
          return std::vector<Tensor>{p,     g,           scalar(0.1), step(3),
                                     state, scalar(0.5), Tensor(),    scalar(check)};
        };
        const AttributeMap attrs = {{"weight_decay", 0.01}};
        AttributeMap fused_attrs = attrs;
        fused_attrs["round_to"] = name;
        auto fused = runOp(op, inputs(g16), fused_attrs, 3);
        auto plain = runOp(op, inputs(g32), attrs, 2);
        Tensor rounded = runOp("Cast", {plain[0]}, {{"to", name}})[0];
        for (size_t k = 0; k < 2; ++k) EXPECT_EQ(bits(fused[k]), bits(plain[k])) << k;
        EXPECT_EQ(bits(fused[2]), bits(rounded));
        EXPECT_EQ(bits(plain[0]) == bits(p), check != 1.0);  // stepped unless skipped
        EXPECT_EQ(bits(plain[1]) == bits(state), check != 1.0);
      }
    }
}

}  // namespace
}  // namespace ds
