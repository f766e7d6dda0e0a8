// The pad-products pass: a 16-bit product by 2-D weights with rows of an odd
// number of columns (GPT-2's 50257-word logits) computes into rows padded to a
// multiple of 64 and slices them back; the output and the gradients of the input
// and the weights are what the unpadded product gives (CPU, within the dtype's
// rounding), and aligned, narrow or f32 products stay as they are.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "ir/text.h"
#include "ir/verifier.h"
#include "passes/pad_products.h"
#include "tests/training_fixtures.h"

namespace ds {
namespace {

// x [2, 3, 16] times weights of N columns (W [16, N], or [N, 16] read transposed).
std::string product(const std::string& t, int64_t n, bool trans_b) {
  const std::string cols = std::to_string(n);
  const std::string w = trans_b ? "[" + cols + ",16]" : "[16," + cols + "]";
  return "graph g {\n input %x : " + t + "[2,3,16]\n input %w : " + t + w +
         "\n %y = MatMul(%x, %w)" + (trans_b ? " {transB = 1}" : "") + " : " + t + "[2,3," + cols +
         "] @logits\n return %y\n}";
}

TEST(PadProducts, OddWideRowsArePaddedWithTheSameValuesAndGradients) {
  for (const char* t : {"f16", "bf16"})
    for (bool trans_b : {false, true}) {
      SCOPED_TRACE(std::string(t) + (trans_b ? " transB" : ""));
      auto before = parseGraph(product(t, 515, trans_b));
      auto after = parseGraph(product(t, 515, trans_b));
      ASSERT_TRUE(padProducts(*after));
      verifyGraph(*after);
      EXPECT_EQ(test::countOps(*after, "Concat"), 1);
      EXPECT_EQ(test::countOps(*after, "Slice"), 1);
      for (const auto& n : after->nodes())
        if (n->op() == "MatMul") {
          EXPECT_EQ(n->output(0)->shape(), (Shape{2, 3, 576}));
        }
      std::vector<Tensor> want = test::outputAndGradients(*before, {"x", "w"}, 1, 5);
      std::vector<Tensor> got = test::outputAndGradients(*after, {"x", "w"}, 1, 5);
      ASSERT_EQ(got.size(), 3u);
      const double tolerance = std::string(t) == "f16" ? 2e-3 : 1.6e-2;
      for (size_t o = 0; o < 3; ++o) {
        ASSERT_EQ(got[o].type(), want[o].type()) << "output " << o;
        for (int64_t i = 0; i < want[o].numel(); ++i)
          EXPECT_NEAR(got[o].getDouble(i), want[o].getDouble(i),
                      tolerance * std::max(1.0, std::abs(want[o].getDouble(i))))
              << "output " << o << " element " << i;
      }
    }
}

TEST(PadProducts, AlignedNarrowAndF32ProductsStayAsTheyAre) {
  EXPECT_FALSE(padProducts(*parseGraph(product("bf16", 512, false))));  // aligned
  EXPECT_FALSE(padProducts(*parseGraph(product("bf16", 509, true))));   // narrow
  EXPECT_FALSE(padProducts(*parseGraph(product("f32", 515, false))));   // not 16-bit
}

// A bf16 GPT's logits (vocabulary 515) are padded in its training plan; the
// model output keeps its shape.
TEST(PadProducts, SixteenBitGptTrainingPlansPadTheirLogits) {
  const std::string onnx = test::scratch("pad_products_gpt.onnx");
  auto r =
      test::tool("dsmodel", "gpt --layers 1 --d-model 32 --heads 2 --vocab 515 --seq 8 -o " + onnx);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string json = test::scratch("pad_products_gpt.json");
  test::writeFile(json, R"({"train_micro_batch_size_per_gpu": 2, "bf16": {"enabled": true},
    "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}}})");
  r = test::tool("dscompile", onnx + " --loss cross_entropy --config " + json +
                                  " --dump summary -o " + test::scratch("pad_products_gpt.plan"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(test::contains(r.output, "Slice 1")) << r.output;
  // The loss reads the padded logits (fuse-loss-padding): no slice gradient.
  EXPECT_FALSE(test::contains(r.output, "SliceGrad")) << r.output;
  r = test::tool("dsrun", test::scratch("pad_products_gpt.plan") + " --data synthetic --steps 2");
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

}  // namespace
}  // namespace ds
