// The fold-softmax-mask pass: a constant mask added to (or filled into, as
// PyTorch's masked_fill exports) a Softmax's input becomes its mask input; the
// probabilities and the gradient of the unmasked scores are what they were (CPU,
// f32 within rounding, f64 to 1e-12), and masks that do not repeat along the rows,
// other axes and shared inputs stay as they are.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "ir/text.h"
#include "ir/verifier.h"
#include "passes/dead_code.h"
#include "passes/fold_softmax_mask.h"
#include "tests/training_fixtures.h"

namespace ds {
namespace {

// Causal scores [2, 3, 4, 4]: MASKING turns %s into %z, T is the dtype.
std::string attention(const std::string& t, const std::string& masking) {
  std::string text = R"(graph g {
    input %s : T[2,3,4,4]
    const %add : T[4,4] = [0, -1e4, -1e4, -1e4, 0, 0, -1e4, -1e4, 0, 0, 0, -1e4, 0, 0, 0, 0]
    const %keep : bool[1,1,4,4] = [1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 1]
    const %masked : bool[4,4] = [0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0]
    const %ninf : T[] = [-inf]
    MASKING
    %p = Softmax(%z) {axis = -1} : T[2,3,4,4] @softmax
    return %p
  })";
  text.replace(text.find("MASKING"), 7, masking);
  for (size_t at = 0; (at = text.find("T[", at)) != std::string::npos; at += t.size())
    text.replace(at, 1, t);
  return text;
}

void expectFolded(const std::string& t, const std::string& masking) {
  SCOPED_TRACE(t + ": " + masking);
  auto before = parseGraph(attention(t, masking));
  auto after = parseGraph(attention(t, masking));
  EXPECT_TRUE(foldMaskIntoSoftmax(*after));
  eliminateDeadCode(*after);
  verifyGraph(*after);
  EXPECT_EQ(test::countOps(*after, "Add") + test::countOps(*after, "Where"), 0);
  ASSERT_EQ(after->value("p")->producer()->numInputs(), 2u);  // the Softmax keeps its output
  const double tolerance = t == "f32" ? 1e-6 : 1e-12;
  std::vector<Tensor> want = test::outputAndGradients(*before, {"s"}, 3, 7);
  std::vector<Tensor> got = test::outputAndGradients(*after, {"s"}, 3, 7);
  for (size_t o = 0; o < 2; ++o)
    for (int64_t i = 0; i < want[o].numel(); ++i)
      EXPECT_NEAR(got[o].getDouble(i), want[o].getDouble(i), tolerance)
          << "output " << o << " element " << i;
}

TEST(FoldSoftmaxMask, AddedAndFilledMasksBecomeTheSoftmaxsMask) {
  for (const char* t : {"f32", "f64"}) {
    expectFolded(t, "%z = Add(%s, %add) : T[2,3,4,4] @mask");
    expectFolded(t, "%z = Add(%add, %s) : T[2,3,4,4] @mask");
    expectFolded(t, "%z = Where(%keep, %s, %ninf) : T[2,3,4,4] @mask");    // keep where true
    expectFolded(t, "%z = Where(%masked, %ninf, %s) : T[2,3,4,4] @mask");  // masked_fill
  }
}

// masked_fill with a finite fill: folds when every row keeps a score (the fill
// then contributes exp(...) = 0 either way), not when a row is filled whole (filled,
// the row is uniform; added, it would be softmax(x)), nor for a fill above -1e4.
TEST(FoldSoftmaxMask, FiniteFillsFoldOnlyWhenEveryRowKeepsAScore) {
  auto graph = [](const std::string& masked, const std::string& fill) {
    return parseGraph(R"(graph g {
    input %s : f32[2,3,3]
    const %masked : bool[3,3] = )" +
                      masked + R"(
    const %fill : f32[] = [)" +
                      fill + R"(]
    %z = Where(%masked, %fill, %s) : f32[2,3,3] @mask
    %p = Softmax(%z) {axis = -1} : f32[2,3,3] @softmax
    return %p
  })");
  };
  const std::string causal = "[0, 1, 1, 0, 0, 1, 0, 0, 0]", padded = "[0, 1, 1, 0, 0, 1, 1, 1, 1]";
  EXPECT_TRUE(foldMaskIntoSoftmax(*graph(causal, "-1e9")));
  EXPECT_TRUE(foldMaskIntoSoftmax(*graph(causal, "-1e4")));
  EXPECT_FALSE(foldMaskIntoSoftmax(*graph(padded, "-1e9")));
  EXPECT_TRUE(foldMaskIntoSoftmax(*graph(padded, "-inf")));
  EXPECT_TRUE(foldMaskIntoSoftmax(*graph(padded, "-3.4028234663852886e+38")));
  EXPECT_FALSE(foldMaskIntoSoftmax(*graph(causal, "-100")));
}

TEST(FoldSoftmaxMask, LeavesOtherMasksAxesAndSharedScoresAlone) {
  // A mask as large as the scores is a mask of every row (it folds); one per batch
  // element of several rows each does not repeat along the rows.
  auto full = parseGraph(R"(graph g {
    input %s : f32[2,3]
    const %m : f32[2,3] = [0, -1, 0, 0, 0, -1]
    %z = Add(%s, %m) : f32[2,3] @mask
    %p = Softmax(%z) {axis = -1} : f32[2,3] @softmax
    return %p
  })");
  EXPECT_TRUE(foldMaskIntoSoftmax(*full));
  auto per_batch = parseGraph(R"(graph g {
    input %s : f32[2,2,3]
    const %m : f32[2,1,3] = [0, -1, 0, 0, 0, -1]
    %z = Add(%s, %m) : f32[2,2,3] @mask
    %p = Softmax(%z) {axis = -1} : f32[2,2,3] @softmax
    return %p
  })");
  EXPECT_FALSE(foldMaskIntoSoftmax(*per_batch));
  auto other_axis = parseGraph(R"(graph g {
    input %s : f32[3,3]
    const %m : f32[3] = [0, -1, 0]
    %z = Add(%s, %m) : f32[3,3] @mask
    %p = Softmax(%z) {axis = 0} : f32[3,3] @softmax
    return %p
  })");
  EXPECT_FALSE(foldMaskIntoSoftmax(*other_axis));
  auto shared = parseGraph(R"(graph g {
    input %s : f32[3,3]
    const %m : f32[3] = [0, -1, 0]
    %z = Add(%s, %m) : f32[3,3] @mask
    %p = Softmax(%z) {axis = -1} : f32[3,3] @softmax
    return %p, %z
  })");
  EXPECT_FALSE(foldMaskIntoSoftmax(*shared));
  auto computed = parseGraph(R"(graph g {
    input %s : f32[3,3]
    input %m : f32[3]
    %z = Add(%s, %m) : f32[3,3] @mask
    %p = Softmax(%z) {axis = -1} : f32[3,3] @softmax
    return %p
  })");
  EXPECT_FALSE(foldMaskIntoSoftmax(*computed));
}

}  // namespace
}  // namespace ds
