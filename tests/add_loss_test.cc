// The add-loss pass: cross-entropy over logits with trailing class axis [N, T, C]
// (a language model's) is the mean over all N x T samples, computed on flattened
// rows with no transpose; loss and gradient match a direct f64 computation.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "ir/text.h"
#include "ir/verifier.h"
#include "passes/add_loss.h"
#include "passes/autodiff.h"
#include "passes/dead_code.h"
#include "passes/lower_to_plan.h"
#include "passes/memory_plan.h"
#include "runtime/cpu_executor.h"

namespace ds {
namespace {

constexpr int64_t kN = 2, kT = 3, kC = 5;

double logit(int64_t i) {
  return 2.0 * std::sin(0.9 * double(i) + 0.3);
}
int64_t labelOf(int64_t s) {
  return (3 * s + 1) % kC;
}

// logits = x + 0 (so x is an input the gradient reaches), the loss added by the pass.
std::unique_ptr<Graph> languageModelLoss() {
  auto g = parseGraph(R"(graph lm {
    input %x : f32[2,3,5]
    const %zero : f32[] = [0]
    %logits = Add(%x, %zero) : f32[2,3,5] @head
    return %logits
  })");
  addLoss(*g, {});
  Value* x = g->value("x");
  auto grads = buildGradients(*g, g->outputs()[0], {x});
  g->addOutput(grads.at(x));
  eliminateDeadCode(*g);
  verifyGraph(*g);
  return g;
}

TEST(AddLoss, CrossEntropyOverTrailingClassAxisFlattensSamplesWithoutTranspose) {
  auto g = languageModelLoss();
  for (const auto& n : g->nodes()) EXPECT_NE(n->op(), "Transpose") << n->name();
  EXPECT_EQ(g->value("label")->shape(), (Shape{kN, kT}));

  const PlanFile plan = lowerToPlan(*g, planMemory(*g), {});
  CpuExecutor exec(plan, {});
  Tensor x({DType::F32, {kN, kT, kC}});
  for (int64_t i = 0; i < x.numel(); ++i) x.setDouble(i, logit(i));
  Tensor label({DType::I64, {kN, kT}});
  for (int64_t s = 0; s < kN * kT; ++s) label.setInt(s, labelOf(s));
  exec.setFeed("x", x);
  exec.setFeed("label", label);
  exec.run();

  // Oracle: mean over the N x T samples of logsumexp(row) - row[label], and its
  // gradient (softmax(row) - onehot(label)) / (N T).
  double loss = 0;
  std::vector<double> grad(static_cast<size_t>(kN * kT * kC));
  for (int64_t s = 0; s < kN * kT; ++s) {
    double sum = 0;
    for (int64_t c = 0; c < kC; ++c) sum += std::exp(logit(s * kC + c));
    loss += std::log(sum) - logit(s * kC + labelOf(s));
    for (int64_t c = 0; c < kC; ++c)
      grad[s * kC + c] =
          (std::exp(logit(s * kC + c)) / sum - (c == labelOf(s) ? 1.0 : 0.0)) / (kN * kT);
  }
  loss /= double(kN * kT);
  EXPECT_NEAR(exec.output(0).getDouble(0), loss, 1e-5 * std::abs(loss));
  const Tensor dx = exec.output(exec.numOutputs() - 1);
  ASSERT_EQ(dx.shape(), (Shape{kN, kT, kC}));
  for (int64_t i = 0; i < dx.numel(); ++i) EXPECT_NEAR(dx.getDouble(i), grad[i], 1e-6) << i;
}

}  // namespace
}  // namespace ds
