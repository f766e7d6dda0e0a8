// CPU backward kernels at the kernel level. Their f64 forms are checked against
// finite differences through the gradient rules (autodiff_test.cc); here the f32
// forms are checked against those f64 ones on the same (f32-representable) data:
// for Conv that compares oneDNN's backward primitives with the reference loops on
// ResNet-like shapes. Plus what the small finite-difference cases cannot see: the
// threaded loops of large shapes (against naive references), MaxPool ties routing
// to the first maximum, and shape rules rejecting a dY that does not match.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "ir/error.h"
#include "kernels/cpu/run_node.h"
#include "tests/cpu_nn_test_util.h"
#include "tests/test_util.h"

namespace ds::cpu {
namespace {

using test::Ints;
using test::rnd;
using test::Vec;

// The same values as f64.
Tensor toF64(const Tensor& t) {
  if (!isFloat(t.dtype()) || t.dtype() == DType::F64) return t;
  return Tensor::fromDoubles(DType::F64, t.shape(), t.toDoubles());
}

// Every element within 1e-4 relative of the f64 result; elements that cancel to
// near zero are judged against 1e-4 of the tensor's RMS instead (f32 rounding of
// the summed terms, not of the result, bounds their error).
void expectAgree(const Tensor& f32, const Tensor& f64, const std::string& what) {
  ASSERT_EQ(f32.shape(), f64.shape()) << what;
  Vec a = f32.toDoubles(), b = f64.toDoubles();
  double rms = 0.0;
  for (double v : b) rms += v * v;
  rms = std::sqrt(rms / static_cast<double>(std::max<size_t>(b.size(), 1)));
  int bad = 0;
  for (size_t i = 0; i < b.size() && bad < 5; ++i)
    if (!(std::fabs(a[i] - b[i]) <= 1e-4 * std::max(std::fabs(b[i]), rms)))
      ADD_FAILURE() << what << " element " << i << ": f32 " << a[i] << ", f64 " << b[i]
                    << (++bad, "");
}

// Runs `op` on f32 inputs and on the same values in f64; compares every output.
void checkF32AgainstF64(const std::string& op, const std::vector<Tensor>& f32_inputs,
                        const AttributeMap& attrs, size_t outputs = 1) {
  std::vector<Tensor> f64_inputs;
  for (const Tensor& t : f32_inputs) f64_inputs.push_back(toF64(t));
  std::vector<Tensor> lo = runOp(op, f32_inputs, attrs, outputs);
  std::vector<Tensor> hi = runOp(op, f64_inputs, attrs, outputs);
  for (size_t i = 0; i < outputs; ++i)
    expectAgree(lo[i], hi[i], op + " output " + std::to_string(i));
}

struct ConvShape {
  Shape x, w;
  AttributeMap attrs;
  Shape y;
};

TEST(CpuGradConv, OneDnnMatchesF64ReferenceOnResNetShapes) {
  const std::vector<ConvShape> shapes = {
      {{2, 3, 32, 32},
       {16, 3, 7, 7},
       {{"pads", Ints{3, 3, 3, 3}}, {"strides", Ints{2, 2}}},
       {2, 16, 16, 16}},
      {{2, 64, 14, 14}, {64, 64, 3, 3}, {{"pads", Ints{1, 1, 1, 1}}}, {2, 64, 14, 14}},
      {{2, 64, 14, 14}, {128, 64, 1, 1}, {{"strides", Ints{2, 2}}}, {2, 128, 7, 7}},
      {{2, 32, 9, 9},
       {32, 8, 3, 3},
       {{"group", int64_t{4}}, {"dilations", Ints{2, 2}}, {"pads", Ints{2, 1, 2, 1}}},
       {2, 32, 9, 7}},
  };
  uint32_t seed = 1;
  for (const ConvShape& c : shapes) {
    SCOPED_TRACE(shapeToString(c.x) + " * " + shapeToString(c.w));
    Tensor dy = rnd(DType::F32, c.y, seed++), x = rnd(DType::F32, c.x, seed++),
           w = rnd(DType::F32, c.w, seed++);
    AttributeMap in_attrs = c.attrs, w_attrs = c.attrs;
    in_attrs["input_shape"] = c.x;
    w_attrs["weight_shape"] = c.w;
    checkF32AgainstF64("ConvGradInput", {dy, w}, in_attrs);
    checkF32AgainstF64("ConvGradWeight", {dy, x}, w_attrs);
  }
}

TEST(CpuGradKernels, F32MatchesF64) {
  Tensor x = rnd(DType::F32, {2, 3, 6, 6}, 11), dy_pool = rnd(DType::F32, {2, 3, 3, 3}, 12);
  AttributeMap pool{{"kernel_shape", Ints{3, 3}},
                    {"strides", Ints{2, 2}},
                    {"pads", Ints{1, 1, 1, 1}},
                    {"ceil_mode", int64_t{0}}};
  checkF32AgainstF64("MaxPoolGrad", {dy_pool, x}, pool);
  pool["input_shape"] = Ints{2, 3, 6, 6};
  pool["count_include_pad"] = int64_t{1};
  checkF32AgainstF64("AveragePoolGrad", {dy_pool}, pool);
  Tensor dy = rnd(DType::F32, {2, 3, 6, 6}, 13), scale = rnd(DType::F32, {3}, 14);
  checkF32AgainstF64("BatchNormalizationGrad", {dy, x, scale}, {{"epsilon", 1e-5}}, 3);
  Tensor ln_scale = rnd(DType::F32, {6}, 15);
  checkF32AgainstF64("LayerNormalizationGrad", {dy, x, ln_scale}, {{"axis", int64_t{-1}}}, 3);
  Tensor scores = rnd(DType::F32, {4, 5}, 16, -3, 3), dloss = rnd(DType::F32, {}, 17);
  Tensor labels = Tensor::fromInts(DType::I64, {4}, {4, 0, 2, 0});
  checkF32AgainstF64("SoftmaxCrossEntropyLossGrad", {dloss, scores, labels},
                     {{"ignore_index", int64_t{2}}});
  checkF32AgainstF64("Exp", {rnd(DType::F32, {1000}, 18, -20, 20)}, {});
  // GeluGrad's f32 kernels use the vectorising approximations (over the threaded
  // path's length), the f64 ones <cmath>.
  for (const char* approximate : {"none", "tanh"})
    checkF32AgainstF64("GeluGrad",
                       {rnd(DType::F32, {20000}, 21), rnd(DType::F32, {20000}, 22, -12, 12)},
                       {{"approximate", std::string(approximate)}});
  // Attention with large scores (|S| in the hundreds, a scale that is no power of
  // two): the f32 kernels round the scores before subtracting the max and L.
  Tensor qkv = rnd(DType::F32, {2, 16, 3, 2, 32}, 23, -20, 20);
  const AttributeMap attention{{"scale", 0.17677669529663687}, {"causal", int64_t{1}}};
  checkF32AgainstF64("FusedAttention", {qkv}, attention, 2);
  std::vector<Tensor> forward = runOp("FusedAttention", {qkv}, attention, 2);
  checkF32AgainstF64("FusedAttentionGrad",
                     {rnd(DType::F32, {2, 16, 2, 32}, 24), qkv, forward[0], forward[1]}, attention);
  Tensor idx = Tensor::fromInts(DType::I64, {3}, {2, -1, 2});
  checkF32AgainstF64("GatherGrad", {rnd(DType::F32, {3, 4}, 19), idx},
                     {{"data_shape", Ints{5, 4}}});
  checkF32AgainstF64("SliceGrad", {rnd(DType::F32, {2, 2}, 20)},
                     {{"starts", Ints{3, 0}},
                      {"ends", Ints{0, 4}},
                      {"steps", Ints{-2, 3}},
                      {"input_shape", Ints{4, 5}}});
}

// GeluGrad's limits: 1 far right, 0 far left (also where x² overflows f32), NaN
// for NaN, in both approximations and dtypes.
TEST(CpuGradKernels, GeluGradLimits) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (DType t : {DType::F32, DType::F64})
    for (const char* approximate : {"none", "tanh"}) {
      Tensor dy = Tensor::fromDoubles(t, {5}, {1, 1, 1, 1, 1});
      Tensor x = Tensor::fromDoubles(t, {5}, {40, -40, 1e20, -1e20, nan});
      Vec got =
          runOp("GeluGrad", {dy, x}, {{"approximate", std::string(approximate)}})[0].toDoubles();
      EXPECT_EQ(got[0], 1.0) << approximate << " " << dtypeName(t);
      EXPECT_EQ(got[1], 0.0) << approximate << " " << dtypeName(t);
      EXPECT_EQ(got[2], 1.0) << approximate << " " << dtypeName(t);
      EXPECT_EQ(got[3], 0.0) << approximate << " " << dtypeName(t);
      EXPECT_TRUE(std::isnan(got[4])) << approximate << " " << dtypeName(t);
    }
}

// Shapes big enough for the threaded loops, against naive references written here.
TEST(CpuGradKernels, ThreadedPathsMatchNaiveReferences) {
  const int64_t rows = 100, dim = 50, cols = 400;
  Tensor dy = rnd(DType::F64, {rows, cols}, 21), x = rnd(DType::F64, {rows, cols}, 22);
  std::vector<int64_t> idx(rows);
  for (int64_t r = 0; r < rows; ++r) idx[r] = (r * 7) % dim - (r % 3 == 0 ? dim : 0);
  Tensor gathered = runOp("GatherGrad", {dy, Tensor::fromInts(DType::I64, {rows}, idx)},
                          {{"data_shape", Ints{dim, cols}}})[0];
  Vec want(static_cast<size_t>(dim * cols), 0.0), g = dy.toDoubles(), xv = x.toDoubles();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) want[((idx[r] + dim) % dim) * cols + j] += g[r * cols + j];
  test::expectNear(gathered, want, {dim, cols});
  Tensor scale = rnd(DType::F64, {cols}, 23);
  std::vector<Tensor> ln = runOp("LayerNormalizationGrad", {dy, x, scale}, {{"epsilon", 1e-5}}, 3);
  Vec dscale(static_cast<size_t>(cols), 0.0), dbias(static_cast<size_t>(cols), 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    double mean = 0.0, var = 0.0;
    for (int64_t j = 0; j < cols; ++j) mean += xv[r * cols + j] / cols;
    for (int64_t j = 0; j < cols; ++j) var += std::pow(xv[r * cols + j] - mean, 2) / cols;
    for (int64_t j = 0; j < cols; ++j) {
      dscale[j] += g[r * cols + j] * (xv[r * cols + j] - mean) / std::sqrt(var + 1e-5);
      dbias[j] += g[r * cols + j];
    }
  }
  test::expectNear(ln[1], dscale, {cols});
  test::expectNear(ln[2], dbias, {cols});
}

