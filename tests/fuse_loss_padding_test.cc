// The fuse-loss-padding pass: a GPT whose vocabulary pad-products pads (515 -> 576
// columns) trains with a cross-entropy loss over the padded logits, without the
// slice's gradient, to the bit as with the loss over the sliced logits (CPU).
#include <gtest/gtest.h>

#include <string>

#include <nlohmann/json.hpp>

#include "ir/plan.h"
#include "tests/training_fixtures.h"

namespace ds {
namespace {

using test::tool;

const std::string& gptModel() {
  static const std::string path = [] {
    const std::string onnx = test::scratch("loss_padding_gpt.onnx");
    auto r =
        tool("dsmodel", "gpt --layers 1 --d-model 16 --heads 2 --vocab 515 --seq 8 -o " + onnx);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return onnx;
  }();
  return path;
}

std::string compile(const std::string& dtype, const std::string& tag, const std::string& flags) {
  nlohmann::json c = {
      {"train_micro_batch_size_per_gpu", 2},
      {"optimizer", {{"type", "AdamW"}, {"params", {{"lr", 1e-2}, {"weight_decay", 0.01}}}}}};
  c[dtype] = {{"enabled", true}};
  if (dtype == "fp16") c[dtype]["initial_scale_power"] = 8;
  const std::string config = test::scratch("loss_padding_" + tag + ".json");
  test::writeFile(config, c.dump());
  const std::string plan = test::scratch("loss_padding_" + tag + ".plan");
  auto r = tool("dscompile",
                gptModel() + " --loss cross_entropy --config " + config + " -o " + plan + flags);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return plan;
}

int countSteps(const PlanFile& plan, const std::string& op) {
  int n = 0;
  for (const planpb::Step& s : plan.plan.ranks(0).steps()) n += s.op() == op;
  return n;
}

TEST(FuseLossPadding, TrainsToTheBitAsTheLossOverTheSlice) {
  for (const std::string dtype : {"bf16", "fp16"}) {
    SCOPED_TRACE(dtype);
    const std::string fused = compile(dtype, dtype + "_fused", "");
    const std::string plain = compile(dtype, dtype + "_plain", " --disable-pass fuse-loss-padding");
    const PlanFile fused_plan = readPlanFile(fused), plain_plan = readPlanFile(plain);
    EXPECT_EQ(countSteps(plain_plan, "SliceGrad"), 1) << "pad-products padded the logits";
    EXPECT_EQ(countSteps(fused_plan, "SliceGrad"), 0);
    EXPECT_EQ(countSteps(fused_plan, "Slice"), 1) << "the logits output still slices";
    test::TrainedRun a = test::trainPlan(fused, "loss_padding_" + dtype + "_fused", 4, 0.37);
    test::TrainedRun b = test::trainPlan(plain, "loss_padding_" + dtype + "_plain", 4, 0.37);
    test::expectSameTraining(a, b, 4);
  }
}

// Plans written before the `classes` attribute existed (no such attribute on their
// loss steps) still run: the whole class axis takes part.
TEST(FuseLossPadding, PlansWithoutTheClassesAttributeStillRun) {
  PlanFile plan = readPlanFile(compile("bf16", "old_plan", " --disable-pass fuse-loss-padding"));
  int stripped = 0;
  for (planpb::RankPlan& rank : *plan.plan.mutable_ranks())
    for (planpb::Step& step : *rank.mutable_steps()) {
      auto* attrs = step.mutable_attrs();
      for (int a = attrs->size() - 1; a >= 0; --a)
        if (attrs->Get(a).name() == "classes") {
          attrs->DeleteSubrange(a, 1);
          ++stripped;
        }
    }
  EXPECT_EQ(stripped, 2) << "the loss and its gradient";
  const std::string path = test::scratch("loss_padding_old.plan");
  writePlanFile(path, plan);
  auto r = tool("dsrun", path + " --data synthetic --steps 2");
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

// Labels index the real classes only: one in the padding is a bad label.
TEST(FuseLossPadding, ALabelInThePaddingIsRejected) {
  const std::string plan = compile("bf16", "bad_label", "");
  const std::string labels = test::scratch("loss_padding_bad_labels.npy");
  Tensor t(TensorType{DType::I64, {2, 8}});
  for (int64_t i = 0; i < t.numel(); ++i) t.setInt(i, i == 5 ? 520 : 1);
  writeNpy(labels, t);
  Tensor ids(TensorType{DType::I64, {2, 8}});
  for (int64_t i = 0; i < ids.numel(); ++i) ids.setInt(i, i % 7);
  const std::string tokens = test::scratch("loss_padding_tokens.npy");
  writeNpy(tokens, ids);
  const PlanFile p = readPlanFile(plan);
  std::string feeds;
  for (int index : p.plan.feeds()) {
    const std::string& name = p.plan.tensors(index).name();
    if (name.rfind("ds.", 0) == 0) continue;
    feeds += " --feed " + name + "=" + (name == "label" ? labels : tokens);
  }
  auto r = tool("dsrun", plan + feeds + " --steps 1");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  // Checked as the feed is read: the loss accepts the real classes only.
  EXPECT_NE(r.output.find("label: sample 0 has value 520, outside [0, 515)"), std::string::npos)
      << r.output;
  // Synthetic labels are drawn from the real classes too.
  r = tool("dsrun", plan + " --data synthetic --steps 2");
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

}  // namespace
}  // namespace ds
