// The fuse-layer-norm pass: the layer norm PyTorch writes out below opset 17
// (ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add) becomes one
// LayerNormalization that keeps the last node's name and the result's name; its
// output and the gradients of x, scale and bias are what the unfused chain computes
// (CPU, f64 to 1e-10, f32 within rounding). Chains with a shared intermediate,
// other axes or a non-constant epsilon stay. A GPT exported by PyTorch compiles to
// the plan of the one dsmodel writes with LayerNormalization.
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "ir/text.h"
#include "ir/verifier.h"
#include "passes/fuse_layer_norm.h"
#include "tests/test_util.h"
#include "tests/training_fixtures.h"

namespace ds {
namespace {

// Layer norm of x [2, 3, 4] over its last axis in dtype T, as torch 1.13 writes it
// at opset 15. Tests edit the text: each line is unique.
std::string layerNorm(const std::string& t) {
  return test::replaceAll(R"(graph g {
    input %x : T[2,3,4]
    input %scale : T[4]
    input %bias : T[4]
    const %two : T[] = [2.0]
    const %eps : T[] = [1e-05]
    %m = ReduceMean(%x) {axes = [-1]} : T[2,3,1] @mean
    %d = Sub(%x, %m) : T[2,3,4] @centred
    %sq = Pow(%d, %two) : T[2,3,4] @square
    %v = ReduceMean(%sq) {axes = [-1]} : T[2,3,1] @variance
    %ve = Add(%v, %eps) : T[2,3,1] @plus_eps
    %s = Sqrt(%ve) : T[2,3,1] @std
    %n = Div(%d, %s) : T[2,3,4] @normalised
    %scaled = Mul(%n, %scale) : T[2,3,4] @scaled
    %y = Add(%scaled, %bias) : T[2,3,4] @ln
    return %y
  })",
                          "T[", t + "[");
}

// `text` with each (from, to) replaced in turn; every `from` must occur.
std::string edited(std::string text,
                   const std::vector<std::pair<std::string, std::string>>& edits) {
  for (const auto& [from, to] : edits) {
    EXPECT_NE(text.find(from), std::string::npos) << from;
    text = test::replaceAll(text, from, to);
  }
  return text;
}

// The pass fuses `text` into one LayerNormalization named `last` over axis `axis`
// whose output and gradients match the chain's.
void expectFused(const std::string& text, const std::string& t, const std::string& last,
                 int64_t axis, bool bias) {
  SCOPED_TRACE(text);
  auto before = parseGraph(text);
  auto after = parseGraph(text);
  ASSERT_TRUE(fuseLayerNorm(*after));
  verifyGraph(*after);
  ASSERT_EQ(after->numNodes(), 1u) << printGraph(*after);
  const Node& ln = *after->nodes().front();
  EXPECT_EQ(ln.op(), "LayerNormalization");
  EXPECT_EQ(ln.name(), last);
  EXPECT_EQ(ln.output(0)->name(), after->outputs()[0]->name());
  EXPECT_EQ(ln.numInputs(), bias ? 3u : 2u);
  EXPECT_EQ(ln.i("axis"), axis);
  EXPECT_NEAR(ln.f("epsilon"), 1e-5, 1e-12);
  std::vector<std::string> wrt = {"x", "scale"};
  if (bias) wrt.push_back("bias");
  const double tolerance = t == "f32" ? 2e-5 : 1e-10;
  std::vector<Tensor> want = test::outputAndGradients(*before, wrt, 2, 11);
  std::vector<Tensor> got = test::outputAndGradients(*after, wrt, 2, 11);
  ASSERT_EQ(got.size(), wrt.size() + 1);
  for (size_t o = 0; o < got.size(); ++o)
    for (int64_t i = 0; i < want[o].numel(); ++i)
      EXPECT_NEAR(got[o].getDouble(i), want[o].getDouble(i), tolerance)
          << "output " << o << " element " << i;
}

void expectUnfused(const std::string& text) {
  auto g = parseGraph(text);
  EXPECT_FALSE(fuseLayerNorm(*g)) << text;
}

TEST(FuseLayerNorm, TorchsChainBecomesOneLayerNormalization) {
  for (const std::string t : {"f32", "f64"}) {
    SCOPED_TRACE(t);
    const std::string ln = layerNorm(t);
    expectFused(ln, t, "ln", 2, true);
    // Mul(d, d) for the square; operands of Add and Mul the other way round; the
    // variance's axis counted from the front.
    expectFused(edited(ln, {{"Pow(%d, %two)", "Mul(%d, %d)"},
                            {"Add(%scaled, %bias)", "Add(%bias, %scaled)"},
                            {"Mul(%n, %scale)", "Mul(%scale, %n)"},
                            {"Add(%v, %eps)", "Add(%eps, %v)"},
                            {"ReduceMean(%sq) {axes = [-1]}", "ReduceMean(%sq) {axes = [2]}"}}),
                t, "ln", 2, true);
    // Without a bias the Mul is the last node.
    expectFused(edited(ln, {{"    %y = Add(%scaled, %bias) : " + t + "[2,3,4] @ln\n", ""},
                            {"return %y", "return %scaled"}}),
                t, "scaled", 2, false);
    // Over the last two axes: axis 1, scale and bias [3, 4].
    expectFused(
        edited(ln, {{"input %scale : " + t + "[4]", "input %scale : " + t + "[3,4]"},
                    {"input %bias : " + t + "[4]", "input %bias : " + t + "[3,4]"},
                    {"{axes = [-1]} : " + t + "[2,3,1]", "{axes = [-2, -1]} : " + t + "[2,1,1]"},
                    {": " + t + "[2,3,1] @plus_eps", ": " + t + "[2,1,1] @plus_eps"},
                    {": " + t + "[2,3,1] @std", ": " + t + "[2,1,1] @std"}}),
        t, "ln", 1, true);
  }
}

