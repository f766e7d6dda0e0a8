// The pack-attention pass and FusedAttention's packed form on the CPU: attention
// whose Q, K and V are a projection's output split in three reads that output as
// [B, T, 3, H, D] instead; the output and the gradient of the projection are what
// the split form computes (CPU, f64 to 1e-12, f32 within rounding), with no Split
// and no Concat left; any other split stays as it is.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "ir/text.h"
#include "ir/verifier.h"
#include "passes/autodiff.h"
#include "passes/pack_attention.h"
#include "tests/test_util.h"
#include "tests/training_fixtures.h"

namespace ds {
namespace {

// Self-attention over X [2, 5, 18] split into Q, K and V [2, 5, 6] (3 heads of 2);
// SPLIT is the Split, T the dtype.
std::string attention(const std::string& t, const std::string& split = "{axis = 2}") {
  std::string text = R"(graph g {
    input %x : T[2,5,18]
    %q, %k, %v = Split(%x) SPLIT : T[2,5,6], T[2,5,6], T[2,5,6] @split
    %qh = Reshape(%q) {shape = [0, 5, 3, 2]} : T[2,5,3,2] @qh
    %kh = Reshape(%k) {shape = [0, 5, 3, 2]} : T[2,5,3,2] @kh
    %vh = Reshape(%v) {shape = [0, 5, 3, 2]} : T[2,5,3,2] @vh
    %y, %l = FusedAttention(%qh, %kh, %vh) {causal = 1, scale = 0.8} : T[2,5,3,2], L[2,3,5] @attention
    return %y
  })";
  text = test::replaceAll(text, "SPLIT", split);
  text = test::replaceAll(text, "T[", t + "[");
  return test::replaceAll(text, "L[", (t == "f64" ? "f64" : "f32") + std::string("["));
}

TEST(PackAttention, SplitProjectionIsReadPacked) {
  for (const std::string t : {"f32", "f64"})
    for (const std::string split : {"{axis = 2}", "{axis = -1, split = [6, 6, 6]}"}) {
      SCOPED_TRACE(t + " " + split);
      auto before = parseGraph(attention(t, split));
      auto after = parseGraph(attention(t, split));
      EXPECT_TRUE(packAttention(*after));
      verifyGraph(*after);
      ASSERT_EQ(after->numNodes(), 2u) << printGraph(*after);
      const Node& packed = *after->nodes().back();
      EXPECT_EQ(packed.op(), "FusedAttention");
      ASSERT_EQ(packed.numInputs(), 1u);
      EXPECT_EQ(packed.input(0)->shape(), (Shape{2, 5, 3, 3, 2}));
      EXPECT_EQ(packed.i("causal"), 1);
      EXPECT_FLOAT_EQ(static_cast<float>(packed.f("scale")), 0.8f);
      const double tolerance = t == "f32" ? 1e-5 : 1e-12;
      std::vector<Tensor> want = test::outputAndGradients(*before, {"x"}, 2, 7);
      std::vector<Tensor> got = test::outputAndGradients(*after, {"x"}, 2, 7);
      ASSERT_EQ(got.size(), 2u);
      for (size_t o = 0; o < 2; ++o)
        for (int64_t i = 0; i < want[o].numel(); ++i)
          EXPECT_NEAR(got[o].getDouble(i), want[o].getDouble(i), tolerance)
              << "output " << o << " element " << i;
    }
}

// The backward of the packed form is one FusedAttentionGrad with one output, dX's
// own shape: no Concat gathers dQ, dK and dV.
TEST(PackAttention, GradientIsOnePackedStep) {
  auto g = parseGraph(attention("f64"));
  ASSERT_TRUE(packAttention(*g));
  Value* y = g->outputs()[0];
  Value* r = g->addConstant("r", Tensor({y->dtype(), y->shape()}));
  Value* loss = g->addNode("Mul", {y, r}, {}, {"yr"})->output(0);
  loss = g->addNode("ReduceSum", {loss}, {{"keepdims", int64_t{0}}}, {"loss"})->output(0);
  buildGradients(*g, loss, {g->value("x")});
  verifyGraph(*g);
  int grads = 0;
  for (const auto& n : g->nodes()) {
    EXPECT_NE(n->op(), "Concat") << printGraph(*g);
    if (n->op() != "FusedAttentionGrad") continue;
    ++grads;
    ASSERT_EQ(n->numOutputs(), 1u);
    EXPECT_EQ(n->output(0)->shape(), (Shape{2, 5, 3, 3, 2}));
  }
  EXPECT_EQ(grads, 1);
}

