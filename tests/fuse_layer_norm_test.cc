// The fuse-layer-norm pass: the layer norm PyTorch writes out below opset 17
// (ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add) becomes one
// LayerNormalization that keeps the last node's name and the result's name; its
// output and the gradients of x, scale and bias are what the unfused chain computes
// (CPU, f64 to 1e-10, f32 within rounding). Chains with a shared intermediate,
// other axes or a non-constant epsilon stay. A GPT exported by PyTorch compiles to
// the plan of the one dsmodel writes with LayerNormalization.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "ir/text.h"
#include "ir/verifier.h"
#include "passes/fuse_layer_norm.h"
#include "tests/test_util.h"
#include "tests/training_fixtures.h"

namespace ds {
namespace {

// Layer norm of x [2, 3, 4] over AXES (normalised shape N), its square SQUARE, the
// result AFFINE, in dtype T.
std::string layerNorm(const std::string& t, const std::string& square = "Pow(%d, %two)",
                      const std::string& affine = "Add(%scaled, %bias)") {
  std::string text = R"(graph g {
    input %x : T[2,3,4]
    input %scale : T[4]
    input %bias : T[4]
    const %two : T[] = [2.0]
    const %eps : T[] = [1e-05]
    %m = ReduceMean(%x) {axes = [-1]} : T[2,3,1] @mean
    %d = Sub(%x, %m) : T[2,3,4] @centred
    %sq = SQUARE : T[2,3,4] @square
    %v = ReduceMean(%sq) {axes = [-1]} : T[2,3,1] @variance
    %ve = Add(%v, %eps) : T[2,3,1] @plus_eps
    %s = Sqrt(%ve) : T[2,3,1] @std
    %n = Div(%d, %s) : T[2,3,4] @normalised
    %scaled = Mul(%n, %scale) : T[2,3,4] @scaled
    %y = AFFINE : T[2,3,4] @ln
    return %y
  })";
  text = test::replaceAll(text, "SQUARE", square);
  text = test::replaceAll(text, "AFFINE", affine);
  return test::replaceAll(text, "T[", t + "[");
}

void expectFused(const std::string& text, const std::string& t, const std::string& last,
                 bool bias) {
  auto before = parseGraph(text);
  auto after = parseGraph(text);
  ASSERT_TRUE(fuseLayerNorm(*after)) << text;
  verifyGraph(*after);
  ASSERT_EQ(after->numNodes(), 1u) << printGraph(*after);
  const Node& ln = *after->nodes().front();
  EXPECT_EQ(ln.op(), "LayerNormalization");
  EXPECT_EQ(ln.name(), last);
  EXPECT_EQ(ln.output(0)->name(), after->outputs()[0]->name());
  EXPECT_EQ(ln.numInputs(), bias ? 3u : 2u);
  EXPECT_EQ(ln.i("axis"), 2);
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

TEST(FuseLayerNorm, TorchsChainBecomesOneLayerNormalization) {
  for (const std::string t : {"f32", "f64"}) {
    SCOPED_TRACE(t);
    expectFused(layerNorm(t), t, "ln", true);
    expectFused(layerNorm(t, "Mul(%d, %d)", "Add(%bias, %scaled)"), t, "ln", true);
    // Without a bias the Mul is the last node.
    std::string no_bias = layerNorm(t);
    no_bias =
        test::replaceAll(no_bias, "    %y = Add(%scaled, %bias) : " + t + "[2,3,4] @ln\n", "");
    no_bias = test::replaceAll(no_bias, "return %y", "return %scaled");
    expectFused(no_bias, t, "scaled", false);
  }
}

TEST(FuseLayerNorm, OtherChainsStay) {
  auto expectUnfused = [](const std::string& text) {
    auto g = parseGraph(text);
    EXPECT_FALSE(fuseLayerNorm(*g)) << text;
  };
  // The centred values are also returned.
  expectUnfused(test::replaceAll(layerNorm("f32"), "return %y", "return %y, %d"));
  // Normalised over the middle axis: LayerNormalization normalises trailing axes.
  std::string middle =
      test::replaceAll(layerNorm("f32"), "{axes = [-1]} : f32[2,3,1]", "{axes = [1]} : f32[2,1,4]");
  middle = test::replaceAll(middle, "%ve = Add(%v, %eps) : f32[2,3,1]",
                            "%ve = Add(%v, %eps) : f32[2,1,4]");
  middle = test::replaceAll(middle, "%s = Sqrt(%ve) : f32[2,3,1]", "%s = Sqrt(%ve) : f32[2,1,4]");
  expectUnfused(middle);
  // Epsilon is trainable.
  expectUnfused(
      test::replaceAll(layerNorm("f32"), "const %eps : f32[] = [1e-05]", "input %eps : f32[]"));
  // A cube, not a square.
  expectUnfused(test::replaceAll(layerNorm("f32"), "const %two : f32[] = [2.0]",
                                 "const %two : f32[] = [3.0]"));
  // A scale that broadcasts (one element): not of the normalised shape.
  expectUnfused(
      test::replaceAll(layerNorm("f32"), "input %scale : f32[4]", "input %scale : f32[1]"));
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
