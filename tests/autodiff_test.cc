// Every gradient rule is checked against central finite differences in f64 on
// random inputs, by running forward and backward graphs on the CPU backend. The
// registry walk fails when a rule has no case here.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <set>

#include "ir/error.h"
#include "ir/text.h"
#include "ir/verifier.h"
#include "passes/autodiff.h"
#include "passes/grad_rules.h"
#include "passes/lower_to_plan.h"
#include "runtime/cpu_executor.h"
#include "tests/test_util.h"
#include "tests/training_fixtures.h"

namespace ds {
namespace {

struct GradCase {
  std::string op;         // the rule under test
  std::string text;       // f64 inputs %x0, %x1, ...; output %y
  bool positive = false;  // draw inputs from [0.5, 1.5] instead of [-1, 1]
};

// Ops with dedicated backward ops: sliding windows and normalisation.
std::vector<GradCase> windowAndNormCases() {
  return {
      {"Conv",
       "input %x0 : f64[2,4,7,7]\n input %x1 : f64[6,2,3,3]\n input %x2 : f64[6]\n"
       " %y = Conv(%x0, %x1, %x2) {dilations = [2, 2], group = 2, pads = [1, 1, 1, 1], strides = "
       "[2, 2]} : f64[2,6,3,3] @n"},
      {"Conv",
       "input %x0 : f64[2,3,4,4]\n input %x1 : f64[5,3,1,1]\n %y = Conv(%x0, %x1) : f64[2,5,4,4] "
       "@n"},
      {"Conv",
       "input %x0 : f64[1,2,7]\n input %x1 : f64[3,2,3]\n"
       " %y = Conv(%x0, %x1) {auto_pad = \"SAME_LOWER\", strides = [2]} : f64[1,3,4] @n"},
      // Random f64 inputs: no two window entries lie within the FD step of each other.
      {"MaxPool",
       "input %x0 : f64[2,2,6,6]\n %y = MaxPool(%x0) {ceil_mode = 1, kernel_shape = [3, 3], pads = "
       "[1, 1, 1, 1], strides = [2, 2]} : f64[2,2,4,4] @n"},
      {"MaxPool",
       "input %x0 : f64[1,2,7,7]\n %y = MaxPool(%x0) {dilations = [2, 2], kernel_shape = [2, 2]} "
       ": f64[1,2,5,5] @n"},
      {"AveragePool",
       "input %x0 : f64[2,2,6,6]\n %y = AveragePool(%x0) {ceil_mode = 1, count_include_pad = 1, "
       "kernel_shape = [3, 3], pads = [1, 1, 1, 1], strides = [2, 2]} : f64[2,2,4,4] @n"},
      {"AveragePool",
       "input %x0 : f64[2,2,6,6]\n %y = AveragePool(%x0) {ceil_mode = 1, kernel_shape = [3, 3], "
       "pads = [1, 1, 1, 1], strides = [2, 2]} : f64[2,2,4,4] @n"},
      {"BatchNormalization",
       "input %x0 : f64[3,2,2,2]\n input %x1 : f64[2]\n input %x2 : f64[2]\n"
       " const %m : f64[2] = [0.1, -0.2]\n const %v : f64[2] = [0.5, 2.0]\n"
       " %y = BatchNormalization(%x0, %x1, %x2, %m, %v) {epsilon = 0.01, training_mode = 1} : "
       "f64[3,2,2,2] @n"},
      // Inference form (--freeze-bn): every input, statistics included, gets a gradient.
      {"BatchNormalization",
       "input %x0 : f64[2,3,2]\n input %x1 : f64[3]\n input %x2 : f64[3]\n input %x3 : f64[3]\n"
       " input %x4 : f64[3]\n %y = BatchNormalization(%x0, %x1, %x2, %x3, %x4) {epsilon = 0.01} : "
       "f64[2,3,2] @n",
       true},
      {"LayerNormalization",
       "input %x0 : f64[3,4]\n input %x1 : f64[4]\n input %x2 : f64[4]\n"
       " %y = LayerNormalization(%x0, %x1, %x2) {epsilon = 0.01} : f64[3,4] @n"},
      {"LayerNormalization",
       "input %x0 : f64[2,3,4]\n input %x1 : f64[1,4]\n input %x2 : f64[3,4]\n"
       " %y = LayerNormalization(%x0, %x1, %x2) {axis = 1} : f64[2,3,4] @n"},
  };
}

// The loss, softmax-family and element-wise ops whose gradients need Exp, gathers
// and slices.
std::vector<GradCase> lossAndTensorCases() {
  return {
      {"SoftmaxCrossEntropyLoss",
       "input %x0 : f64[5,3]\n const %t : i64[5] = [0, 2, 1, 2, 1]\n"
       " const %w : f64[3] = [0.5, 2.0, 1.5]\n"
       " %y = SoftmaxCrossEntropyLoss(%x0, %t, %w) {ignore_index = 1} : f64[] @n"},
      {"SoftmaxCrossEntropyLoss",
       "input %x0 : f64[2,3,2]\n const %t : i32[2,2] = [0, 2, 1, 1]\n"
       " %y = SoftmaxCrossEntropyLoss(%x0, %t) {reduction = \"sum\"} : f64[] @n"},
      {"SoftmaxCrossEntropyLoss",
       "input %x0 : f64[3,4]\n const %t : i64[3] = [3, 0, 3]\n const %w : f64[4] = [1, 2, 3, 4]\n"
       " %y = SoftmaxCrossEntropyLoss(%x0, %t, %w) {reduction = \"none\"} : f64[3] @n"},
      // Only the log-prob output reaches the loss.
      {"SoftmaxCrossEntropyLoss",
       "input %x0 : f64[3,4]\n const %t : i64[3] = [3, 0, 1]\n"
       " %l, %y = SoftmaxCrossEntropyLoss(%x0, %t) : f64[], f64[3,4] @n"},
      {"LogSoftmax", "input %x0 : f64[3,5]\n %y = LogSoftmax(%x0) {axis = -1} : f64[3,5] @n"},
      {"LogSoftmax", "input %x0 : f64[3,5]\n %y = LogSoftmax(%x0) {axis = 0} : f64[3,5] @n"},
      {"Exp", "input %x0 : f64[3,4]\n %y = Exp(%x0) : f64[3,4] @n"},
      {"Erf", "input %x0 : f64[3,4]\n %y = Erf(%x0) : f64[3,4] @n"},
      {"Gelu", "input %x0 : f64[3,4]\n %y = Gelu(%x0) : f64[3,4] @n"},
      {"Gelu", "input %x0 : f64[3,4]\n %y = Gelu(%x0) {approximate = \"tanh\"} : f64[3,4] @n"},
      // Attention, causal and not, with K and V longer than Q and a value head size
      // of its own; the statistics output is not differentiated.
      {"FusedAttention",
       "input %x0 : f64[2,3,2,4]\n input %x1 : f64[2,3,2,4]\n input %x2 : f64[2,3,2,4]\n"
       " %y, %l = FusedAttention(%x0, %x1, %x2) {causal = 1, scale = 0.7} : f64[2,3,2,4], "
       "f64[2,2,3] @n"},
      {"FusedAttention",
       "input %x0 : f64[1,2,2,3]\n input %x1 : f64[1,4,2,3]\n input %x2 : f64[1,4,2,5]\n"
       " %y, %l = FusedAttention(%x0, %x1, %x2) : f64[1,2,2,5], f64[1,2,2] @n"},
      {"FusedAttention",  // Q, K and V packed: one gradient, dQKV
       "input %x0 : f64[2,3,3,2,4]\n"
       " %y, %l = FusedAttention(%x0) {causal = 1, scale = 0.6} : f64[2,3,2,4], f64[2,2,3] @n"},
      {"Gather",
       "input %x0 : f64[5,3]\n const %i : i64[4] = [1, 3, 1, -1]\n"
       " %y = Gather(%x0, %i) : f64[4,3] @n"},
      {"Gather",
       "input %x0 : f64[2,4,3]\n const %i : i32[2,2] = [0, 3, 3, -4]\n"
       " %y = Gather(%x0, %i) {axis = 1} : f64[2,2,2,3] @n"},
      {"Slice",
       "input %x0 : f64[5,6]\n %y = Slice(%x0) {axes = [0, 1], ends = [5, 0], starts = [0, 5], "
       "steps = [2, -2]} : f64[3,3] @n"},
      {"Slice",
       "input %x0 : f64[2,6]\n %y = Slice(%x0) {axes = [-1], ends = [-1], starts = [1]} : "
       "f64[2,4] @n"},
  };
}

std::vector<GradCase> compositionCases() {
  return {
      // Compositions: a ResNet-like block and a GPT-like embedding/head, every
      // parameter fed, so the backward ops are checked chained as models use them.
      {"Conv",
       "input %x0 : f64[2,2,6,6]\n input %x1 : f64[4,2,3,3]\n input %x2 : f64[4]\n"
       " input %x3 : f64[4]\n input %x4 : f64[3,4]\n const %m : f64[4] = [0, 0, 0, 0]\n"
       " const %v : f64[4] = [1, 1, 1, 1]\n const %t : i64[2] = [2, 0]\n"
       " %c = Conv(%x0, %x1) {pads = [1, 1, 1, 1]} : f64[2,4,6,6] @conv\n"
       " %b = BatchNormalization(%c, %x2, %x3, %m, %v) {training_mode = 1} : f64[2,4,6,6] @bn\n"
       " %a = Relu(%b) : f64[2,4,6,6] @relu\n"
       " %p = MaxPool(%a) {kernel_shape = [2, 2], strides = [2, 2]} : f64[2,4,3,3] @pool\n"
       " %g = GlobalAveragePool(%p) : f64[2,4,1,1] @gap\n %f = Flatten(%g) : f64[2,4] @flat\n"
       " %s = Gemm(%f, %x4) {transB = 1} : f64[2,3] @fc\n"
       " %y = SoftmaxCrossEntropyLoss(%s, %t) : f64[] @n"},
      {"Gather",
       "input %x0 : f64[6,4]\n input %x1 : f64[4]\n input %x2 : f64[4]\n input %x3 : f64[4,6]\n"
       " const %i : i64[2,3] = [1, 5, 1, 0, 2, 4]\n const %t : i64[2,3] = [1, 2, 3, 0, 5, 1]\n"
       " %e = Gather(%x0, %i) : f64[2,3,4] @wte\n"
       " %h = LayerNormalization(%e, %x1, %x2) : f64[2,3,4] @ln\n"
       " %a = Gelu(%h) : f64[2,3,4] @act\n %l = MatMul(%a, %x3) : f64[2,3,6] @head\n"
       " %z = Transpose(%l) {perm = [0, 2, 1]} : f64[2,6,3] @tr\n"
       " %y = SoftmaxCrossEntropyLoss(%z, %t) : f64[] @n"},
  };
}

// `base` followed by the cases of the backward-op families.
std::vector<GradCase> withBackwardOpCases(std::vector<GradCase> base) {
  for (const auto& part : {windowAndNormCases(), lossAndTensorCases(), compositionCases()})
    base.insert(base.end(), part.begin(), part.end());
  return base;
}

const std::vector<GradCase>& cases() {
  static const std::vector<GradCase> all = withBackwardOpCases({
      {"Add", "input %x0 : f64[2,3]\n input %x1 : f64[3]\n %y = Add(%x0, %x1) : f64[2,3] @n"},
      {"Sub", "input %x0 : f64[2,3]\n input %x1 : f64[2,1]\n %y = Sub(%x0, %x1) : f64[2,3] @n"},
      {"Mul", "input %x0 : f64[2,3]\n input %x1 : f64[1,3]\n %y = Mul(%x0, %x1) : f64[2,3] @n"},
      {"Div", "input %x0 : f64[2,3]\n input %x1 : f64[2,3]\n %y = Div(%x0, %x1) : f64[2,3] @n",
       true},
      {"Neg", "input %x0 : f64[4]\n %y = Neg(%x0) : f64[4] @n"},
      {"Identity", "input %x0 : f64[4]\n %y = Identity(%x0) : f64[4] @n"},
      {"Relu", "input %x0 : f64[3,4]\n %y = Relu(%x0) : f64[3,4] @n"},
      {"Clip", "input %x0 : f64[3,4]\n %y = Clip(%x0) {max = 0.5, min = -0.4} : f64[3,4] @n"},
      {"LeakyRelu", "input %x0 : f64[3,4]\n %y = LeakyRelu(%x0) {alpha = 0.2} : f64[3,4] @n"},
      {"Trilu", "input %x0 : f64[2,3,4]\n %y = Trilu(%x0) {k = 1, upper = 0} : f64[2,3,4] @n"},
      {"Pad",
       "input %x0 : f64[2,3]\n %y = Pad(%x0) {pads = [1, 0, 2, 1], value = 0.5} : f64[5,4] @n"},
      {"Sigmoid", "input %x0 : f64[3,4]\n %y = Sigmoid(%x0) : f64[3,4] @n"},
      {"Tanh", "input %x0 : f64[3,4]\n %y = Tanh(%x0) : f64[3,4] @n"},
      {"Sqrt", "input %x0 : f64[3,4]\n %y = Sqrt(%x0) : f64[3,4] @n", true},
      {"Log", "input %x0 : f64[3,4]\n %y = Log(%x0) : f64[3,4] @n", true},
      {"Softplus", "input %x0 : f64[3,4]\n %y = Softplus(%x0) : f64[3,4] @n"},
      {"Pow", "input %x0 : f64[3,4]\n const %p : f64[] = [3.0]\n %y = Pow(%x0, %p) : f64[3,4] @n",
       true},
      {"Where",
       "input %x0 : f64[2,3]\n input %x1 : f64[3]\n const %c : bool[2,3] = [1, 0, 1, 0, 0, 1]\n"
       " %y = Where(%c, %x0, %x1) : f64[2,3] @n"},
      {"Cast", "input %x0 : f64[4]\n %y = Cast(%x0) {to = \"f64\"} : f64[4] @n"},
      {"Reshape", "input %x0 : f64[2,6]\n %y = Reshape(%x0) {shape = [3, -1]} : f64[3,4] @n"},
      {"Flatten", "input %x0 : f64[2,3,2]\n %y = Flatten(%x0) : f64[2,6] @n"},
      {"Squeeze", "input %x0 : f64[2,1,3]\n %y = Squeeze(%x0) {axes = [1]} : f64[2,3] @n"},
      {"Unsqueeze", "input %x0 : f64[2,3]\n %y = Unsqueeze(%x0) {axes = [0]} : f64[1,2,3] @n"},
      {"Transpose",
       "input %x0 : f64[2,3,4]\n %y = Transpose(%x0) {perm = [2, 0, 1]} : f64[4,2,3] @n"},
      {"Expand", "input %x0 : f64[3,1]\n %y = Expand(%x0) {shape = [2, 3, 4]} : f64[2,3,4] @n"},
      {"ReduceSum",
       "input %x0 : f64[2,3,4]\n %y = ReduceSum(%x0) {axes = [1], keepdims = 0} : f64[2,4] @n"},
      {"ReduceMean",
       "input %x0 : f64[2,3,4]\n %y = ReduceMean(%x0) {axes = [0, 2]} : f64[1,3,1] @n"},
      {"Softmax", "input %x0 : f64[3,5]\n %y = Softmax(%x0) {axis = -1} : f64[3,5] @n"},
      {"Softmax", "input %x0 : f64[3,5,2]\n %y = Softmax(%x0) {axis = 1} : f64[3,5,2] @n"},
      {"Softmax",
       "input %x0 : f64[2,3,4]\n const %m : f64[3,4] = [0, -3, -1e4, 0.5, 0, 0, -2, -1e4, 1, 0, 0, "
       "0]\n"
       " %y = Softmax(%x0, %m) : f64[2,3,4] @n"},
      {"ReduceSumSquare",
       "input %x0 : f64[2,3,4]\n %y = ReduceSumSquare(%x0) {axes = [0, 2]} : f64[1,3,1] @n"},
      {"ReduceSumSquare",  // no axes and noop: each element squared
       "input %x0 : f64[2,3]\n %y = ReduceSumSquare(%x0) {noop_with_empty_axes = 1} : f64[2,3] @n"},
      {"MatMul",
       "input %x0 : f64[2,2,3]\n input %x1 : f64[3,4]\n %y = MatMul(%x0, %x1) : f64[2,2,4] @n"},
      {"MatMul",  // 2-D weights read transposed, under a rank-4 batch: dB from the rows
       "input %x0 : f64[2,3,2,3]\n input %x1 : f64[4,3]\n"
       " %y = MatMul(%x0, %x1) {alpha = 0.5, transB = 1} : f64[2,3,2,4] @n"},
      {"MatMul",
       "input %x0 : f64[2,3,2]\n input %x1 : f64[3,4]\n"
       " %y = MatMul(%x0, %x1) {transA = 1} : f64[2,2,4] @n"},
      {"MatMul",
       "input %x0 : f64[2,2,3]\n input %x1 : f64[2,4,3]\n"
       " %y = MatMul(%x0, %x1) {transB = 1} : f64[2,2,4] @n"},
      {"MatMul",
       "input %x0 : f64[3,2]\n input %x1 : f64[2,4,3]\n"
       " %y = MatMul(%x0, %x1) {transA = 1, transB = 1} : f64[2,2,4] @n"},
      {"MatMul",
       "input %x0 : f64[2,2,3]\n input %x1 : f64[2,4,3]\n"
       " %y = MatMul(%x0, %x1) {alpha = -0.375, transB = 1} : f64[2,2,4] @n"},
      {"Gemm",
       "input %x0 : f64[3,2]\n input %x1 : f64[3,4]\n input %x2 : f64[4]\n"
       " %y = Gemm(%x0, %x1, %x2) {alpha = 0.5, beta = 2.0, transA = 1} : f64[2,4] @n"},
      {"Gemm",
       "input %x0 : f64[2,3]\n input %x1 : f64[4,3]\n input %x2 : f64[2,1]\n"
       " %y = Gemm(%x0, %x1, %x2) {transB = 1} : f64[2,4] @n"},
      {"Gemm",
       "input %x0 : f64[3,2]\n input %x1 : f64[4,3]\n %y = Gemm(%x0, %x1) {transA = 1, transB = "
       "1} "
       ": f64[2,4] @n"},
      {"Gemm", "input %x0 : f64[2,3]\n input %x1 : f64[3,4]\n %y = Gemm(%x0, %x1) : f64[2,4] @n"},
      {"Concat",
       "input %x0 : f64[2,3]\n input %x1 : f64[2,1]\n %y = Concat(%x0, %x1) {axis = 1} : "
       "f64[2,4] "
       "@n"},
      {"GlobalAveragePool",
       "input %x0 : f64[2,3,2,2]\n %y = GlobalAveragePool(%x0) : f64[2,3,1,1] @n"},
      // Only the first part reaches the loss: the other part's gradient is zeros.
      {"Split",
       "input %x0 : f64[2,5]\n %y, %rest = Split(%x0) {axis = 1, split = [2, 3]} : f64[2,2], "
       "f64[2,3] @n"},
  });
  return all;
}

// The case graph plus loss = Σ y·r for a fixed random r, so every output element
// gets a different weight; outputs are the loss and the gradient of each input.
std::unique_ptr<Graph> buildCase(const GradCase& c, std::vector<Value*>* inputs) {
  auto g = parseGraph("graph grad_case {\n " + c.text + "\n return %y\n}");
  Value* y = g->value("y");
  std::mt19937_64 rng(42);
  std::uniform_real_distribution<double> u(-1, 1);
  Tensor r({DType::F64, y->shape()});
  for (int64_t i = 0; i < r.numel(); ++i) r.setDouble(i, u(rng));
  Value* weighted = g->addNode("Mul", {y, g->addConstant("r", r)})->output(0);
  Value* loss =
      g->addNode("ReduceSum", {weighted}, {{"keepdims", int64_t{0}}}, {"loss"})->output(0);
  *inputs = g->feeds();
  auto grads = buildGradients(*g, loss, *inputs);
  g->clearOutputs();
  g->addOutput(loss);
  for (Value* x : *inputs) g->addOutput(grads.at(x));
  verifyGraph(*g);
  return g;
}

void checkCase(const GradCase& c) {
  std::vector<Value*> inputs;
  auto g = buildCase(c, &inputs);
  PlanFile plan = lowerToPlan(*g, planMemory(*g), {});
  CpuExecutor exec(plan);
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> u(c.positive ? 0.5 : -1.0, c.positive ? 1.5 : 1.0);
  std::vector<Tensor> feeds;
  for (Value* x : inputs) {
    Tensor t(x->type());
    for (int64_t i = 0; i < t.numel(); ++i) t.setDouble(i, u(rng));
    exec.setFeed(x->name(), t);
    feeds.push_back(t);
  }
  exec.run();
  std::vector<Tensor> analytic;
  for (size_t k = 0; k < inputs.size(); ++k) analytic.push_back(exec.output(k + 1));
  const double eps = 1e-6;
  auto lossAt = [&](size_t k, int64_t i, double delta) {
    Tensor t = feeds[k];
    t.setDouble(i, t.getDouble(i) + delta);
    exec.setFeed(inputs[k]->name(), t);
    exec.run();
    exec.setFeed(inputs[k]->name(), feeds[k]);
    return exec.output(0).getDouble(0);
  };
  for (size_t k = 0; k < inputs.size(); ++k) {
    for (int64_t i = 0; i < feeds[k].numel(); ++i) {
      double numeric = (lossAt(k, i, eps) - lossAt(k, i, -eps)) / (2 * eps);
      double got = analytic[k].getDouble(i);
      EXPECT_NEAR(got, numeric, 1e-6 * std::max(1.0, std::abs(numeric)))
          << c.op << ": d loss / d " << inputs[k]->name() << "[" << i << "]\n"
          << c.text;
    }
  }
}

TEST(Autodiff, EveryRuleMatchesFiniteDifferences) {
  for (const GradCase& c : cases()) {
    SCOPED_TRACE(c.op);
    try {
      checkCase(c);
    } catch (const Error& e) {
      ADD_FAILURE() << c.op << ": " << e.what();
    }
  }
}

TEST(Autodiff, EveryRuleHasAFiniteDifferenceCase) {
  std::set<std::string> covered;
  for (const GradCase& c : cases()) covered.insert(c.op);
  covered.insert("Dropout");  // random: checked against its own mask below
  for (const auto& [op, rule] : gradRules()) EXPECT_TRUE(covered.count(op)) << op << " has no case";
}

// Training-mode dropout draws a fresh mask every run, so finite differences do
// not apply; the gradient must be dY·mask / (1 − ratio) for the run's own mask.
TEST(Autodiff, DropoutGradientUsesTheRunsMask) {
  auto g = parseGraph(R"(graph g {
  input %x : f64[4,5]
  const %r : f64[4,5] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]
  %y, %mask = Dropout(%x) {ratio = 0.25, seed = 5, training_mode = 1} : f64[4,5], bool[4,5] @drop
  %w = Mul(%y, %r) : f64[4,5] @weigh
  %loss = ReduceSum(%w) {keepdims = 0} : f64[] @sum
  return %loss, %mask
})");
  Value* x = g->value("x");
  g->addOutput(buildGradients(*g, g->value("loss"), {x}).at(x));
  PlanFile plan = lowerToPlan(*g, planMemory(*g), {});
  CpuExecutor exec(plan);
  exec.setFeed("x", Tensor(x->type()));
  for (int run = 0; run < 3; ++run) {
    exec.run();
    Tensor mask = exec.output(1), grad = exec.output(2);
    for (int64_t i = 0; i < grad.numel(); ++i)
      EXPECT_DOUBLE_EQ(grad.getDouble(i), mask.getInt(i) ? (i + 1) / 0.75 : 0.0) << i;
  }
}

