// fp16 and bf16 training (DeepSpeed's fp16.enabled / bf16.enabled) on the CPU
// backend, which stores 16-bit values and rounds them as a GPU computing in f32
// would: the loss follows fp32 training's within 2% over 20 steps for an MLP, a
// BatchNorm CNN and a GPT; the plan holds 16-bit parameters with f32 masters; and
// dynamic loss scaling skips overflowing steps and lowers the scale.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ir/plan.h"
#include "ir/text.h"
#include "ir/verifier.h"
#include "passes/autodiff.h"
#include "passes/lower_to_plan.h"
#include "passes/memory_plan.h"
#include "runtime/cpu_executor.h"
#include "runtime/npy.h"
#include "tests/training_fixtures.h"

namespace ds {
namespace {

using test::tool;

struct Model {
  std::string name, onnx;
  int64_t micro;
};

Model textModel(const std::string& name, const std::string& text, int64_t micro) {
  return {name,
          test::writeModel(test::parseOnnxText(text), test::scratchName("mp_" + name + ".onnx")),
          micro};
}

Model gptModel() {
  std::string path = test::scratch("mp_gpt.onnx");
  auto r = tool("dsmodel", "gpt --layers 2 --d-model 32 --heads 2 --vocab 50 --seq 8 -o " + path);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return {"gpt", path, 4};
}

std::string compile(const Model& m, const std::string& precision, const std::string& extra_fp16,
                    const std::string& tag) {
  nlohmann::json config = {
      {"train_micro_batch_size_per_gpu", m.micro},
      {"optimizer", {{"type", "AdamW"}, {"params", {{"lr", 2e-3}, {"weight_decay", 0.01}}}}}};
  if (precision == "fp16")
    config["fp16"] =
        nlohmann::json::parse(R"({"enabled": true, "initial_scale_power": 12)" + extra_fp16 + "}");
  if (precision == "bf16") config["bf16"] = {{"enabled", true}};
  const std::string config_path = test::scratch("mp_" + tag + ".json");
  test::writeFile(config_path, config.dump());
  const std::string plan = test::scratch("mp_" + tag + ".plan");
  auto r =
      tool("dscompile", m.onnx + " --loss cross_entropy --config " + config_path + " -o " + plan);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return plan;
}

std::vector<nlohmann::json> train(const std::string& plan, const std::string& tag, int steps,
                                  int64_t samples) {
  const std::string metrics = test::scratch("mp_" + tag + ".jsonl");
  auto r = tool("dsrun", plan + test::writeFeedData(plan, "mp_" + tag, samples, 0.71) +
                             " --steps " + std::to_string(steps) + " --metrics " + metrics);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::vector<nlohmann::json> out;
  std::ifstream in(metrics);
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

class MixedPrecision : public ::testing::TestWithParam<std::string> {};

TEST_P(MixedPrecision, LossFollowsFp32TrainingWithinTwoPercentOver20Steps) {
  const std::string precision = GetParam();
  for (const Model& m : {textModel("mlp", test::mlpText(false), 8),
                         textModel("cnn", test::bnCnnText(), 8), gptModel()}) {
    SCOPED_TRACE(m.name + " in " + precision);
    auto fp32 = train(compile(m, "fp32", "", m.name + "_fp32"), m.name + "_fp32", 20, 64);
    const std::string tag = m.name + "_" + precision;
    auto low = train(compile(m, precision, "", tag), tag, 20, 64);
    ASSERT_EQ(fp32.size(), 20u);
    ASSERT_EQ(low.size(), 20u);
    for (size_t i = 0; i < 20; ++i) {
      const double a = low[i]["loss"].get<double>(), b = fp32[i]["loss"].get<double>();
      EXPECT_NEAR(a, b, 0.02 * std::abs(b)) << "step " << i + 1;
      EXPECT_FALSE(low[i]["skipped"].get<bool>()) << "step " << i + 1;
    }
    // Training moved: the last loss is not the first.
    EXPECT_GT(std::abs(low.back()["loss"].get<double>() - low.front()["loss"].get<double>()), 1e-3);
  }
}

INSTANTIATE_TEST_SUITE_P(Precisions, MixedPrecision, ::testing::Values("fp16", "bf16"));

// The plan keeps 16-bit parameters for the 16-bit ops, f32 masters for the optimizer,
// f32 BatchNorm affine parameters and statistics, and feeds the loss scale.
TEST(MixedPrecisionPlan, HoldsHalfParametersWithFloatMastersAndALossScaleFeed) {
  const Model m = textModel("cnn", test::bnCnnText(), 4);
  PlanFile plan = readPlanFile(compile(m, "fp16", "", "cnn_plan"));
  std::map<std::string, DType> dtype;
  std::string master;  // the flat f32 master that packs "wc.master"
  for (const planpb::TensorInfo& t : plan.plan.tensors()) {
    dtype[t.name()] = static_cast<DType>(t.dtype());
    for (const planpb::ShardPiece& piece : t.shard().pieces())
      if (piece.name() == "wc.master") master = t.name();
  }
  EXPECT_EQ(dtype.at("wc"), DType::F16);
  ASSERT_FALSE(master.empty()) << "no master copy of wc";
  EXPECT_EQ(dtype.at(master), DType::F32);
  EXPECT_EQ(dtype.at(master + ".exp_avg"), DType::F32);
  EXPECT_EQ(dtype.at("scale"), DType::F32);  // BatchNorm's affine parameters stay f32
  EXPECT_EQ(dtype.at("mean"), DType::F32);
  EXPECT_EQ(dtype.count("scale.master"), 0u);
  EXPECT_EQ(dtype.at("ds.loss_scale"), DType::F32);
}

// BatchNorm, LayerNorm and attention (fused, and its gradient) read and write their data in
// 16 bits (no f32 copy of the activations): no Cast feeds them, and their X and Y
// are 16-bit.
TEST(MixedPrecisionPlan, NormalizationsKeepTheirDataInSixteenBits) {
  struct Case {
    Model model;
    std::string precision, op;
    DType dtype;
  };
  for (const Case& c :
       {Case{textModel("cnn", test::bnCnnText(), 4), "fp16", "BatchNormalization", DType::F16},
        Case{gptModel(), "bf16", "LayerNormalization", DType::BF16},
        Case{gptModel(), "bf16", "FusedAttention", DType::BF16},
        Case{gptModel(), "bf16", "FusedAttentionGrad", DType::BF16}}) {
    SCOPED_TRACE(c.op);
    PlanFile plan = readPlanFile(compile(c.model, c.precision, "", c.model.name + "_norm"));
    std::map<int, std::string> producer;
    for (const planpb::Step& step : plan.plan.ranks(0).steps())
      for (int out : step.outputs()) producer[out] = step.op();
    int normalizations = 0;
    for (const planpb::Step& step : plan.plan.ranks(0).steps()) {
      if (step.op() != c.op) continue;
      ++normalizations;
      EXPECT_EQ(static_cast<DType>(plan.plan.tensors(step.inputs(0)).dtype()), c.dtype);
      EXPECT_EQ(static_cast<DType>(plan.plan.tensors(step.outputs(0)).dtype()), c.dtype);
      EXPECT_NE(producer[step.inputs(0)], "Cast") << step.node();
    }
    EXPECT_GT(normalizations, 0);
  }
}

// Forward outputs and the gradients of every input of the graph `body` (which
// defines %y and %z, 16-bit) under loss = Σ y·r + Σ z·q, on the CPU.
std::vector<Tensor> normOutputsAndGradients(const std::string& body) {
  auto g = parseGraph("graph norms {" + body + "\n return %y, %z\n}");
  auto weighted = [&](Value* v, double phase) {
    Tensor r({DType::F32, v->shape()});
    for (int64_t i = 0; i < r.numel(); ++i) r.setDouble(i, std::sin(phase * double(i)));
    Value* wide = g->addNode("Cast", {v}, {{"to", std::string("f32")}})->output(0);
    Value* prod = g->addNode("Mul", {wide, g->addConstant(g->uniqueName("r"), r)})->output(0);
    return g->addNode("ReduceSum", {prod}, {{"keepdims", int64_t{0}}})->output(0);
  };
  Value* loss =
      g->addNode("Add", {weighted(g->value("y"), 0.7), weighted(g->value("z"), 1.3)}, {}, {"loss"})
          ->output(0);
  std::vector<Value*> wrt = {g->value("x"), g->value("s"), g->value("b"),
                             g->value("h"), g->value("g"), g->value("c")};
  auto grads = buildGradients(*g, loss, wrt);
  for (Value* v : wrt) g->addOutput(grads.at(v));
  verifyGraph(*g);
  return test::outputsOf<CpuExecutor>(lowerToPlan(*g, planMemory(*g), {}));
}

// ... and that means what Cast -> f32 op -> Cast means, to the bit: the CPU widens
// 16-bit inputs exactly and rounds 16-bit outputs once (kernels/cpu/promote16.h).
TEST(MixedPrecisionPlan, SixteenBitNormalizationsEqualCastF32NormCast) {
  const std::string params = R"(
    input %s : f32[3]
    input %b : f32[3]
    const %m : f32[3] = [0.0, 0.1, -0.1]
    const %v : f32[3] = [1.0, 0.5, 2.0]
    input %g : f32[8]
    input %c : f32[8]
    input %x : f16[4,3,5,5]
    input %h : bf16[2,6,8])";
  const std::string direct = params + R"(
    %y, %rm, %rv = BatchNormalization(%x, %s, %b, %m, %v) {training_mode = 1} : f16[4,3,5,5], f32[3], f32[3] @bn
    %z = LayerNormalization(%h, %g, %c) : bf16[2,6,8] @ln)";
  const std::string casts = params + R"(
    %x32 = Cast(%x) {to = "f32"} : f32[4,3,5,5] @x32
    %y32, %rm, %rv = BatchNormalization(%x32, %s, %b, %m, %v) {training_mode = 1} : f32[4,3,5,5], f32[3], f32[3] @bn
    %y = Cast(%y32) {to = "f16"} : f16[4,3,5,5] @y16
    %h32 = Cast(%h) {to = "f32"} : f32[2,6,8] @h32
    %z32 = LayerNormalization(%h32, %g, %c) : f32[2,6,8] @ln
    %z = Cast(%z32) {to = "bf16"} : bf16[2,6,8] @z16)";
  std::vector<Tensor> got = normOutputsAndGradients(direct);
  std::vector<Tensor> want = normOutputsAndGradients(casts);
  ASSERT_EQ(got.size(), 8u);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_EQ(got[i].type(), want[i].type()) << "output " << i;
    EXPECT_EQ(std::memcmp(got[i].raw(), want[i].raw(), want[i].bytes()), 0) << "output " << i;
  }
}

