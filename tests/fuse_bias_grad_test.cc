// The fuse-bias-grad pass: a linear layer's weight-gradient product and bias-gradient
// sum over the same dY become one WeightBiasGrad, computing exactly what the MatMul
// and the ReduceSum computed (CPU: f32, f64, f16, bf16), for weights stored [K, N]
// and transposed, over 3-D and 2-D inputs; what does not match is left alone.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ir/text.h"
#include "ir/verifier.h"
#include "passes/autodiff.h"
#include "passes/dead_code.h"
#include "passes/fuse_bias_grad.h"
#include "passes/lower_to_plan.h"
#include "passes/memory_plan.h"
#include "runtime/cpu_executor.h"
#include "tests/test_util.h"
#include "tests/training_fixtures.h"

namespace ds {
namespace {

struct Linear {
  std::string dtype = "f32";
  bool transposed = false;  // weights stored [N, K], read with transB
  bool three_d = true;      // x [2, 5, 4] rather than [10, 4]
  bool gemm = false;        // one Gemm(x, W, b){transB = 1} (PyTorch's 2-D Linear)
};

// y = x·W + b, then loss = Σ f32(y)·r, with the gradients of x, W and b as outputs
// (through Identity: gradients a graph returns are kept as they are); the pass run
// or not.
std::unique_ptr<Graph> linearTraining(const Linear& l, bool fuse) {
  const std::string layer = l.gemm ? "%y = Gemm(%x, %w, %b) {transB = 1} : T[Y]"
                                   : "%p = MatMul(%x, %w) {transB = TB} : T[Y]\n"
                                     "    %y = Add(%p, %b) : T[Y]";
  std::string text = R"(graph linear {
    input %x : T[X]
    input %w : T[W]
    input %b : T[3]
    )" + layer + R"(
    %f = Cast(%y) {to = "f32"} : f32[Y]
    return %f
  })";
  text = test::replaceAll(text, "T[", l.dtype + "[");
  text = test::replaceAll(text, "[X]", l.three_d ? "[2,5,4]" : "[10,4]");
  text = test::replaceAll(text, "[W]", l.transposed ? "[3,4]" : "[4,3]");
  text = test::replaceAll(text, "[Y]", l.three_d ? "[2,5,3]" : "[10,3]");
  text = test::replaceAll(text, "TB", l.transposed ? "1" : "0");
  auto g = parseGraph(text);
  Value* f = g->value("f");
  Tensor r({DType::F32, f->shape()});
  for (int64_t i = 0; i < r.numel(); ++i) r.setDouble(i, std::cos(0.7 * double(i)));
  Value* prod = g->addNode("Mul", {f, g->addConstant("r", r)})->output(0);
  Value* loss = g->addNode("ReduceSum", {prod}, {{"keepdims", int64_t{0}}}, {"loss"})->output(0);
  const std::vector<Value*> wrt = {g->value("x"), g->value("w"), g->value("b")};
  auto grads = buildGradients(*g, loss, wrt);
  g->clearOutputs();
  for (Value* v : wrt) g->addOutput(g->addNode("Identity", {grads.at(v)})->output(0));
  if (fuse) {
    EXPECT_TRUE(fuseBiasGrad(*g));
  }
  eliminateDeadCode(*g);
  verifyGraph(*g);
  return g;
}

const Node* find(const Graph& g, const std::string& op) {
  for (const auto& node : g.nodes())
    if (node->op() == op) return node.get();
  return nullptr;
}

// Every form of a linear layer: weights [K, N] or [N, K], over 3-D or 2-D inputs,
// and PyTorch's 2-D Linear as one Gemm.
std::vector<Linear> layers(const std::string& dtype) {
  std::vector<Linear> out;
  for (bool transposed : {false, true})
    for (bool three_d : {true, false}) out.push_back({dtype, transposed, three_d, false});
  out.push_back({dtype, true, false, true});
  return out;
}

std::string describe(const Linear& l) {
  return l.dtype + (l.gemm ? ", Gemm" : "") + (l.transposed ? ", W [N, K]" : ", W [K, N]") +
         (l.three_d ? ", 3-D" : ", 2-D");
}

