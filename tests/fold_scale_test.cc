// The fold-scale pass: a constant scalar Mul or Div of a MatMul's output becomes
// the MatMul's alpha; the graph's outputs and the gradients of its inputs are what
// they were (CPU backend, f32 within rounding, f64 to 1e-12), and the cases it must
// leave alone stay.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "ir/text.h"
#include "ir/verifier.h"
#include "passes/dead_code.h"
#include "passes/fold_scale.h"
#include "tests/training_fixtures.h"

namespace ds {
namespace {

// Attention scores, scaled, then a softmax: T is the dtype, SCALE the scale node.
std::string attention(const std::string& t, const std::string& scale) {
  std::string text = R"(graph g {
    input %q : T[2,4,3]
    input %k : T[2,5,3]
    const %c : T[] = [0.125]
    const %d : T[1,1] = [8]
    %s = MatMul(%q, %k) {transB = 1} : T[2,4,5] @qk
    SCALE
    %p = Softmax(%y) {axis = -1} : T[2,4,5] @softmax
    return %p
  })";
  text.replace(text.find("SCALE"), 5, scale);
  for (size_t at = 0; (at = text.find("T[", at)) != std::string::npos; at += t.size())
    text.replace(at, 1, t);
  return text;
}

const Node* matmulNode(const Graph& g) {
  for (const auto& n : g.nodes())
    if (n->op() == "MatMul" && n->name() == "qk") return n.get();
  return nullptr;
}

void expectFolded(const std::string& dtype, const std::string& scale, double tolerance) {
  SCOPED_TRACE(dtype + ": " + scale);
  auto before = parseGraph(attention(dtype, scale));
  auto after = parseGraph(attention(dtype, scale));
  EXPECT_TRUE(foldScaleIntoMatMul(*after));
  eliminateDeadCode(*after);
  verifyGraph(*after);
  for (const auto& n : after->nodes()) EXPECT_TRUE(n->op() != "Mul" && n->op() != "Div");
  ASSERT_NE(matmulNode(*after), nullptr);
  EXPECT_DOUBLE_EQ(matmulNode(*after)->f("alpha"), 0.125);
  std::vector<Tensor> want = test::outputAndGradients(*before, {"q", "k"}, 2, 5);
  std::vector<Tensor> got = test::outputAndGradients(*after, {"q", "k"}, 2, 5);
  ASSERT_EQ(got.size(), 3u);
  for (size_t o = 0; o < got.size(); ++o)
    for (int64_t i = 0; i < got[o].numel(); ++i)
      EXPECT_NEAR(got[o].getDouble(i), want[o].getDouble(i),
                  tolerance * (1 + std::abs(want[o].getDouble(i))))
          << "output " << o << " element " << i;
}

TEST(FoldScale, MulByAScalarBecomesAlphaWithTheSameValuesAndGradients) {
  for (const char* t : {"f32", "f64"}) {
    const double tolerance = std::string(t) == "f32" ? 1e-6 : 1e-12;
    expectFolded(t, "%y = Mul(%s, %c) : T[2,4,5] @scale", tolerance);
    expectFolded(t, "%y = Mul(%c, %s) : T[2,4,5] @scale", tolerance);
    expectFolded(t, "%y = Div(%s, %d) : T[2,4,5] @scale", tolerance);
  }
}

TEST(FoldScale, LeavesOtherUsesAndNonScalarsAlone) {
  // The scores have a second user: folding would change what it reads.
  auto shared = parseGraph(attention("f32",
                                     "%y = Mul(%s, %c) : f32[2,4,5] @scale\n"
                                     "%e = Exp(%s) : f32[2,4,5] @other"));
  shared->addOutput(shared->value("e"));
  EXPECT_FALSE(foldScaleIntoMatMul(*shared));
  // Division of the constant by the product is not a scale.
  EXPECT_FALSE(
      foldScaleIntoMatMul(*parseGraph(attention("f32", "%y = Div(%d, %s) : f32[2,4,5] @scale"))));
  // A per-column factor is not a scalar.
  auto columns = parseGraph(R"(graph g {
    input %q : f32[2,4,3]
    input %k : f32[3,5]
    const %w : f32[5] = [1, 2, 3, 4, 5]
    %s = MatMul(%q, %k) : f32[2,4,5] @qk
    %y = Mul(%s, %w) : f32[2,4,5] @scale
    %p = Softmax(%y) {axis = -1} : f32[2,4,5] @softmax
    return %p
  })");
  EXPECT_FALSE(foldScaleIntoMatMul(*columns));
  // A scaled product that is a model output keeps its name.
  auto output = parseGraph(R"(graph g {
    input %q : f32[2,4,3]
    input %k : f32[3,5]
    const %c : f32[] = [0.5]
    %s = MatMul(%q, %k) : f32[2,4,5] @qk
    %logits = Mul(%s, %c) : f32[2,4,5] @scale
    return %logits
  })");
  EXPECT_FALSE(foldScaleIntoMatMul(*output));
  // A product that is itself a model output must keep its unscaled values.
  auto product_output = parseGraph(R"(graph g {
    input %q : f32[2,4,3]
    input %k : f32[3,5]
    const %c : f32[] = [0.5]
    %s = MatMul(%q, %k) : f32[2,4,5] @qk
    %y = Mul(%s, %c) : f32[2,4,5] @scale
    %p = Softmax(%y) {axis = -1} : f32[2,4,5] @softmax
    return %p, %s
  })");
  EXPECT_FALSE(foldScaleIntoMatMul(*product_output));
  // Integer products: a Div truncates, a scale would not.
  auto integers = parseGraph(R"(graph g {
    input %q : i64[2,3]
    input %k : i64[3,5]
    const %c : i64[] = [2]
    %s = MatMul(%q, %k) : i64[2,5] @qk
    %y = Div(%s, %c) : i64[2,5] @scale
    return %y
  })");
  EXPECT_FALSE(foldScaleIntoMatMul(*integers));
}

}  // namespace
}  // namespace ds