TEST(Autodiff, FanOutGradientsAreSummed) {
  auto g = parseGraph(R"(graph g {
  input %x : f64[3]
  %a = Mul(%x, %x) : f64[3] @sq
  %b = Add(%a, %x) : f64[3] @add
  %loss = ReduceSum(%b) {keepdims = 0} : f64[] @sum
  return %loss
})");
  Value* x = g->value("x");
  auto grads = buildGradients(*g, g->value("loss"), {x});
  g->addOutput(grads.at(x));
  verifyGraph(*g);
  PlanFile plan = lowerToPlan(*g, planMemory(*g), {});
  CpuExecutor exec(plan);
  exec.setFeed("x", Tensor::fromDoubles(DType::F64, {3}, {1, -2, 0.5}));
  exec.run();
  // d/dx Σ(x² + x) = 2x + 1
  EXPECT_EQ(exec.output(1).toDoubles(), (std::vector<double>{3, -3, 2}));
  EXPECT_EQ(grads.at(x)->name(), "x_grad");
  EXPECT_EQ(grads.at(x)->role(), Role::Gradient);
}

// A 16-bit sum into f32 (`to`, no finite-difference case: that needs f64) takes the
// gradient of Cast to f32 then the sum: the same output and dX to the bit.
TEST(Autodiff, SixteenBitSumIntoF32TakesTheGradientOfTheCastSum) {
  for (const char* op : {"ReduceSum", "ReduceSumSquare", "ReduceMean"}) {
    SCOPED_TRACE(op);
    auto fused = parseGraph(std::string(R"(graph fused {
      input %x : f16[3,5,4]
      %y = )") + op + R"((%x) {axes = [1], to = "f32"} : f32[3,1,4] @n
      return %y
    })");
    auto cast = parseGraph(std::string(R"(graph cast {
      input %x : f16[3,5,4]
      %w = Cast(%x) {to = "f32"} : f32[3,5,4] @wide
      %y = )") + op + R"((%w) {axes = [1]} : f32[3,1,4] @n
      return %y
    })");
    const std::vector<Tensor> got = test::outputAndGradients(*fused, {"x"}, 2, 3);
    const std::vector<Tensor> want = test::outputAndGradients(*cast, {"x"}, 2, 3);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_EQ(got[i].type(), want[i].type()) << i;
      EXPECT_EQ(std::memcmp(got[i].raw(), want[i].raw(), want[i].bytes()), 0) << i;
    }
  }
}

TEST(Autodiff, MissingRuleNamesTheNode) {
  auto g = parseGraph(R"(graph g {
  input %x : f64[4]
  %r = Relu(%x) : f64[4] @relu
  %e = ReluGrad(%x, %r) : f64[4] @the_grad
  %loss = ReduceSum(%e) {keepdims = 0} : f64[] @sum
  return %loss
})");
  try {
    buildGradients(*g, g->value("loss"), {g->value("x")});
    FAIL() << "no error for an op without a gradient rule";
  } catch (const Error& e) {
    EXPECT_TRUE(test::contains(e.what(), "no gradient rule for node 'the_grad' (ReluGrad)"))
        << e.what();
  }
}

}  // namespace
}  // namespace ds
