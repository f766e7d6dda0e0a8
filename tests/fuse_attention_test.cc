// The fuse-attention pass and FusedAttention's CPU kernels: attention written as
// head transposes, MatMul, (causal) Softmax and MatMul becomes one FusedAttention;
// its output and the gradients of Q, K and V are what the unfused ops compute (CPU,
// f64 to 1e-12, f32 within rounding); attention with another mask, shared
// intermediates or other layouts stays as it is.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "ir/text.h"
#include "ir/verifier.h"
#include "passes/dead_code.h"
#include "passes/fuse_attention.h"
#include "tests/test_util.h"
#include "tests/training_fixtures.h"

namespace ds {
namespace {

// Attention over q, k [2, 5, 3, 4] and v [2, 5, 3, 6] (batch, T, heads, head size);
// KEYS is how the scores read K, SOFTMAX the Softmax's inputs, T the dtype.
std::string attention(const std::string& t, const std::string& keys, const std::string& softmax) {
  std::string text = R"(graph g {
    input %q : T[2,5,3,4]
    input %k : T[2,5,3,4]
    input %v : T[2,5,3,6]
    const %causal : T[5,5] = [0, -1e9, -1e9, -1e9, -1e9, 0, 0, -1e9, -1e9, -1e9, 0, 0, 0, -1e9, -1e9, 0, 0, 0, 0, -1e9, 0, 0, 0, 0, 0]
    const %other : T[5,5] = [0, -1e9, 0, -1e9, -1e9, 0, 0, -1e9, -1e9, -1e9, 0, 0, 0, -1e9, -1e9, 0, 0, 0, 0, -1e9, 0, 0, 0, 0, 0]
    %qt = Transpose(%q) {perm = [0, 2, 1, 3]} : T[2,3,5,4] @qt
    %vt = Transpose(%v) {perm = [0, 2, 1, 3]} : T[2,3,5,6] @vt
    KEYS
    %p = Softmax(SOFTMAX) {axis = -1} : T[2,3,5,5] @probs
    %c = MatMul(%p, %vt) : T[2,3,5,6] @context
    %y = Transpose(%c) {perm = [0, 2, 1, 3]} : T[2,5,3,6] @merge
    return %y
  })";
  auto put = [&](const std::string& key, const std::string& value) {
    text.replace(text.find(key), key.size(), value);
  };
  put("KEYS", keys);
  put("SOFTMAX", softmax);
  for (size_t at = 0; (at = text.find("T[", at)) != std::string::npos; at += t.size())
    text.replace(at, 1, t);
  return text;
}

const std::string kKeysTransposed =  // K read as [B, H, D, T]
    "%kt = Transpose(%k) {perm = [0, 2, 3, 1]} : T[2,3,4,5] @kt\n"
    "    %s = MatMul(%qt, %kt) {alpha = 0.5} : T[2,3,5,5] @scores";
const std::string kKeysTransB =  // K as [B, H, T, D], the product transposing it
    "%kt = Transpose(%k) {perm = [0, 2, 1, 3]} : T[2,3,5,4] @kt\n"
    "    %s = MatMul(%qt, %kt) {alpha = 0.5, transB = 1} : T[2,3,5,5] @scores";

void expectFused(const std::string& t, const std::string& keys, const std::string& softmax,
                 bool causal) {
  SCOPED_TRACE(t + ": " + keys + ", Softmax(" + softmax + ")");
  auto before = parseGraph(attention(t, keys, softmax));
  auto after = parseGraph(attention(t, keys, softmax));
  EXPECT_TRUE(fuseAttention(*after));
  eliminateDeadCode(*after);
  verifyGraph(*after);
  ASSERT_EQ(after->numNodes(), 1u) << printGraph(*after);
  const Node& fused = *after->nodes().front();
  EXPECT_EQ(fused.op(), "FusedAttention");
  EXPECT_EQ(fused.i("causal"), causal ? 1 : 0);
  EXPECT_EQ(fused.f("scale"), 0.5);
  const double tolerance = t == "f32" ? 1e-5 : 1e-12;
  std::vector<Tensor> want = test::outputAndGradients(*before, {"q", "k", "v"}, 2, 3);
  std::vector<Tensor> got = test::outputAndGradients(*after, {"q", "k", "v"}, 2, 3);
  ASSERT_EQ(got.size(), 4u);
  for (size_t o = 0; o < 4; ++o)
    for (int64_t i = 0; i < want[o].numel(); ++i)
      EXPECT_NEAR(got[o].getDouble(i), want[o].getDouble(i), tolerance)
          << "output " << o << " element " << i;
}

TEST(FuseAttention, CausalAndUnmaskedAttentionBecomeOneStep) {
  for (const char* t : {"f32", "f64"})
    for (const std::string& keys : {kKeysTransposed, kKeysTransB}) {
      expectFused(t, keys, "%s, %causal", true);
      expectFused(t, keys, "%s", false);
    }
}

TEST(FuseAttention, LeavesOtherMasksSharedValuesAndLayoutsAlone) {
  auto expectUnfused = [](const std::string& text) {
    auto g = parseGraph(text);
    EXPECT_FALSE(fuseAttention(*g)) << text;
  };
  auto f32 = [](std::string text) {
    for (size_t at = 0; (at = text.find("T[", at)) != std::string::npos; at += 3)
      text.replace(at, 1, "f32");
    return text;
  };
  expectUnfused(attention("f32", kKeysTransposed, "%s, %other"));  // not causal
  // The probabilities are also returned.
  std::string shared = attention("f32", kKeysTransposed, "%s");
  shared.replace(shared.find("return %y"), 9, "return %y, %p");
  expectUnfused(shared);
  // Q already [B, H, T, D]: no head transpose to absorb.
  expectUnfused(f32(R"(graph g {
    input %q : T[2,3,5,4]
    input %k : T[2,5,3,4]
    input %v : T[2,5,3,6]
    %kt = Transpose(%k) {perm = [0, 2, 3, 1]} : T[2,3,4,5] @kt
    %vt = Transpose(%v) {perm = [0, 2, 1, 3]} : T[2,3,5,6] @vt
    %s = MatMul(%q, %kt) : T[2,3,5,5] @scores
    %p = Softmax(%s) {axis = -1} : T[2,3,5,5] @probs
    %c = MatMul(%p, %vt) : T[2,3,5,6] @context
    %y = Transpose(%c) {perm = [0, 2, 1, 3]} : T[2,5,3,6] @merge
    return %y
  })"));  // Q is not a head transpose
}

TEST(FuseAttention, DsmodelGptTrainsWithFusedAttention) {
  const std::string onnx = test::scratch("fuse_attention_gpt.onnx");
  auto r =
      test::tool("dsmodel", "gpt --layers 2 --d-model 32 --heads 4 --vocab 40 --seq 8 -o " + onnx);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = test::tool("dscompile", onnx + " --batch 2 --loss cross_entropy --dump summary -o " +
                                  test::scratch("fuse_attention_gpt.plan"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(test::contains(r.output, "FusedAttention 2")) << r.output;
  EXPECT_TRUE(test::contains(r.output, "FusedAttentionGrad 2")) << r.output;
  EXPECT_FALSE(test::contains(r.output, "Softmax ")) << r.output;
}

}  // namespace
}  // namespace ds