// The loss reads 16-bit logits as they are: its loss is Cast -> f32 loss to the
// bit, and its gradient that loss's gradient rounded once to 16 bits (what the
// Cast's gradient does), on the CPU.
TEST(MixedPrecisionPlan, CrossEntropyOnSixteenBitScoresEqualsCastThenLoss) {
  const std::string head = R"(graph ce {
    input %s : bf16[6,9]
    const %t : i64[6] = [0, 8, 3, 4, 1, 7])";
  const std::string direct = head + R"(
    %loss = SoftmaxCrossEntropyLoss(%s, %t) : f32[] @ce
    return %loss
  })";
  const std::string casts = head + R"(
    %s32 = Cast(%s) {to = "f32"} : f32[6,9] @wide
    %loss = SoftmaxCrossEntropyLoss(%s32, %t) : f32[] @ce
    return %loss
  })";
  auto lossAndGradient = [](const std::string& text) {
    auto g = parseGraph(text);
    Value* s = g->value("s");
    auto grads = buildGradients(*g, g->outputs()[0], {s});
    EXPECT_EQ(grads.at(s)->dtype(), DType::BF16);
    g->addOutput(grads.at(s));
    verifyGraph(*g);
    return test::outputsOf<CpuExecutor>(lowerToPlan(*g, planMemory(*g), {}));
  };
  std::vector<Tensor> got = lossAndGradient(direct), want = lossAndGradient(casts);
  ASSERT_EQ(got.size(), 2u);
  ASSERT_EQ(want.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    ASSERT_EQ(got[i].type(), want[i].type()) << "output " << i;
    EXPECT_EQ(std::memcmp(got[i].raw(), want[i].raw(), want[i].bytes()), 0) << "output " << i;
  }
  // And mixed precision leaves GPT's logits to the loss so: no Cast feeds it.
  PlanFile plan = readPlanFile(compile(gptModel(), "bf16", "", "gpt_ce16"));
  std::map<int, std::string> producer;
  for (const planpb::Step& step : plan.plan.ranks(0).steps())
    for (int out : step.outputs()) producer[out] = step.op();
  int losses = 0;
  for (const planpb::Step& step : plan.plan.ranks(0).steps()) {
    if (step.op() != "SoftmaxCrossEntropyLoss") continue;
    ++losses;
    EXPECT_EQ(static_cast<DType>(plan.plan.tensors(step.inputs(0)).dtype()), DType::BF16);
    EXPECT_NE(producer[step.inputs(0)], "Cast");
    EXPECT_EQ(static_cast<DType>(plan.plan.tensors(step.outputs(0)).dtype()), DType::F32);
  }
  EXPECT_EQ(losses, 1);
  // The plan's outputs: the f32 loss, then the logits in bf16, as DeepSpeed's
  // bf16 module returns them (no f32 copy of the logits), then the trainer's.
  ASSERT_GE(plan.plan.outputs_size(), 2);
  EXPECT_EQ(plan.plan.tensors(plan.plan.outputs(0)).name(), "loss");
  EXPECT_EQ(static_cast<DType>(plan.plan.tensors(plan.plan.outputs(0)).dtype()), DType::F32);
  const planpb::TensorInfo& logits = plan.plan.tensors(plan.plan.outputs(1));
  EXPECT_EQ(static_cast<DType>(logits.dtype()), DType::BF16) << logits.name();
  EXPECT_NE(producer[plan.plan.outputs(1)], "Cast") << logits.name();
}

