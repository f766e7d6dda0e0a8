// Gradient accumulation and the optimizer-step phase in the IR: the pass's output
// as text (which round-trips, phases included), and the verifier's rules for
// phases and chained state updates, each with its diagnostic.
#include <gtest/gtest.h>

#include "ir/error.h"
#include "ir/text.h"
#include "ir/verifier.h"
#include "passes/accumulate_grads.h"
#include "passes/add_optimizer.h"
#include "passes/autodiff.h"
#include "tests/test_util.h"

namespace ds {
namespace {

using test::contains;

std::string verifierError(const std::string& text) {
  try {
    verifyGraph(*parseGraph(text));
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(AccumulateGradients, AccumulatesEveryMicroStepAndResetsInTheOptimizerStep) {
  auto g = parseGraph(R"(graph t {
  input %x : f32[2]
  param %w : f32[2]
  %y = Mul(%x, %w) : f32[2] @mul
  %loss = ReduceSum(%y) {keepdims = 0} : f32[] @sum
  return %loss
})");
  Value* loss = g->value("loss");
  Value* scaled = scaleLoss(*g, loss, 4);
  auto grads = buildGradients(*g, scaled, {g->value("w")});
  auto accumulated = accumulateGradients(*g, grads);
  addOptimizer(*g, accumulated, {.type = "SGD", .momentum = 0.9, .gradient_clipping = 1.0});
  resetAccumulators(*g, accumulated);
  verifyGraph(*g);
  std::string text = printGraph(*g);
  for (const char* line :
       {"const %loss/accumulation_steps : f32[] = [4.0]\n",
        "%loss/accumulation_scaled = Div(%loss, %loss/accumulation_steps) : f32[] "
        "@loss/accumulation\n",
        "%w.grad_acc/sum = Add(%w.grad_acc, %w_grad) : grad f32[2] @w.grad_acc/add\n",
        "%grad_norm = Sqrt(", "@grad_norm optimizer_step\n",
        "%clip_coef = ClipCoef(%grad_norm) {max_norm = 1.0} : f32[] @clip_coef optimizer_step\n",
        "= SgdStep(%w, %w.grad_acc/sum, %ds.lr, %ds.step, %w.momentum_buffer, %clip_coef)",
        "%w.grad_acc/zero = ZerosLike(%w.grad_acc/sum) : grad f32[2] @w.grad_acc/reset "
        "optimizer_step\n",
        "update %w.grad_acc = %w.grad_acc/sum\n", "update %w.grad_acc = %w.grad_acc/zero\n"})
    EXPECT_TRUE(contains(text, line)) << line << "\n" << text;
  // The forward and backward stay in the micro-step phase.
  EXPECT_TRUE(contains(text, "@mul\n")) << text;
  EXPECT_EQ(printGraph(*parseGraph(text)), text);  // phases round-trip
}

TEST(Verifier, MicroStepNodesMustNotReadOptimizerStepValues) {
  EXPECT_EQ(verifierError(R"(graph t {
  param %w : f32[2]
  %a = Neg(%w) : f32[2] @a optimizer_step
  %b = Neg(%a) : f32[2] @b
  return %b
})"),
            "verifier: node 'b' (Neg) runs every micro-step but reads 'a', which the optimizer "
            "step computes");
}

TEST(Verifier, ChainedStateUpdatesAreReadOnlyUntilTheNextLink) {
  const std::string head = R"(graph t {
  optstate %acc : f32[2]
  input %g : f32[2]
  %sum = Add(%acc, %g) : grad f32[2] @add
)";
  EXPECT_EQ(verifierError(head + R"(  %zero = ZerosLike(%sum) : grad f32[2] @reset optimizer_step
  %late = Neg(%sum) : f32[2] @late optimizer_step
  update %acc = %sum
  update %acc = %zero
  return %late
})"),
            "verifier: node 'late' (Neg) reads 'sum' after node 'reset' (ZerosLike) has "
            "overwritten it");
  EXPECT_EQ(verifierError(head + R"(  %late = Neg(%sum) : f32[2] @late optimizer_step
  %zero = ZerosLike(%sum) : grad f32[2] @reset optimizer_step
  update %acc = %sum
  update %acc = %zero
  return %late
})"),
            "");
}

}  // namespace
}  // namespace ds
