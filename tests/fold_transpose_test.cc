// The fold-transpose pass: last-two-dim Transposes of MatMul operands become
// transA/transB, other Transposes stay, and the product is unchanged (checked by
// running the graph before and after the pass on the CPU backend).
#include <gtest/gtest.h>

#include <random>
#include <string>

#include "ir/text.h"
#include "ir/verifier.h"
#include "passes/dead_code.h"
#include "passes/fold_transpose.h"
#include "passes/lower_to_plan.h"
#include "passes/memory_plan.h"
#include "runtime/cpu_executor.h"

namespace ds {
namespace {

// Runs the graph on seeded inputs in [-1, 1) and returns its first output.
Tensor runGraph(const Graph& g) {
  PlanFile plan = lowerToPlan(g, planMemory(g), {});
  CpuExecutor exec(plan);
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> u(-1, 1);
  for (const std::string& name : exec.feedNames()) {
    Tensor t(exec.feedType(name));
    for (int64_t i = 0; i < t.numel(); ++i) t.setDouble(i, u(rng));
    exec.setFeed(name, t);
  }
  exec.run();
  return exec.output(0);
}

size_t countOp(const Graph& g, const std::string& op) {
  size_t n = 0;
  for (const auto& node : g.nodes()) n += node->op() == op;
  return n;
}

void expectFoldedAndEqual(const std::string& text, const std::string& trans_attrs) {
  SCOPED_TRACE(text);
  Tensor before = runGraph(*parseGraph(text));
  auto g = parseGraph(text);
  EXPECT_TRUE(foldTransposeIntoMatMul(*g));
  eliminateDeadCode(*g);
  verifyGraph(*g);
  EXPECT_EQ(countOp(*g, "Transpose"), 0u);
  EXPECT_NE(printGraph(*g).find(trans_attrs), std::string::npos) << printGraph(*g);
  Tensor after = runGraph(*g);
  ASSERT_EQ(after.type(), before.type());
  for (int64_t i = 0; i < after.numel(); ++i)
    EXPECT_NEAR(after.getDouble(i), before.getDouble(i), 1e-5) << "element " << i;
}

// A tied GPT lm_head: logits = h · wteᵀ.
TEST(FoldTranspose, TiedHeadBecomesTransB) {
  expectFoldedAndEqual(
      "graph g {\n input %h : f32[2,3,4]\n input %wte : f32[5,4]\n"
      " %wt = Transpose(%wte) {perm = [1, 0]} : f32[4,5] @t\n"
      " %y = MatMul(%h, %wt) : f32[2,3,5] @head\n return %y\n}",
      "transB = 1");
}

TEST(FoldTranspose, BatchedBothOperandsAndDoubleTransposeCancel) {
  expectFoldedAndEqual(
      "graph g {\n input %a : f32[2,4,3]\n input %b : f32[2,5,4]\n"
      " %at = Transpose(%a) {perm = [0, 2, 1]} : f32[2,3,4] @ta\n"
      " %bt = Transpose(%b) {perm = [0, 2, 1]} : f32[2,4,5] @tb\n"
      " %y = MatMul(%at, %bt) : f32[2,3,5] @mm\n return %y\n}",
      "transA = 1, transB = 1");
}

// A transpose of an operand the MatMul already transposes cancels: transB goes back to 0.
TEST(FoldTranspose, TransposeOfTransposedOperandCancels) {
  const std::string text =
      "graph g {\n input %a : f32[3,4]\n input %b : f32[4,5]\n"
      " %bt = Transpose(%b) {perm = [1, 0]} : f32[5,4] @tb\n"
      " %y = MatMul(%a, %bt) {transB = 1} : f32[3,5] @mm\n return %y\n}";
  Tensor before = runGraph(*parseGraph(text));
  auto g = parseGraph(text);
  EXPECT_TRUE(foldTransposeIntoMatMul(*g));
  eliminateDeadCode(*g);
  verifyGraph(*g);
  ASSERT_EQ(g->numNodes(), 1u);
  EXPECT_EQ(g->nodes().front()->i("transB"), 0);
  Tensor after = runGraph(*g);
  for (int64_t i = 0; i < after.numel(); ++i)
    EXPECT_NEAR(after.getDouble(i), before.getDouble(i), 1e-5) << "element " << i;
}

TEST(FoldTranspose, OtherPermutationsAndSharedTransposesStay) {
  auto g = parseGraph(
      "graph g {\n input %a : f32[2,3,4]\n input %b : f32[3,5]\n"
      " %at = Transpose(%a) {perm = [1, 0, 2]} : f32[3,2,4] @ta\n"
      " %y = MatMul(%at, %b) {transA = 1} : f32[3,4,5] @mm\n return %y\n}");
  EXPECT_FALSE(foldTransposeIntoMatMul(*g));
  EXPECT_EQ(countOp(*g, "Transpose"), 1u);

  // A Transpose that is also a graph output is bypassed by the MatMul but kept.
  auto shared = parseGraph(
      "graph g {\n input %a : f32[3,4]\n input %b : f32[5,4]\n"
      " %bt = Transpose(%b) {perm = [1, 0]} : f32[4,5] @tb\n"
      " %y = MatMul(%a, %bt) : f32[3,5] @mm\n return %y, %bt\n}");
  EXPECT_TRUE(foldTransposeIntoMatMul(*shared));
  eliminateDeadCode(*shared);
  verifyGraph(*shared);
  EXPECT_EQ(countOp(*shared, "Transpose"), 1u);
}

}  // namespace
}  // namespace ds
