// Activation checkpointing (dscompile --checkpoint-activations, passes/recompute.h):
// backward recomputes what it reads from a few checkpoints, so the plan keeps less
// memory and trains bit for bit as without it.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ir/graph.h"
#include "ir/plan.h"
#include "ir/text.h"
#include "ir/verifier.h"
#include "passes/autodiff.h"
#include "passes/recompute.h"
#include "tests/training_fixtures.h"

namespace ds {
namespace {

struct Model {
  std::string name, onnx;
};

// x[batch,8] -> 4 blocks b + tanh(dropout(relu(b W))) -> logits[batch,4]: a kept
// Dropout inside recomputed segments, whose copies read its original output.
std::string residualDropoutMlpText() {
  std::string weights, body;
  for (int i = 1; i <= 4; ++i) {
    const std::string k = std::to_string(i), in = i == 1 ? "x" : "b" + std::to_string(i - 1);
    weights += "float[8, 8] w" + k + " = {" + test::values(64, 0.5, i) + "}, ";
    body += "  h" + k + " = MatMul(" + in + ", w" + k + ")\n  r" + k + " = Relu(h" + k + ")\n  d" +
            k + ", m" + k + " = Dropout(r" + k + ", ratio, train)\n  t" + k + " = Tanh(d" + k +
            ")\n  b" + k + " = Add(t" + k + ", " + in + ")\n";
  }
  return R"(<ir_version: 8, opset_import: ["" : 17]>
residual (float[batch, 8] x) => (float[batch, 4] logits)
<)" + weights +
         "float[8, 4] wout = {" + test::values(32, 0.5, 9) + R"(}>
{
  ratio = Constant<value = float {0.2}>()
  train = Constant<value = bool {1}>()
)" + body +
         "  logits = MatMul(b4, wout)\n}\n";
}

const std::vector<Model>& models() {
  static const std::vector<Model> all = [] {
    const std::string gpt = test::scratch("recompute_gpt.onnx"),
                      resnet = test::scratch("recompute_resnet18.onnx");
    auto r = test::tool("dsmodel",
                        "gpt --layers 3 --d-model 32 --heads 4 --vocab 50 --seq 16 -o " + gpt);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    r = test::tool("dsmodel", "resnet18 --image 16 --classes 10 -o " + resnet);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return std::vector<Model>{
        {"residual_dropout", test::writeModel(test::parseOnnxText(residualDropoutMlpText()),
                                              test::scratchName("recompute_residual.onnx"))},
        {"resnet18", resnet},
        {"gpt", gpt}};
  }();
  return all;
}

// How many nodes backward recomputes in a plan (the copies' steps).
int recomputedSteps(const std::string& plan_path) {
  int n = 0;
  const PlanFile plan = readPlanFile(plan_path);
  for (const planpb::Step& s : plan.plan.ranks(0).steps())
    n += s.node().find("/recompute") != std::string::npos;
  return n;
}

std::string compile(const Model& m, const nlohmann::json& config, const std::string& tag,
                    bool recompute, int ranks) {
  const std::string path = test::scratch("recompute_" + tag + ".json");
  test::writeFile(path, config.dump());
  const std::string plan =
      test::scratch("recompute_" + tag + (recompute ? "_on" : "_off") + ".plan");
  auto r = test::tool("dscompile", m.onnx + " --loss cross_entropy --gpus " +
                                       std::to_string(ranks) + " --config " + path + " -o " + plan +
                                       (recompute ? " --checkpoint-activations" : ""));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return plan;
}

// fp32 on one rank; fp16 at ZeRO-3 on two ranks with 2 accumulation steps, each
// bucket gathered again for backward (gathers for the copies, loss scaling,
// accumulators).
TEST(Recompute, TrainsBitForBitAsWithoutIt) {
  const nlohmann::json fp32 = {{"train_micro_batch_size_per_gpu", 4},
                               {"optimizer", {{"type", "AdamW"}, {"params", {{"lr", 1e-2}}}}}};
  nlohmann::json zero3 = fp32;
  zero3["gradient_accumulation_steps"] = 2;
  zero3["fp16"] = {{"enabled", true}, {"initial_scale_power", 8}};
  zero3["zero_optimization"] = {{"stage", 3},
                                {"stage3_prefetch_bucket_size", 300},
                                {"stage3_param_persistence_threshold", 10},
                                {"stage3_max_reuse_distance", 0}};
  for (const Model& m : models())
    for (const auto& [name, config, ranks] :
         {std::tuple{"fp32", fp32, 1}, std::tuple{"fp16_zero3", zero3, 2}}) {
      const std::string tag = m.name + "_" + name;
      SCOPED_TRACE(tag);
      const std::string kept = compile(m, config, tag, false, ranks);
      const std::string recomputed = compile(m, config, tag, true, ranks);
      EXPECT_GT(recomputedSteps(recomputed), 0) << "nothing recomputed";
      const test::TrainedRun a = test::trainPlan(kept, "recompute_" + tag + "_off", 4, 0.23);
      const test::TrainedRun b = test::trainPlan(recomputed, "recompute_" + tag + "_on", 4, 0.23);
      ASSERT_EQ(a.metrics.size(), 4u);
      EXPECT_EQ(b.values("loss"), a.values("loss"));
      EXPECT_EQ(b.values("grad_norm"), a.values("grad_norm"));
      EXPECT_TRUE(b.exported == a.exported) << "the trained weights differ";
    }
}

// dscompile says what it recomputes, or that a forward plan has nothing to.
TEST(Recompute, DscompileSaysWhatItRecomputes) {
  const std::string path = test::scratch("recompute_note.json");
  test::writeFile(path, R"({"train_micro_batch_size_per_gpu": 4})");
  const Model& gpt = models().back();
  auto r = test::tool("dscompile", gpt.onnx +
                                       " --loss cross_entropy --checkpoint-activations "
                                       "--config " +
                                       path);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(test::contains(r.output, "note: --checkpoint-activations: backward recomputes "))
      << r.output;
  r = test::tool("dscompile", gpt.onnx + " --checkpoint-activations --config " + path);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(test::contains(r.output,
                             "note: --checkpoint-activations: a forward plan has no "
                             "backward to recompute for; ignored"))
      << r.output;
}

// The GPT's activations dominate its arena at this size: recomputation keeps less.
TEST(Recompute, KeepsLessActivationMemory) {
  const nlohmann::json config = {{"train_micro_batch_size_per_gpu", 64},
                                 {"optimizer", {{"type", "AdamW"}, {"params", {{"lr", 1e-3}}}}}};
  const Model& gpt = models().back();
  const PlanFile kept = readPlanFile(compile(gpt, config, "memory", false, 1));
  const PlanFile recomputed = readPlanFile(compile(gpt, config, "memory", true, 1));
  EXPECT_LT(recomputed.plan.peak_live_bytes(), kept.plan.peak_live_bytes() * 3 / 4);
  EXPECT_GT(recomputed.plan.ranks(0).steps_size(), kept.plan.ranks(0).steps_size());
}

// Four residual blocks x + tanh(BN(x W)): the cuts are the block outputs (inside a
// block, its input is read again by the Add).
std::string residualBlocks() {
  std::string text = "graph blocks {\n  input %b0 : f32[4,8]\n";
  for (int i = 1; i <= 4; ++i) {
    const std::string k = std::to_string(i);
    text += "  param %w" + k + " : f32[8,8]\n  param %s" + k + " : f32[8]\n  param %o" + k +
            " : f32[8]\n  buffer %mean" + k + " : f32[8]\n  buffer %var" + k + " : f32[8]\n";
  }
  for (int i = 1; i <= 4; ++i) {
    const std::string k = std::to_string(i), in = "%b" + std::to_string(i - 1);
    text += "  %h" + k + " = MatMul(" + in + ", %w" + k + ") : f32[4,8] @mm" + k + "\n";
    text += "  %n" + k + ", %m" + k + ", %v" + k + " = BatchNormalization(%h" + k + ", %s" + k +
            ", %o" + k + ", %mean" + k + ", %var" + k +
            ") {training_mode = 1} : f32[4,8], f32[8], f32[8] @bn" + k + "\n";
    text += "  %t" + k + " = Tanh(%n" + k + ") : f32[4,8] @tanh" + k + "\n";
    text += "  %b" + k + " = Add(%t" + k + ", " + in + ") : f32[4,8] @add" + k + "\n";
  }
  return text + "  %loss = ReduceSum(%b4) {keepdims = 0} : f32[] @loss\n  return %loss\n}\n";
}

// The copies come after forward, right before backward's first reader of their
// segment; backward reads the copies, not the originals; a training-mode
// BatchNormalization is copied with one output (the running statistics are
// updated once).
TEST(Recompute, CopiesWhatBackwardReadsBeforeItsFirstReader) {
  auto g = parseGraph(residualBlocks());
  const Node* last_forward = g->nodes().back().get();
  const size_t forward = g->numNodes();
  std::vector<Value*> params;
  for (Value* v : g->sourcesWithRole(Role::Parameter)) params.push_back(v);
  buildGradients(*g, g->value("loss"), params);
  const size_t before = g->numNodes();
  const size_t copied = recomputeActivations(*g, last_forward).copied_nodes;
  verifyGraph(*g);
  ASSERT_GT(copied, 0u);
  EXPECT_EQ(g->numNodes(), before + copied);
  size_t position = 0, first_copy = 0;
  int copied_norms = 0;
  std::set<std::string> recomputed;  // originals' names
  for (const auto& n : g->nodes()) {
    ++position;
    const size_t at = n->name().find("/recompute");
    if (at == std::string::npos) continue;
    if (first_copy == 0) first_copy = position;
    recomputed.insert(n->name().substr(0, at));
    if (n->op() != "BatchNormalization") continue;
    ++copied_norms;
    EXPECT_EQ(n->numOutputs(), 1u) << n->name();
  }
  EXPECT_GT(first_copy, forward) << "copies come after forward";
  EXPECT_GT(copied_norms, 0);
  // A recomputed value is read by forward nodes alone (or by nothing) now.
  for (const auto& n : g->nodes()) {
    if (!recomputed.count(n->name())) continue;
    for (const Value* v : n->outputs())
      for (const Node* user : v->users())
        EXPECT_TRUE(user->name().find("grad") == std::string::npos)
            << v->name() << " is still read by backward node " << user->name();
  }
}

}  // namespace
}  // namespace ds