// A window of equal values sends its whole gradient to its first tap (PyTorch).
TEST(CpuGradPool, MaxPoolTiesRouteToTheFirstMaximum) {
  for (DType t : test::kTypes) {
    Tensor x = Tensor::fromDoubles(t, {1, 1, 2, 4}, Vec(8, 1.0));
    Tensor dy = Tensor::fromDoubles(t, {1, 1, 1, 2}, {1.5, 2.5});
    AttributeMap attrs{{"kernel_shape", Ints{2, 2}}, {"strides", Ints{2, 2}}};
    Tensor dx = runOp("MaxPoolGrad", {dy, x}, attrs)[0];
    EXPECT_EQ(dx.toDoubles(), (Vec{1.5, 0, 2.5, 0, 0, 0, 0, 0})) << dtypeName(t);
  }
}

TEST(CpuGradSchema, BackwardOpsRejectAMismatchedGradient) {
  Tensor dy = rnd(DType::F64, {1, 2, 3, 3}, 1), w = rnd(DType::F64, {2, 1, 3, 3}, 2);
  try {
    runOp("ConvGradInput", {dy, w}, {{"input_shape", Ints{1, 1, 6, 6}}});
    FAIL() << "dY of the wrong shape accepted";
  } catch (const Error& e) {
    EXPECT_TRUE(test::contains(e.what(), "dY must have the forward output type f64[1,2,4,4]"))
        << e.what();
  }
  try {
    runOp("SliceGrad", {dy},
          {{"starts", Ints{0}}, {"ends", Ints{2}}, {"input_shape", Ints{1, 2, 3, 4}}});
    FAIL() << "dY of the wrong shape accepted";
  } catch (const Error& e) {
    EXPECT_TRUE(test::contains(e.what(), "dY shape must be [1,2,3,4]")) << e.what();
  }
}

}  // namespace
}  // namespace ds::cpu
