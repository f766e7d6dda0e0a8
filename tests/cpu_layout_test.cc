// The CPU backend's channels-last layout choice (kernels/cpu/layout.h): which
// tensors it picks, and that a plan computes the same results with it as with every
// tensor in the plain NCHW layout.
#include <gtest/gtest.h>

#include <cmath>

#include "frontend/compile.h"
#include "kernels/cpu/layout.h"
#include "models/models.h"
#include "runtime/cpu_executor.h"
#include "tests/test_util.h"
#include "tests/training_fixtures.h"

namespace ds {
namespace {

using cpu::KernelContext;
using cpu::LayoutStep;
using cpu::TensorView;

// Synthetic steps over plan tensors 0..n-1 of the given types; views need only a
// non-null address, since the choice never reads data.
class StepList {
 public:
  explicit StepList(std::vector<TensorType> types) : types_(std::move(types)) {}

  void add(const std::string& op, std::vector<int> inputs, std::vector<int> outputs,
           AttributeMap attrs = {}) {
    auto ctx = std::make_unique<KernelContext>();
    ctx->op = op;
    ctx->attrs = std::move(attrs);
    for (int t : inputs) ctx->inputs.push_back(view(t));
    for (int t : outputs) ctx->outputs.push_back(view(t));
    steps_.push_back({ctx.get(), inputs, outputs});
    contexts_.push_back(std::move(ctx));
  }

  std::vector<bool> choose(const std::vector<bool>& may_reorder) const {
    return cpu::chooseChannelsLast(steps_, may_reorder);
  }

 private:
  TensorView view(int t) { return TensorView{&dummy_, types_[static_cast<size_t>(t)]}; }

  std::vector<TensorType> types_;
  std::vector<std::unique_ptr<KernelContext>> contexts_;
  std::vector<LayoutStep> steps_;
  float dummy_ = 0;
};

TEST(CpuLayout, ConvBlocksStayChannelsLastBetweenPlainEnds) {
  const TensorType act{DType::F32, {2, 8, 6, 6}}, weight{DType::F32, {8, 8, 3, 3}},
      ch{DType::F32, {8}}, pooled{DType::F32, {2, 8, 1, 1}};
  // 0 input (a feed), 1 w (persistent), 2 conv, 3-6 bn params, 7 bn, 8 relu, 9 conv,
  // 10 add, 11 pooled, 12 conv feeding 13, a relu read by an op without a rule,
  // 14 the plan output.
  StepList steps({act, weight, act, ch, ch, ch, ch, act, act, act, act, pooled, act, act, act});
  steps.add("Conv", {0, 1}, {2});
  steps.add("BatchNormalization", {2, 3, 4, 5, 6}, {7});
  steps.add("Relu", {7}, {8});
  steps.add("Conv", {8, 1}, {9});
  steps.add("Add", {9, 8}, {10});
  steps.add("GlobalAveragePool", {10}, {11});
  steps.add("Conv", {10, 1}, {12});
  steps.add("Relu", {12}, {13});
  steps.add("Transpose", {13}, {14});  // no rule: 13, and 12 with it, stay plain
  std::vector<bool> may_reorder(15, true);
  may_reorder[0] = may_reorder[1] = may_reorder[14] = false;
  std::vector<bool> expected(15, false);
  for (int t : {2, 7, 8, 9, 10}) expected[static_cast<size_t>(t)] = true;
  EXPECT_EQ(steps.choose(may_reorder), expected);
}

TEST(CpuLayout, MixedGroupsAndBroadcastsStayPlain) {
  const TensorType act{DType::F32, {2, 4, 5, 5}}, weight{DType::F32, {4, 4, 1, 1}},
      bias{DType::F32, {1, 4, 1, 1}}, mask{DType::Bool, {2, 4, 5, 5}};
  // 0 feed, 1 weight, 2 conv, 3 bias, 4 biased, 5 conv, 6 conv, 7 its Equal mask.
  StepList steps({act, weight, act, bias, act, act, act, mask});
  steps.add("Conv", {0, 1}, {2});
  steps.add("Add", {2, 3}, {4});  // broadcasts a per-channel bias: plain only
  steps.add("Conv", {4, 1}, {5});
  steps.add("Conv", {5, 1}, {6});
  steps.add("Equal", {6, 6}, {7});  // a bool result cannot share 6's layout
  std::vector<bool> may_reorder(8, true);
  may_reorder[0] = may_reorder[1] = false;
  std::vector<bool> expected(8, false);
  expected[5] = true;  // between two convolutions only
  EXPECT_EQ(steps.choose(may_reorder), expected);
}

PlanFile forwardPlan(const onnx::ModelProto& model, const std::string& name, int64_t batch) {
  std::string path = test::scratch(name + ".onnx");
  saveModel(model, path);
  CompileOptions o;
  o.model_path = path;
  o.micro_batch = batch;
  return buildPlan(compile(o), path);
}

Tensor seededInput(TensorType type, uint64_t seed) {
  Tensor t(type);
  uint64_t x = seed;
  for (int64_t i = 0; i < t.numel(); ++i) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    t.setDouble(i, static_cast<double>(x >> 40) / static_cast<double>(1 << 24) - 0.5);
  }
  return t;
}

// Runs `plan` on `input` with channels-last on or off (and memory poisoning on).
Tensor runForward(const PlanFile& plan, const Tensor& input, bool channels_last) {
  CpuExecutor exec(plan, {.poison_freed = true, .channels_last = channels_last});
  exec.setFeed("input", input);
  exec.run();
  return exec.output(0);
}

// The same logits with activations channels-last as with all of them plain, for a
// BasicBlock and a Bottleneck ResNet (strided 1x1 downsampling, max pooling).
TEST(CpuLayout, ResNetForwardMatchesThePlainLayout) {
  for (int depth : {18, 50}) {
    ResNetOptions options;
    options.depth = depth;
    options.image = 32;
    PlanFile plan = forwardPlan(buildResNet(options), "layout_r" + std::to_string(depth), 2);
    Tensor input = seededInput({DType::F32, {2, 3, 32, 32}}, 11);
    Tensor plain = runForward(plan, input, false), last = runForward(plan, input, true);
    ASSERT_EQ(plain.type(), last.type());
    double worst = 0;
    for (int64_t i = 0; i < plain.numel(); ++i) {
      ASSERT_TRUE(std::isfinite(last.getDouble(i))) << i;
      worst = std::max(worst, std::abs(plain.getDouble(i) - last.getDouble(i)) /
                                  (std::abs(plain.getDouble(i)) + 1e-3));
    }
    // Only summation orders differ (BatchNorm statistics by rows instead of planes).
    EXPECT_LT(worst, 1e-5) << "resnet" << depth;
  }
}

}  // namespace
}  // namespace ds