TEST(FuseBiasGrad, WeightAndBiasGradientsAreOneStep) {
  for (const Linear& l : layers("f32")) {
    SCOPED_TRACE(describe(l));
    const bool transposed = l.transposed;
    auto plain = linearTraining(l, false);
    const std::string op = l.gemm ? "Gemm" : "MatMul";
    const int products = test::countOps(*plain, op), sums = test::countOps(*plain, "ReduceSum");
    auto fused = linearTraining(l, true);
    EXPECT_EQ(test::countOps(*fused, op), products - 1);
    EXPECT_EQ(test::countOps(*fused, "ReduceSum"), sums - 1);
    // The bias's reshape reads the flat sum: no reshape more than before.
    EXPECT_EQ(test::countOps(*fused, "Reshape"), test::countOps(*plain, "Reshape"));
    const Node* step = find(*fused, "WeightBiasGrad");
    ASSERT_NE(step, nullptr);
    // dW = xᵀ·dY sums dY, its second operand; dWᵀ = dYᵀ·x sums its first.
    EXPECT_EQ(step->i("bias_input"), transposed ? 0 : 1);
    EXPECT_EQ(step->output(0)->shape(), (transposed ? Shape{3, 4} : Shape{4, 3}));
    EXPECT_EQ(step->output(1)->shape(), Shape{3});
  }
}

TEST(FuseBiasGrad, SameGradientsToTheBit) {
  for (const std::string t : {"f32", "f64", "f16", "bf16"})
    for (const Linear& l : layers(t)) {
      SCOPED_TRACE(describe(l));
      auto fused = linearTraining(l, true);
      auto plain = linearTraining(l, false);
      const std::vector<Tensor> want = test::cpuOutputs(*plain);
      ASSERT_EQ(want.size(), 3u);
      test::expectSameBits(test::cpuOutputs(*fused), want);
    }
}

// Products and sums that are not a linear layer's pair stay as they are.
TEST(FuseBiasGrad, LeavesOtherProductsAndSumsAlone) {
  const std::string kSum = R"(%db = ReduceSum(%dy) {axes = [0, 1], keepdims = 0} : f32[3] @sum)";
  const std::string kProduct = R"(%dw = MatMul(%xr, %dyr) {transA = 1} : f32[4,3] @dw)";
  auto graph = [&](const std::string& sum, const std::string& product) {
    return parseGraph(R"(graph g {
      input %x : f32[2,5,4]
      input %dy : f32[2,5,3]
      %xr = Reshape(%x) {shape = [10, 4]} : f32[10,4] @xr
      %dyr = Reshape(%dy) {shape = [10, 3]} : f32[10,3] @dyr
      )" + sum + "\n" +
                      product + R"(
      %a = Identity(%db) : f32[3] @a
      %c = Identity(%dw) : f32[4,3] @c
      return %a, %c
    })");
  };
  EXPECT_TRUE(fuseBiasGrad(*graph(kSum, kProduct)));  // the pair, for contrast
  // A scaled product (alpha: its sum would have to be scaled too).
  EXPECT_FALSE(fuseBiasGrad(
      *graph(kSum, R"(%dw = MatMul(%xr, %dyr) {transA = 1, alpha = 0.5} : f32[4,3] @dw)")));
  // A product of dY's rows that is not a weight gradient (no transA).
  auto input_grad = parseGraph(R"(graph g {
      input %dy : f32[10,3]
      input %w : f32[3,4]
      %db = ReduceSum(%dy) {axes = [0], keepdims = 0} : f32[3] @sum
      %dx = MatMul(%dy, %w) : f32[10,4] @dx
      %a = Identity(%db) : f32[3] @a
      %c = Identity(%dx) : f32[10,4] @c
      return %a, %c
    })");
  EXPECT_FALSE(fuseBiasGrad(*input_grad));
  // A sum over some of the leading axes, over the last one, or into another type.
  EXPECT_FALSE(fuseBiasGrad(*graph(
      R"(%s = ReduceSum(%dy) {axes = [0], keepdims = 0} : f32[5,3] @sum
         %db = Reshape(%s) {shape = [15]} : f32[15] @flat)",
      kProduct)));
  EXPECT_FALSE(fuseBiasGrad(*graph(
      R"(%s = ReduceSum(%dy) {axes = [0, 2], keepdims = 0} : f32[5] @sum
         %db = Slice(%s) {starts = [0], ends = [3], axes = [0]} : f32[3] @cut)",
      kProduct)));
  // A sum the graph returns.
  auto returned = parseGraph(R"(graph g {
      input %x : f32[10,4]
      input %dy : f32[10,3]
      %db = ReduceSum(%dy) {axes = [0], keepdims = 0} : f32[3] @sum
      %dw = MatMul(%x, %dy) {transA = 1} : f32[4,3] @dw
      %c = Identity(%dw) : f32[4,3] @c
      return %db, %c
    })");
  EXPECT_FALSE(fuseBiasGrad(*returned));
}

