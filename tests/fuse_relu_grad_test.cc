// The fuse-relu-grad pass: a BatchNorm followed by a Relu trains with one
// BatchNormalizationGrad that reads the Relu's gradient and output, computing
// exactly what ReluGrad then BatchNormalizationGrad computed (CPU, f32 and f16).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "ir/text.h"
#include "ir/verifier.h"
#include "passes/autodiff.h"
#include "passes/dead_code.h"
#include "passes/fuse_relu_grad.h"
#include "passes/lower_to_plan.h"
#include "passes/memory_plan.h"
#include "runtime/cpu_executor.h"
#include "tests/training_fixtures.h"

namespace ds {
namespace {

// `text` with every "T[" written as `t` + "[".
std::string typed(std::string text, const std::string& t) {
  for (size_t at = 0; (at = text.find("T[", at)) != std::string::npos; at += t.size())
    text.replace(at, 1, t);
  return text;
}

// BatchNorm -> Relu -> a weighted sum, X and Y of type `t` (parameters f32), with
// the gradients of X, scale and bias as outputs; the pass run or not.
std::unique_ptr<Graph> bnReluTraining(const std::string& t, bool fuse) {
  auto g = parseGraph(typed(R"(graph bn_relu {
    input %x : T[4,3,5,5]
    input %s : f32[3]
    input %b : f32[3]
    const %m : f32[3] = [0, 0, 0]
    const %v : f32[3] = [1, 1, 1]
    %y = BatchNormalization(%x, %s, %b, %m, %v) {training_mode = 1} : T[4,3,5,5] @bn
    %r = Relu(%y) : T[4,3,5,5] @relu
    %w = Cast(%r) {to = "f32"} : f32[4,3,5,5] @wide
    return %w
  })",
                            t));
  Value* w = g->value("w");
  Tensor weights({DType::F32, w->shape()});
  for (int64_t i = 0; i < weights.numel(); ++i) weights.setDouble(i, std::sin(0.7 * double(i)));
  Value* prod = g->addNode("Mul", {w, g->addConstant("weights", weights)})->output(0);
  Value* loss = g->addNode("ReduceSum", {prod}, {{"keepdims", int64_t{0}}}, {"loss"})->output(0);
  const std::vector<Value*> wrt = {g->value("x"), g->value("s"), g->value("b")};
  auto grads = buildGradients(*g, loss, wrt);
  g->clearOutputs();
  for (Value* v : wrt) g->addOutput(grads.at(v));
  if (fuse) {
    EXPECT_TRUE(fuseReluIntoBatchNormGrad(*g));
  }
  eliminateDeadCode(*g);
  verifyGraph(*g);
  return g;
}

TEST(FuseReluGrad, BatchNormGradReadsTheRelusGradientAndOutput) {
  auto fused = bnReluTraining("f32", true);
  EXPECT_EQ(test::countOps(*fused, "ReluGrad"), 0);
  for (const auto& node : fused->nodes())
    if (node->op() == "BatchNormalizationGrad") {
      ASSERT_TRUE(node->hasInput(3));
      EXPECT_EQ(node->input(3)->name(), "r");
    }
  auto plain = bnReluTraining("f32", false);
  EXPECT_EQ(test::countOps(*plain, "ReluGrad"), 1);
}

// On the CPU backend, from fixed feeds. Y has zero mean per channel, so the Relu
// masks about half of the gradient.
TEST(FuseReluGrad, SameGradientsToTheBit) {
  for (const std::string t : {"f32", "f16"}) {
    SCOPED_TRACE(t);
    auto fused = bnReluTraining(t, true);
    auto plain = bnReluTraining(t, false);
    const std::vector<Tensor> want = test::cpuOutputs(*plain);
    ASSERT_EQ(want.size(), 3u);
    test::expectSameBits(test::cpuOutputs(*fused), want);
  }
}

// A ReluGrad whose result something else reads too stays.
TEST(FuseReluGrad, SharedReluGradientIsLeftAlone) {
  auto g = parseGraph(R"(graph shared {
    input %dr : f32[2,3,4]
    input %r : f32[2,3,4]
    input %x : f32[2,3,4]
    input %s : f32[3]
    %dy = ReluGrad(%dr, %r) : f32[2,3,4] @rg
    %dx, %ds, %db = BatchNormalizationGrad(%dy, %x, %s) : f32[2,3,4], f32[3], f32[3] @bng
    return %dx, %dy
  })");
  EXPECT_FALSE(fuseReluIntoBatchNormGrad(*g));
  EXPECT_EQ(test::countOps(*g, "ReluGrad"), 1);
}

}  // namespace
}  // namespace ds
