// The fuse-gelu pass: every accepted spelling of the exact (erf) and tanh GELU
// chains becomes one Gelu that keeps the last node's name and the result's name;
// chains with a shared intermediate, wrong or trainable constants, or a result of
// another type stay. Oracles: the unfused chain run on the CPU backend, GELU
// evaluated in double, and for GPT the loss and gradients that autodiff computes
// through the unfused chain.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <memory>
#include <numbers>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "frontend/compile.h"
#include "frontend/onnx_import.h"
#include "ir/text.h"
#include "ir/verifier.h"
#include "models/models.h"
#include "passes/add_loss.h"
#include "passes/autodiff.h"
#include "passes/dead_code.h"
#include "passes/fuse_gelu.h"
#include "passes/lower_to_plan.h"
#include "passes/memory_plan.h"
#include "passes/pipeline.h"
#include "runtime/cpu_executor.h"
#include "runtime/trainer.h"
#include "tests/test_util.h"

namespace ds {
namespace {

double geluErf(double x) {
  return 0.5 * x * (1 + std::erf(x / std::numbers::sqrt2));
}
double geluTanh(double x) {
  return 0.5 * x * (1 + std::tanh(std::sqrt(2 / std::numbers::pi) * (x + 0.044715 * x * x * x)));
}

// The chains' constants, as the text graphs declare them.
struct Constants {
  double sqrt2 = std::numbers::sqrt2;
  double rsqrt2 = 1 / std::numbers::sqrt2;
  double one = 1;
  double half = 0.5;
  double k = std::sqrt(2 / std::numbers::pi);
  double c = 0.044715;
  double three = 3;
};

// A graph computing %y from %x : DTYPE[2,40] by `body`, whose node lines write
// their type as $T; `outputs` are the returned values.
std::string chainGraph(const std::string& body, const std::string& dtype = "f32",
                       const Constants& k = {}, const std::string& outputs = "%y") {
  std::ostringstream s;
  s.precision(17);
  s << "graph g {\n input %x : " << dtype << "[2,40]\n";
  const std::pair<const char*, double> constants[] = {
      {"sqrt2", k.sqrt2}, {"rsqrt2", k.rsqrt2}, {"one", k.one},    {"half", k.half},
      {"k", k.k},         {"c", k.c},           {"three", k.three}};
  for (const auto& [name, value] : constants)
    s << " const %" << name << " : " << dtype << "[] = [" << value << "]\n";
  std::string nodes = body;
  for (size_t at; (at = nodes.find("$T")) != std::string::npos;)
    nodes.replace(at, 2, dtype + "[2,40]");
  s << nodes << " return " << outputs << "\n}";
  return s.str();
}

// ½·x·t in every association and operand order; the last node is @gelu.
const char* const kProducts[] = {
    " %p = Mul(%x, %t) : $T @p\n %y = Mul(%p, %half) : $T @gelu\n",  // torch, dsmodel
    " %p = Mul(%t, %x) : $T @p\n %y = Mul(%half, %p) : $T @gelu\n",
    " %p = Mul(%x, %half) : $T @p\n %y = Mul(%p, %t) : $T @gelu\n",  // HF: 0.5 * x * (...)
    " %p = Mul(%half, %x) : $T @p\n %y = Mul(%t, %p) : $T @gelu\n",
    " %p = Mul(%t, %half) : $T @p\n %y = Mul(%x, %p) : $T @gelu\n",
    " %p = Mul(%half, %t) : $T @p\n %y = Mul(%p, %x) : $T @gelu\n",
};
const char* const kOnePlus[] = {" %t = Add(%f, %one) : $T @t\n", " %t = Add(%one, %f) : $T @t\n"};
const char* const kErfScales[] = {" %s = Div(%x, %sqrt2) : $T @s\n",
                                  " %s = Mul(%x, %rsqrt2) : $T @s\n",
                                  " %s = Mul(%rsqrt2, %x) : $T @s\n"};
const char* const kCubes[] = {
    " %x3 = Pow(%x, %three) : $T @x3\n",
    " %x2 = Mul(%x, %x) : $T @x2\n %x3 = Mul(%x, %x2) : $T @x3\n",
    " %x2 = Mul(%x, %x) : $T @x2\n %x3 = Mul(%x2, %x) : $T @x3\n",
};

std::string erfBody(int scale, int plus, int product) {
  return std::string(kErfScales[scale]) + " %f = Erf(%s) : $T @f\n" + kOnePlus[plus] +
         kProducts[product];
}

// `flips` bits swap the operands of 0.044715·x³, x + (...) and √(2/π)·(...).
std::string tanhBody(int cube, int flips, int plus, int product) {
  std::string body = kCubes[cube];
  body += flips & 1 ? " %w = Mul(%x3, %c) : $T @w\n" : " %w = Mul(%c, %x3) : $T @w\n";
  body += flips & 2 ? " %u = Add(%w, %x) : $T @u\n" : " %u = Add(%x, %w) : $T @u\n";
  body += flips & 4 ? " %v = Mul(%u, %k) : $T @v\n" : " %v = Mul(%k, %u) : $T @v\n";
  return body + " %f = Tanh(%v) : $T @f\n" + kOnePlus[plus] + kProducts[product];
}

size_t countOp(const Graph& g, const std::string& op) {
  size_t n = 0;
  for (const auto& node : g.nodes()) n += node->op() == op;
  return n;
}

// x evenly spaced over [-range, range], the shape of the text graphs' %x.
std::vector<double> spaced(double range) {
  std::vector<double> x(80);
  for (size_t i = 0; i < x.size(); ++i)
    x[i] = -range + 2 * range * static_cast<double>(i) / static_cast<double>(x.size() - 1);
  return x;
}

// Runs `g` on the CPU backend with %x = `x` and returns its first output.
std::vector<double> runOn(const Graph& g, const std::vector<double>& x) {
  PlanFile plan = lowerToPlan(g, planMemory(g), {});
  CpuExecutor exec(plan);
  Tensor in(exec.feedType("x"));
  for (int64_t i = 0; i < in.numel(); ++i) in.setDouble(i, x[static_cast<size_t>(i)]);
  exec.setFeed("x", in);
  exec.run();
  Tensor out = exec.output(0);
  std::vector<double> y(static_cast<size_t>(out.numel()));
  for (int64_t i = 0; i < out.numel(); ++i) y[static_cast<size_t>(i)] = out.getDouble(i);
  return y;
}

// Fuses `text`: one Gelu {approximate} named "gelu" reading %x and computing %y,
// verified. Returns the fused graph.
std::unique_ptr<Graph> expectFused(const std::string& text, const std::string& approximate) {
  auto g = parseGraph(text);
  EXPECT_TRUE(fuseGelu(*g));
  eliminateDeadCode(*g);
  verifyGraph(*g);
  EXPECT_EQ(g->numNodes(), 1u) << printGraph(*g);
  const Node& gelu = *g->nodes().front();
  EXPECT_EQ(gelu.op(), "Gelu");
  EXPECT_EQ(gelu.s("approximate"), approximate);
  EXPECT_EQ(gelu.name(), "gelu");
  EXPECT_EQ(gelu.input(0)->name(), "x");
  EXPECT_EQ(gelu.output(0)->name(), "y");
  EXPECT_EQ(g->outputs().at(0), gelu.output(0));
  return g;
}

// The fused graph's f32 output is the chain's within 1e-6 relative, plus |x|·2^-23
// absolute: where 1 + erf(x/√2) (or 1 + tanh) cancels, for x below about -1, the
// last bits of erf ≈ -1 dominate, and the chain's Div(x, √2) and the kernel's
// x·(1/√2) round that argument differently. ½·|x|·(2 ulps of 1) is what f32 can
// promise there, for the chain itself as much as for the Gelu.
void expectSameAsChain(const std::string& text, const Graph& fused, double range) {
  std::vector<double> x = spaced(range);
  std::vector<double> want = runOn(*parseGraph(text), x), got = runOn(fused, x);
  for (size_t i = 0; i < x.size(); ++i)
    EXPECT_NEAR(got[i], want[i], 1e-6 * std::abs(want[i]) + std::ldexp(std::abs(x[i]), -23))
        << "x = " << x[i];
}

TEST(FuseGelu, ErfChainInEveryOrderBecomesOneGelu) {
  for (int scale = 0; scale < 3; ++scale) {
    for (int plus = 0; plus < 2; ++plus) {
      for (int product = 0; product < 6; ++product) {
        const std::string text = chainGraph(erfBody(scale, plus, product));
        SCOPED_TRACE(text);
        auto fused = expectFused(text, "none");
        expectSameAsChain(text, *fused, 5);
      }
    }
  }
}

TEST(FuseGelu, TanhChainInEveryOrderBecomesOneGelu) {
  for (int cube = 0; cube < 3; ++cube) {
    for (int flips = 0; flips < 8; ++flips) {
      for (int plus = 0; plus < 2; ++plus) {
        for (int product = 0; product < 6; ++product) {
          const std::string text = chainGraph(tanhBody(cube, flips, plus, product));
          SCOPED_TRACE(text);
          auto fused = expectFused(text, "tanh");
          expectSameAsChain(text, *fused, 5);
        }
      }
    }
  }
}

// In f64 the CPU kernels use the C library's erf and tanh, as the oracle does: the
// fused graph and the chain are GELU within 1e-13 relative over [-6, 6].
TEST(FuseGelu, FusedF64GraphIsGeluInDouble) {
  struct Case {
    std::string body, approximate;
    double (*gelu)(double);
  };
  for (const Case& c :
       {Case{erfBody(0, 0, 0), "none", geluErf}, Case{tanhBody(0, 0, 0, 2), "tanh", geluTanh}}) {
    const std::string text = chainGraph(c.body, "f64");
    SCOPED_TRACE(text);
    auto fused = expectFused(text, c.approximate);
    std::vector<double> x = spaced(6);
    std::vector<double> chain = runOn(*parseGraph(text), x), got = runOn(*fused, x);
    for (size_t i = 0; i < x.size(); ++i) {
      EXPECT_NEAR(got[i], c.gelu(x[i]), 1e-13 * std::abs(c.gelu(x[i]))) << "x = " << x[i];
      EXPECT_NEAR(chain[i], c.gelu(x[i]), 1e-13 * std::abs(c.gelu(x[i]))) << "x = " << x[i];
    }
  }
}

// 16-bit constants are the nearest 16-bit numbers (1/√2 in bf16 is 0.70703,
// 1.1e-4 off), which match though they are not within 1e-4; their neighbours do
// not, and the same bf16 number in an f32 graph is a different constant.
TEST(FuseGelu, SixteenBitChainsMatchTheirRoundedConstants) {
  for (const char* dtype : {"f16", "bf16"}) {
    SCOPED_TRACE(dtype);
    expectFused(chainGraph(erfBody(1, 0, 0), dtype), "none");
    expectFused(chainGraph(tanhBody(1, 0, 0, 2), dtype), "tanh");
  }
  Constants neighbours[2];
  neighbours[0].half = 0.5 - std::ldexp(1.0, -9);           // bf16 below 0.5, 3.9e-3 off
  neighbours[1].rsqrt2 = 0.70703125 + std::ldexp(1.0, -8);  // bf16 above round(1/√2)
  for (const Constants& k : neighbours) {
    auto g = parseGraph(chainGraph(erfBody(1, 0, 0), "bf16", k));
    EXPECT_FALSE(fuseGelu(*g));
  }
  Constants bf16_rounded;
  bf16_rounded.rsqrt2 = 0.70703125;
  auto g = parseGraph(chainGraph(erfBody(1, 0, 0), "f32", bf16_rounded));
  EXPECT_FALSE(fuseGelu(*g));
}

// Two chains in a row (GELU of a GELU), each fused where its last node was.
TEST(FuseGelu, ChainOfChainsFusesBoth) {
  const std::string second =
      " %s2 = Div(%y, %sqrt2) : $T @s2\n %f2 = Erf(%s2) : $T @f2\n"
      " %t2 = Add(%f2, %one) : $T @t2\n %p2 = Mul(%y, %t2) : $T @p2\n"
      " %y2 = Mul(%p2, %half) : $T @gelu2\n";
  auto g = parseGraph(chainGraph(erfBody(0, 0, 0) + second, "f32", {}, "%y2"));
  EXPECT_TRUE(fuseGelu(*g));
  eliminateDeadCode(*g);
  verifyGraph(*g);
  ASSERT_EQ(g->numNodes(), 2u) << printGraph(*g);
  EXPECT_EQ(g->nodes().front()->name(), "gelu");
  EXPECT_EQ(g->nodes().back()->name(), "gelu2");
  EXPECT_EQ(g->nodes().back()->input(0), g->nodes().front()->output(0));
  EXPECT_EQ(g->outputs().at(0)->name(), "y2");
  std::vector<double> x = spaced(3), y = runOn(*g, x);
  for (size_t i = 0; i < x.size(); ++i) {  // f32 against double, as in expectSameAsChain
    double want = geluErf(geluErf(x[i]));
    EXPECT_NEAR(y[i], want, 1e-6 * std::abs(want) + std::ldexp(std::abs(x[i]), -23))
        << "x = " << x[i];
  }
}

// A value inside the chain that something else reads (a node, a graph output)
// keeps the whole chain: fusing would have to compute it anyway.
TEST(FuseGelu, ChainWithSharedIntermediateStays) {
  for (const char* v : {"%s", "%f", "%t", "%p"}) {
    SCOPED_TRACE(v);
    auto as_output = parseGraph(chainGraph(erfBody(0, 0, 0), "f32", {}, std::string("%y, ") + v));
    EXPECT_FALSE(fuseGelu(*as_output));
    auto as_input = parseGraph(
        chainGraph(erfBody(0, 0, 0) + " %z = Relu(" + v + ") : $T @other\n", "f32", {}, "%y, %z"));
    EXPECT_FALSE(fuseGelu(*as_input));
    EXPECT_EQ(countOp(*as_input, "Gelu"), 0u);
    EXPECT_EQ(countOp(*as_input, "Erf"), 1u);
  }
  auto cube = parseGraph(
      chainGraph(tanhBody(1, 0, 0, 0) + " %z = Relu(%x2) : $T @other\n", "f32", {}, "%y, %z"));
  EXPECT_FALSE(fuseGelu(*cube));
}

TEST(FuseGelu, WrongConstantsStay) {
  auto stays = [](const std::string& body, const Constants& k) {
    auto g = parseGraph(chainGraph(body, "f32", k));
    const std::string before = printGraph(*g);
    EXPECT_FALSE(fuseGelu(*g));
    EXPECT_EQ(printGraph(*g), before);
  };
  Constants half;
  half.half = 0.6;
  Constants sqrt3;
  sqrt3.sqrt2 = std::sqrt(3.0);
  Constants rsqrt2;
  rsqrt2.rsqrt2 = 0.7071 * (1 + 3e-4);
  Constants two;
  two.one = 2;
  stays(erfBody(0, 0, 0), half);
  stays(erfBody(0, 0, 0), sqrt3);
  stays(erfBody(1, 0, 0), rsqrt2);
  stays(erfBody(0, 1, 0), two);
  // Div(x, 1/√2) is x·√2, and Div(√2, x) is not x/√2.
  stays(" %s = Div(%x, %rsqrt2) : $T @s\n %f = Erf(%s) : $T @f\n" + std::string(kOnePlus[0]) +
            kProducts[0],
        {});
  stays(" %s = Div(%sqrt2, %x) : $T @s\n %f = Erf(%s) : $T @f\n" + std::string(kOnePlus[0]) +
            kProducts[0],
        {});
  Constants k;
  k.k = 0.8;
  Constants c;
  c.c = 0.05;
  Constants square;
  square.three = 2;
  stays(tanhBody(0, 0, 0, 0), k);
  stays(tanhBody(0, 0, 0, 0), c);
  stays(tanhBody(0, 0, 0, 0), square);
  // An erf chain with tanh's constants, and 1 - erf.
  stays(" %s = Div(%x, %sqrt2) : $T @s\n %f = Tanh(%s) : $T @f\n" + std::string(kOnePlus[0]) +
            kProducts[0],
        {});
  stays(" %s = Div(%x, %sqrt2) : $T @s\n %f = Erf(%s) : $T @f\n %t = Sub(%one, %f) : $T @t\n" +
            std::string(kProducts[0]),
        {});
}

// A trainable 0.5 (an ONNX float initializer imports as a parameter) is not a constant.
TEST(FuseGelu, ParameterInPlaceOfAConstantStays) {
  std::string text = chainGraph(erfBody(0, 0, 0));
  text.replace(text.find("const %half"), 5, "param");
  auto g = parseGraph(text);
  ASSERT_EQ(g->value("half")->role(), Role::Parameter);
  EXPECT_FALSE(fuseGelu(*g));
}

// A constant of shape [1,1,1] broadcasts the result to rank 3: not Gelu(x)'s type.
TEST(FuseGelu, BroadcastingConstantStays) {
  auto g = parseGraph(
      "graph g {\n input %x : f32[2,40]\n const %sqrt2 : f32[] = [1.4142135]\n"
      " const %one : f32[] = [1]\n const %half : f32[1,1,1] = [0.5]\n"
      " %s = Div(%x, %sqrt2) : f32[2,40] @s\n %f = Erf(%s) : f32[2,40] @f\n"
      " %t = Add(%f, %one) : f32[2,40] @t\n %p = Mul(%x, %t) : f32[2,40] @p\n"
      " %y = Mul(%p, %half) : f32[1,2,40] @gelu\n return %y\n}");
  verifyGraph(*g);
  EXPECT_FALSE(fuseGelu(*g));
}

// ---- GPT (dsmodel gpt) ----

GptOptions smallGpt() {
  return {.layers = 3, .d_model = 32, .heads = 2, .vocab = 50, .seq = 8, .seed = 1};
}
constexpr int64_t kBatch = 2;

Compilation compileGpt(const std::string& name, const std::string& config_json = "") {
  CompileOptions o;
  o.model_path = test::tempPath(name + ".onnx");
  saveModel(buildGpt(smallGpt()), o.model_path);
  o.micro_batch = kBatch;
  if (!config_json.empty()) {
    o.config_path = test::tempPath(name + ".json");
    test::writeFile(*o.config_path, config_json);
    o.loss = "cross_entropy";
  }
  return compile(o);
}

TEST(FuseGelu, GptCompilesToOneGeluPerLayer) {
  Compilation c = compileGpt("fuse_gelu_gpt");
  EXPECT_EQ(countOp(*c.graph, "Gelu"), 3u);
  EXPECT_EQ(countOp(*c.graph, "Erf"), 0u);
  EXPECT_EQ(countOp(*c.graph, "Div"), 0u);  // GPT's only Div was x/√2
  for (int layer = 0; layer < 3; ++layer) {
    const std::string name = "h." + std::to_string(layer) + ".mlp.gelu";
    const Node* gelu = c.graph->value(name)->producer();
    ASSERT_NE(gelu, nullptr) << name;
    EXPECT_EQ(gelu->op(), "Gelu");
    EXPECT_EQ(gelu->name(), name);
    EXPECT_EQ(gelu->s("approximate"), "none");
  }
}

// The small GPT imported and cleaned up as compile() does, with or without
// fuse-gelu, then the cross-entropy loss and autodiff of every parameter.
struct GptRun {
  double loss = 0;
  std::map<std::string, Tensor> outputs;  // logits and "<param>_grad"
};

Tensor tokens(uint64_t salt) {
  Tensor t(TensorType{DType::I64, {kBatch, smallGpt().seq}});
  for (int64_t i = 0; i < t.numel(); ++i)
    t.setInt(i, static_cast<int64_t>((static_cast<uint64_t>(i) * 7 + salt) % 50));
  return t;
}

GptRun runGpt(bool fuse) {
  ImportOptions import;
  import.batch = kBatch;
  auto g = importOnnxModel(buildGpt(smallGpt()), import, "", "gpt");
  std::vector<std::string> passes = {"fold-constants", "fold-transpose", "dead-code"};
  if (fuse) passes.insert(passes.begin() + 2, "fuse-gelu");
  runPasses(*g, passes, {});
  EXPECT_EQ(countOp(*g, "Gelu"), fuse ? 3u : 0u);
  EXPECT_EQ(countOp(*g, "Erf"), fuse ? 0u : 3u);
  Value* loss = addLoss(*g, {});
  for (const auto& [param, grad] : buildGradients(*g, loss, g->sourcesWithRole(Role::Parameter)))
    g->addOutput(grad);
  verifyGraph(*g);
  PlanFile plan = lowerToPlan(*g, planMemory(*g), {});
  CpuExecutor exec(plan);
  exec.setFeed("input_ids", tokens(3));
  exec.setFeed("label", tokens(5));
  exec.run();
  GptRun r;
  for (size_t i = 0; i < exec.numOutputs(); ++i) r.outputs[exec.outputName(i)] = exec.output(i);
  r.loss = r.outputs.at("loss").getDouble(0);
  r.outputs.erase("loss");
  return r;
}

double l2(const Tensor& t) {
  double s = 0;
  for (int64_t i = 0; i < t.numel(); ++i) s += t.getDouble(i) * t.getDouble(i);
  return std::sqrt(s);
}

double relativeL2(const Tensor& got, const Tensor& want) {
  double diff = 0;
  for (int64_t i = 0; i < want.numel(); ++i)
    diff += std::pow(got.getDouble(i) - want.getDouble(i), 2);
  return std::sqrt(diff) / l2(want);
}

// Logits, loss and every parameter gradient of the fused GPT equal those computed
// through the unfused chain (Gelu's gradient rule against Div/Erf/Add/Mul's) within
// 1e-6 relative (L2 per tensor; observed: below 3e-7).
TEST(FuseGelu, GptLossAndGradientsMatchTheUnfusedChain) {
  GptRun chain = runGpt(false), fused = runGpt(true);
  EXPECT_NEAR(fused.loss, chain.loss, 1e-6 * chain.loss);
  ASSERT_EQ(fused.outputs.size(), chain.outputs.size());
  for (const auto& [name, want] : chain.outputs) {
    ASSERT_EQ(fused.outputs.count(name), 1u) << name;
    const Tensor& got = fused.outputs.at(name);
    ASSERT_EQ(got.type(), want.type()) << name;
    EXPECT_LT(relativeL2(got, want), 1e-6) << name;
  }
}

// A training compile of the GPT differentiates the Gelu nodes by Gelu's own rule;
// its first step's loss and gradient norm are those of the unfused chain.
TEST(FuseGelu, GptTrainsThroughGeluGradient) {
  const std::string name = "fuse_gelu_gpt_train";
  Compilation c = compileGpt(name, R"({"train_micro_batch_size_per_gpu": 2,
      "optimizer": {"type": "SGD", "params": {"lr": 0.01}}})");
  EXPECT_EQ(countOp(*c.graph, "Gelu"), 3u);
  bool gelu_rule = false, chain_rule = false;
  for (const auto& n : c.graph->nodes()) {
    gelu_rule |= n->name().rfind("h.0.mlp.gelu/grad/", 0) == 0;
    chain_rule |= n->name().rfind("h.0.mlp.gelu.", 0) == 0;  // .div, .erf, .add, .mul
  }
  EXPECT_TRUE(gelu_rule);
  EXPECT_FALSE(chain_rule);
  PlanFile plan = buildPlan(c, test::tempPath(name + ".onnx"));
  CpuExecutor exec(plan);
  TrainOptions options;
  options.datasets["input_ids"] = tokens(3);
  options.datasets["label"] = tokens(5);
  std::vector<StepMetrics> steps = train(exec, plan, options);
  ASSERT_EQ(steps.size(), 1u);
  GptRun chain = runGpt(false);
  double norm = 0;
  for (const auto& [name, grad] : chain.outputs)
    if (name != "logits") norm += std::pow(l2(grad), 2);
  EXPECT_NEAR(steps[0].loss, chain.loss, 1e-6 * chain.loss);
  EXPECT_NEAR(steps[0].grad_norm, std::sqrt(norm), 1e-6 * std::sqrt(norm));
}

}  // namespace
}  // namespace ds
