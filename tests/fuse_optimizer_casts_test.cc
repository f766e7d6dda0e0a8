// The fuse-optimizer-casts pass: mixed precision's AdamStep reads the 16-bit
// gradient and writes the rounded 16-bit parameter itself, and the gradient norm
// sums the 16-bit gradient into f32 — computing, to the bit, what the Casts around
// the step computed (CPU), at every ZeRO stage, with and without optimizer offload.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ir/text.h"
#include "ir/verifier.h"
#include "passes/dead_code.h"
#include "passes/fuse_optimizer_casts.h"
#include "passes/lower_to_plan.h"
#include "passes/memory_plan.h"
#include "runtime/cpu_executor.h"
#include "tests/training_fixtures.h"

namespace ds {
namespace {

using test::tool;

// A 16-bit gradient widened for the norm and an AdamStep, whose master is rounded
// back to 16 bits; `extra` adds one more reader of the widened gradient.
std::unique_ptr<Graph> stepBetweenCasts(const std::string& t, const std::string& extra = "") {
  std::string text = R"(graph opt {
    input %g : T[6]
    input %p : f32[6]
    input %m : f32[6]
    const %v : f32[6] = [0.01, 0.02, 0, 0.5, 1, 0.25]
    const %lr : f32[] = [0.01]
    const %s : i64[] = [3]
    %g32 = Cast(%g) {to = "f32"} : f32[6] @widen
    %n = ReduceSumSquare(%g32) {keepdims = 0} : f32[] @norm
    %p2, %m2, %v2 = AdamStep(%p, %g32, %lr, %s, %m, %v) {weight_decay = 0.1} : f32[6], f32[6], f32[6] @step
    %p16 = Cast(%p2) {to = "T"} : T[6] @round
)" + extra + R"(    return %n, %p16, %p2, %m2, %v2
  })";
  for (size_t at; (at = text.find("T[")) != std::string::npos;) text.replace(at, 1, t);
  for (size_t at; (at = text.find("\"T\"")) != std::string::npos;) text.replace(at + 1, 1, t);
  return parseGraph(text);
}

std::vector<Tensor> run(Graph& g) {
  eliminateDeadCode(g);
  verifyGraph(g);
  return test::outputsOf<CpuExecutor>(lowerToPlan(g, planMemory(g), {}));
}

std::string bits(const Tensor& t) {
  return std::string(reinterpret_cast<const char*>(t.raw()), t.bytes());
}

TEST(FuseOptimizerCasts, TheStepReadsTheNarrowGradientAndRoundsTheMaster) {
  for (const std::string t : {"f16", "bf16"}) {
    SCOPED_TRACE(t);
    auto fused = stepBetweenCasts(t);
    ASSERT_TRUE(fuseOptimizerCasts(*fused));
    std::vector<Tensor> got = run(*fused);
    EXPECT_EQ(test::countOps(*fused, "Cast"), 0);
    const Node* step = fused->value("m2")->producer();
    EXPECT_EQ(step->input(1)->name(), "g");
    EXPECT_EQ(step->s("round_to"), t);
    EXPECT_EQ(fused->value("n")->producer()->s("to"), "f32");
    auto plain = stepBetweenCasts(t);
    std::vector<Tensor> want = run(*plain);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(got[i].type(), want[i].type()) << "output " << i;
      EXPECT_EQ(bits(got[i]), bits(want[i])) << "output " << i;
    }
  }
}

// A widened gradient that something else reads stays; the rounding still fuses.
TEST(FuseOptimizerCasts, AWidenedGradientWithOtherReadersStays) {
  auto g = stepBetweenCasts("f16", "    %other = Mul(%g32, %g32) : f32[6] @other\n");
  ASSERT_TRUE(fuseOptimizerCasts(*g));
  EXPECT_EQ(g->value("m2")->producer()->input(1)->name(), "g32");
  EXPECT_TRUE(g->value("n")->producer()->s("to").empty());
  EXPECT_EQ(g->value("m2")->producer()->s("round_to"), "f16");
}

// ---- whole plans: dscompile with and without the pass, trained by dsrun ----

const std::string& mlpModel() {
  static const std::string path = test::writeModel(test::parseOnnxText(test::mlpText(false)),
                                                   test::scratchName("fuse_casts_mlp.onnx"));
  return path;
}