// Dynamic loss scaling: with a huge initial scale every gradient overflows, so the
// step is skipped (the weights, hence the loss on the same batch, do not change)
// and the scale halves (hysteresis 1) until the gradients fit in fp16.
TEST(MixedPrecisionPlan, OverflowingStepsAreSkippedAndHalveTheScale) {
  const Model m = textModel("mlp", test::mlpText(false), 4);
  const std::string plan =
      compile(m, "fp16", R"(, "initial_scale_power": 40, "hysteresis": 1)", "mlp_overflow");
  // One batch of data: every step sees the same samples.
  auto steps = train(plan, "mlp_overflow", 40, 4);
  ASSERT_EQ(steps.size(), 40u);
  size_t skipped = 0;
  while (skipped < steps.size() && steps[skipped]["skipped"].get<bool>()) ++skipped;
  ASSERT_GT(skipped, 0u) << "a scale of 2^40 must overflow fp16 gradients";
  ASSERT_LT(skipped, steps.size()) << "the scale never came down far enough";
  for (size_t i = 0; i < skipped; ++i) {
    EXPECT_EQ(steps[i]["loss_scale"].get<double>(), std::ldexp(1.0, 40 - static_cast<int>(i)));
    EXPECT_EQ(steps[i]["loss"], steps[0]["loss"]) << "a skipped step changed the weights";
  }
  EXPECT_EQ(steps[skipped]["loss_scale"].get<double>(),
            std::ldexp(1.0, 40 - static_cast<int>(skipped)));
  EXPECT_TRUE(std::isfinite(steps[skipped]["grad_norm"].get<double>()));
  EXPECT_NE(steps[skipped + 1]["loss"], steps[skipped]["loss"])
      << "the applied step changed nothing";
}

}  // namespace
}  // namespace ds