TEST(PackAttention, LeavesOtherSplitsAlone) {
  auto expectUnpacked = [](const std::string& text) {
    auto g = parseGraph(text);
    EXPECT_FALSE(packAttention(*g)) << text;
  };
  // Unequal parts: V is the wider.
  std::string unequal = attention("f32", "{axis = 2, split = [4, 4, 10]}");
  unequal = test::replaceAll(unequal, "f32[2,5,6], f32[2,5,6], f32[2,5,6]",
                             "f32[2,5,4], f32[2,5,4], f32[2,5,10]");
  unequal = test::replaceAll(unequal, "%q) {shape = [0, 5, 3, 2]} : f32[2,5,3,2]",
                             "%q) {shape = [0, 5, 2, 2]} : f32[2,5,2,2]");
  unequal = test::replaceAll(unequal, "%k) {shape = [0, 5, 3, 2]} : f32[2,5,3,2]",
                             "%k) {shape = [0, 5, 2, 2]} : f32[2,5,2,2]");
  unequal = test::replaceAll(unequal, "%v) {shape = [0, 5, 3, 2]} : f32[2,5,3,2]",
                             "%v) {shape = [0, 5, 2, 5]} : f32[2,5,2,5]");
  unequal = test::replaceAll(unequal, ": f32[2,5,3,2], f32[2,3,5] @attention",
                             ": f32[2,5,2,5], f32[2,2,5] @attention");
  expectUnpacked(unequal);
  // K is also returned.
  std::string shared = attention("f32");
  shared = test::replaceAll(shared, "return %y", "return %y, %k");
  expectUnpacked(shared);
  // A head view also read by another node.
  std::string read = attention("f32");
  read = test::replaceAll(read, "return %y", "return %y, %n");
  read.replace(read.find("    %y, %l"), 0, "    %n = Neg(%kh) : f32[2,5,3,2] @reads_k\n");
  expectUnpacked(read);
  // K and V from a second split of the same projection.
  std::string second = attention("f32");
  second.replace(
      second.find("    %qh"), 0,
      "    %q2, %k2, %v2 = Split(%x) {axis = 2} : f32[2,5,6], f32[2,5,6], f32[2,5,6] @split2\n");
  second = test::replaceAll(second, "Reshape(%k)", "Reshape(%k2)");
  second = test::replaceAll(second, "Reshape(%v)", "Reshape(%v2)");
  expectUnpacked(second);
  // Split along the tokens, not the features.
  expectUnpacked(R"(graph g {
    input %x : f32[2,15,6]
    %q, %k, %v = Split(%x) {axis = 1} : f32[2,5,6], f32[2,5,6], f32[2,5,6] @split
    %qh = Reshape(%q) {shape = [0, 5, 3, 2]} : f32[2,5,3,2] @qh
    %kh = Reshape(%k) {shape = [0, 5, 3, 2]} : f32[2,5,3,2] @kh
    %vh = Reshape(%v) {shape = [0, 5, 3, 2]} : f32[2,5,3,2] @vh
    %y, %l = FusedAttention(%qh, %kh, %vh) : f32[2,5,3,2], f32[2,3,5] @attention
    return %y
  })");
  // Q and K swapped: the packed form would read them in the wrong thirds.
  expectUnpacked(test::replaceAll(attention("f32"), "FusedAttention(%qh, %kh, %vh)",
                                  "FusedAttention(%kh, %qh, %vh)"));
}

TEST(PackAttention, DsmodelGptTrainsWithPackedAttention) {
  const std::string onnx = test::scratch("pack_attention_gpt.onnx");
  auto r =
      test::tool("dsmodel", "gpt --layers 2 --d-model 32 --heads 4 --vocab 40 --seq 8 -o " + onnx);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string plan = test::scratch("pack_attention_gpt.plan");
  r = test::tool("dscompile", onnx + " --batch 2 --loss cross_entropy --dump summary -o " + plan);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(test::contains(r.output, "FusedAttentionGrad 2")) << r.output;
  EXPECT_FALSE(test::contains(r.output, "Split ")) << r.output;
  EXPECT_FALSE(test::contains(r.output, "Concat ")) << r.output;
  // It trains as the split form does.
  const std::string split_plan = test::scratch("pack_attention_gpt_split.plan");
  r = test::tool("dscompile", onnx +
                                  " --batch 2 --loss cross_entropy --disable-pass "
                                  "pack-attention -o " +
                                  split_plan);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto packed = test::tool("dsrun", plan + " --data synthetic --steps 3");
  auto split = test::tool("dsrun", split_plan + " --data synthetic --steps 3");
  ASSERT_EQ(packed.exit_code, 0) << packed.output;
  ASSERT_EQ(split.exit_code, 0) << split.output;
  EXPECT_EQ(test::trainedLosses(packed.output), test::trainedLosses(split.output));
}

}  // namespace
}  // namespace ds