// `dtype` fp16 (its loss scale starting at 2^scale_power: 2^24 overflows the first
// steps, which the fused step must skip as the plain one does) or bf16.
nlohmann::json config(int stage, bool offload, const std::string& dtype, int scale_power,
                      const std::string& optimizer = "AdamW") {
  nlohmann::json zero = {{"stage", stage},
                         {"reduce_bucket_size", 100},
                         {"stage3_prefetch_bucket_size", 100},
                         {"stage3_param_persistence_threshold", 10}};
  if (offload) zero["offload_optimizer"] = {{"device", "cpu"}};
  nlohmann::json c = {
      {"train_micro_batch_size_per_gpu", 4},
      {"gradient_clipping", 1.0},
      {"optimizer", {{"type", optimizer}, {"params", {{"lr", 1e-2}, {"weight_decay", 0.01}}}}},
      {"zero_optimization", zero}};
  if (optimizer == "SGD") c["optimizer"]["params"]["momentum"] = 0.9;
  c[dtype] = {{"enabled", true}};
  if (dtype == "fp16") c[dtype]["initial_scale_power"] = scale_power;
  return c;
}

std::string compile(const nlohmann::json& c, const std::string& tag, const std::string& flags) {
  const std::string path = test::scratch("fuse_casts_" + tag + ".json");
  test::writeFile(path, c.dump());
  const std::string plan = test::scratch("fuse_casts_" + tag + ".plan");
  auto r = tool("dscompile", mlpModel() + " --loss cross_entropy --gpus 2 --config " + path +
                                 " -o " + plan + flags);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return plan;
}

TEST(FuseOptimizerCasts, PlansTrainToTheBitAsWithoutThePass) {
  struct Case {
    int stage;
    bool offload;
    std::string dtype;
    int scale_power;
    std::string optimizer = "AdamW";
  };
  const std::vector<Case> cases = {
      {0, false, "fp16", 8},        {1, false, "bf16", 0},        {2, true, "fp16", 24},
      {3, false, "fp16", 24},       {3, true, "bf16", 0},         {3, true, "fp16", 8},
      {0, false, "bf16", 0, "SGD"}, {3, true, "fp16", 24, "SGD"},
  };
  for (const Case& k : cases) {
    const std::string tag = k.optimizer + "_z" + std::to_string(k.stage) +
                            (k.offload ? "_off_" : "_") + k.dtype + "_" +
                            std::to_string(k.scale_power);
    SCOPED_TRACE(tag);
    const nlohmann::json c = config(k.stage, k.offload, k.dtype, k.scale_power, k.optimizer);
    const std::string fused_plan = compile(c, tag + "_fused", "");
    const std::string plain_plan =
        compile(c, tag + "_plain", " --disable-pass fuse-optimizer-casts");
    // Losses, loss scales and the exported f32 masters after 6 steps.
    test::TrainedRun fused = test::trainPlan(fused_plan, "fuse_casts_" + tag + "_fused", 6, 0.41);
    test::TrainedRun plain = test::trainPlan(plain_plan, "fuse_casts_" + tag + "_plain", 6, 0.41);
    test::expectSameTraining(fused, plain, 6);

    // The fused plan has no f32 gradient copy: every step of an f32 master reads a
    // 16-bit gradient (offloaded: the 16-bit gradient goes down to the host).
    const PlanFile plan = readPlanFile(fused_plan);
    int steps = 0;
    for (const planpb::Step& s : plan.plan.ranks(0).steps()) {
      if (s.op() != "AdamStep" && s.op() != "SgdStep") continue;
      ++steps;
      const auto grad = static_cast<DType>(plan.plan.tensors(s.inputs(1)).dtype());
      EXPECT_NE(grad, DType::F32) << s.node();
    }
    EXPECT_GT(steps, 0);
  }
}

TEST(FuseOptimizerCasts, OnlyOptimisationPassesCanBeDisabled) {
  const std::string path = test::scratch("fuse_casts_cli.json");
  test::writeFile(path, config(1, false, "bf16", 0).dump());
  auto unknown = tool("dscompile", mlpModel() + " --loss cross_entropy --config " + path +
                                       " --disable-pass fuse-everything");
  EXPECT_EQ(unknown.exit_code, 2) << unknown.output;
  EXPECT_NE(unknown.output.find("unknown pass 'fuse-everything'"), std::string::npos)
      << unknown.output;
  auto required = tool("dscompile", mlpModel() + " --loss cross_entropy --config " + path +
                                        " --disable-pass dead-code");
  EXPECT_EQ(required.exit_code, 2) << required.output;
  EXPECT_NE(required.output.find("'dead-code' is not an optimisation"), std::string::npos)
      << required.output;
}

}  // namespace
}  // namespace ds