TEST(FuseLayerNorm, OtherChainsStay) {
  const std::string ln = layerNorm("f32");
  // An intermediate also returned, or also read by another node.
  expectUnfused(edited(ln, {{"return %y", "return %y, %d"}}));
  expectUnfused(
      edited(ln, {{"return %y", "return %y, %z"},
                  {"    %y = Add", "    %z = Neg(%s) : f32[2,3,1] @reads_std\n    %y = Add"}}));
  // The operands of Sub or Div swapped.
  expectUnfused(edited(ln, {{"Sub(%x, %m)", "Sub(%m, %x)"}}));
  expectUnfused(edited(ln, {{"Div(%d, %s) : f32[2,3,4]", "Div(%s, %d) : f32[2,3,4]"}}));
  // Normalised over the middle axis: LayerNormalization normalises trailing axes
  // (scale and bias of the shape it would normalise, so only the axes decide).
  expectUnfused(
      edited(ln, {{"input %scale : f32[4]", "input %scale : f32[3,4]"},
                  {"input %bias : f32[4]", "input %bias : f32[3,4]"},
                  {"{axes = [-1]} : f32[2,3,1]", "{axes = [1]} : f32[2,1,4]"},
                  {"%ve = Add(%v, %eps) : f32[2,3,1]", "%ve = Add(%v, %eps) : f32[2,1,4]"},
                  {"%s = Sqrt(%ve) : f32[2,3,1]", "%s = Sqrt(%ve) : f32[2,1,4]"}}));
  // The reductions drop the axis.
  expectUnfused(edited(ln, {{"ReduceMean(%x) {axes = [-1]} : f32[2,3,1]",
                             "ReduceMean(%x) {axes = [-1], keepdims = 0} : f32[2,3]"},
                            {"%d = Sub(%x, %m)",
                             "%mk = Unsqueeze(%m) {axes = [-1]} : f32[2,3,1] @keep\n"
                             "    %d = Sub(%x, %mk)"}}));
  // Epsilon not a constant, negative, or of several elements.
  expectUnfused(edited(ln, {{"const %eps : f32[] = [1e-05]", "input %eps : f32[]"}}));
  expectUnfused(edited(ln, {{"const %eps : f32[] = [1e-05]", "const %eps : f32[] = [-1e-05]"}}));
  expectUnfused(
      edited(ln, {{"const %eps : f32[] = [1e-05]",
                   "const %eps : f32[2,3,1] = [1e-05, 1e-05, 1e-05, 1e-05, 1e-05, 1e-05]"}}));
  // A cube, not a square.
  expectUnfused(edited(ln, {{"const %two : f32[] = [2.0]", "const %two : f32[] = [3.0]"}}));
  // A scale that broadcasts (one element): not of the normalised shape.
  expectUnfused(edited(ln, {{"input %scale : f32[4]", "input %scale : f32[1]"}}));
}

// Over a rank-1 x the normalised shape is x's: neither Mul(n, n) nor Add(y, y) may
// pass for a scale or a bias (the chain computes them).
TEST(FuseLayerNorm, ChainValuesAreNeverItsScaleOrBias) {
  std::string rank1 = edited(layerNorm("f32"), {{"[2,3,4]", "[4]"}, {"[2,3,1]", "[1]"}});
  expectFused(rank1, "f32", "ln", 0, true);
  expectUnfused(edited(rank1, {{"Mul(%n, %scale)", "Mul(%n, %n)"}}));
  // Add(y, y): the layer norm without a bias fuses, the Add reads it twice.
  auto g = parseGraph(edited(rank1, {{"Add(%scaled, %bias)", "Add(%scaled, %scaled)"}}));
  ASSERT_TRUE(fuseLayerNorm(*g));
  verifyGraph(*g);
  ASSERT_EQ(g->numNodes(), 2u) << printGraph(*g);
  const Node& ln = *g->nodes().front();
  EXPECT_EQ(ln.op(), "LayerNormalization");
  EXPECT_EQ(ln.numInputs(), 2u);
  EXPECT_EQ(g->nodes().back()->input(0), ln.output(0));
}

// dsmodel's GPT writes LayerNormalization; PyTorch's export of the same model at
// opset 15 (models/export_torch.py) writes the chain: the two compile to the same
// steps.
TEST(FuseLayerNorm, TorchExportedGptCompilesLikeDsmodels) {
  const std::string torch_onnx = test::scratch("fuse_ln_torch_gpt.onnx");
  const std::string args = " --layers 2 --d-model 32 --heads 4 --vocab 50 --seq 8";
  // Debian's PyTorch (scripts/setup.sh installs python3-torch).
  auto r = test::runCommand("/usr/bin/python3 " + std::string(DS_SOURCE_DIR) +
                            "/models/export_torch.py gpt" + args + " --batch 2 -o " + torch_onnx);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string ds_onnx = test::scratch("fuse_ln_dsmodel_gpt.onnx");
  r = test::tool("dsmodel", "gpt" + args + " -o " + ds_onnx);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto ops = [](const std::string& onnx) {
    auto c = test::tool(
        "dscompile", onnx + " --batch 2 --loss cross_entropy --dump summary -o " + onnx + ".plan");
    EXPECT_EQ(c.exit_code, 0) << c.output;
    const size_t at = c.output.find("ops ");
    return c.output.substr(at, c.output.find('\n', at) - at);
  };
  EXPECT_EQ(ops(torch_onnx), ops(ds_onnx));
  EXPECT_TRUE(test::contains(ops(torch_onnx), "LayerNormalizationGrad 5")) << ops(torch_onnx);
}

}  // namespace
}  // namespace ds