// A sum that comes after the product still fuses, at the product's place.
TEST(FuseBiasGrad, FusesAtTheEarlierOfTheTwo) {
  auto g = parseGraph(R"(graph g {
    input %x : f32[10,4]
    input %dy : f32[10,3]
    %dw = MatMul(%x, %dy) {transA = 1} : f32[4,3] @dw
    %c = Identity(%dw) : f32[4,3] @c
    %db = ReduceSum(%dy) {axes = [0], keepdims = 1} : f32[1,3] @sum
    %a = Identity(%db) : f32[1,3] @a
    return %a, %c
  })");
  ASSERT_TRUE(fuseBiasGrad(*g));
  verifyGraph(*g);
  EXPECT_EQ(g->nodes().front()->op(), "WeightBiasGrad");
  EXPECT_EQ(g->value("db")->shape(), (Shape{1, 3}));  // the sum's shape, reshaped
}

// dscompile's WeightBiasGrad steps in a plan (its --dump summary).
int fusedSteps(const std::string& summary) {
  const size_t at = summary.find("WeightBiasGrad ");
  return at == std::string::npos ? 0 : std::stoi(summary.substr(at + 15));
}

// Whole training plans train the same to the bit with and without the pass: every
// step's loss, loss scale and gradient norm, and the trained weights.
TEST(FuseBiasGrad, TrainsBitForBitAsWithoutIt) {
  const std::string gpt = test::scratch("fuse_bias_grad_gpt.onnx"),
                    mlp = test::scratch("fuse_bias_grad_mlp.onnx");
  auto r =
      test::tool("dsmodel", "gpt --layers 2 --d-model 32 --heads 4 --vocab 40 --seq 8 -o " + gpt);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = test::tool("dsmodel", "mlp --in 12 --hidden 16,8 --classes 4 -o " + mlp);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json adamw = {{"type", "AdamW"}, {"params", {{"lr", 1e-3}}}};
  struct Case {
    std::string name, onnx;
    nlohmann::json config;
    int ranks;
    std::string flags;
    int fused;  // WeightBiasGrad steps: a GPT block's four linear layers; the MLP's three
  };
  const std::vector<Case> cases = {
      {"gpt_bf16_zero2_accumulate",
       gpt,
       {{"train_micro_batch_size_per_gpu", 2},
        {"gradient_accumulation_steps", 2},
        {"bf16", {{"enabled", true}}},
        {"zero_optimization", {{"stage", 2}}},
        {"optimizer", adamw}},
       2,
       "",
       8},
      // Recomputed inputs come after the bias sums: the later place.
      {"gpt_fp16_zero3_recompute",
       gpt,
       {{"train_micro_batch_size_per_gpu", 2},
        {"fp16", {{"enabled", true}}},
        {"zero_optimization", {{"stage", 3}, {"stage3_param_persistence_threshold", 0}}},
        {"optimizer", adamw}},
       2,
       " --checkpoint-activations",
       8},
      {"mlp_fp32_gemm",
       mlp,
       {{"train_micro_batch_size_per_gpu", 4}, {"optimizer", adamw}},
       1,
       "",
       3}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string config = test::scratch("fuse_bias_grad_" + c.name + ".json");
    test::writeFile(config, c.config.dump());
    const std::string base = c.onnx + " --loss cross_entropy --gpus " + std::to_string(c.ranks) +
                             " --config " + config + c.flags;
    const std::string fused = test::scratch("fuse_bias_grad_" + c.name + ".plan"),
                      unfused = test::scratch("fuse_bias_grad_" + c.name + "_unfused.plan");
    r = test::tool("dscompile", base + " --dump summary -o " + fused);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(fusedSteps(r.output), c.fused) << r.output;
    r = test::tool("dscompile",
                   base + " --disable-pass fuse-bias-grad --dump summary -o " + unfused);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(fusedSteps(r.output), 0) << r.output;
    const test::TrainedRun a = test::trainPlan(fused, "fuse_bias_grad_" + c.name, 3, 0.31);
    const test::TrainedRun b =
        test::trainPlan(unfused, "fuse_bias_grad_" + c.name + "_off", 3, 0.31);
    test::expectSameTraining(a, b, 3);
  }
}

}  // namespace
}  // namespace ds
