// fp16 and bf16 training (DeepSpeed's fp16.enabled / bf16.enabled) on the CPU
// backend, which stores 16-bit values and rounds them as a GPU computing in f32
// would: the loss follows fp32 training's within 2% over 20 steps for an MLP, a
// BatchNorm CNN and a GPT; the plan holds 16-bit parameters with f32 masters; and
// dynamic loss scaling skips overflowing steps and lowers the scale.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ir/plan.h"
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
  for (const planpb::TensorInfo& t : plan.plan.tensors())
    dtype[t.name()] = static_cast<DType>(t.dtype());
  EXPECT_EQ(dtype.at("wc"), DType::F16);
  EXPECT_EQ(dtype.at("wc.master"), DType::F32);
  EXPECT_EQ(dtype.at("wc.master.exp_avg"), DType::F32);
  EXPECT_EQ(dtype.at("scale"), DType::F32);  // BatchNorm's affine parameters stay f32
  EXPECT_EQ(dtype.at("mean"), DType::F32);
  EXPECT_EQ(dtype.count("scale.master"), 0u);
  EXPECT_EQ(dtype.at("ds.loss_scale"), DType::F32);
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
