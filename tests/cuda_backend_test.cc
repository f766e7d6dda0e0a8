// The CUDA backend against the CPU oracle. Per op: a small graph (text IR) with
// its gradients built by autodiff (loss = Σ y·r), lowered to a plan and run on
// both executors; every output must agree within 1e-4 relative in f32 (elements
// that cancel to near zero are judged against 1e-4 of the tensor's RMS), integer
// and bool outputs exactly. Whole models: MLP, ResNet-18 (32×32) and a tiny GPT
// forward, and a few training steps of each (AdamW, SGD with momentum and
// clipping, Adam) comparing every step's loss and gradient norm and the final
// parameters. Plans and CPU references are computed before the GPU check, and
// every kernel factory is run on every plan without a device, so without a GPU
// these tests still exercise everything but the device work, then skip.
// Mixed precision: the same op graphs in f16 and bf16, and the normalisations with
// 16-bit data and f32 parameters as mixed-precision plans have them (outputs within
// a couple of 16-bit ulps, see expectClose; Cast and byte movers bit for bit), run
// natively by Native16 kernels or promoted to f32 as the executor decides.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <optional>
#include <random>
#include <set>

#include "ir/error.h"
#include "ir/text.h"
#include "ir/verifier.h"
#include "kernels/cpu/kernel.h"
#include "kernels/cpu/layout.h"
#include "kernels/cpu/promote16.h"
#include "passes/autodiff.h"
#include "passes/lower_to_plan.h"
#include "passes/memory_plan.h"
#include "runtime/cpu_executor.h"
#include "tests/test_util.h"
#include "tests/training_fixtures.h"

#ifdef DS_HAVE_CUDA
#include "frontend/compile.h"
#include "kernels/cuda/attention_sdpa.h"
#include "kernels/cuda/cuda_executor.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/epilogues.h"
#include "kernels/cuda/layout.h"
#include "kernels/cuda/weight_bias_grad_kernels.h"
#include "models/models.h"
#include "runtime/trainer.h"

namespace ds {
namespace {

#define SKIP_WITHOUT_GPU()                                         \
  do {                                                             \
    if (std::string why = cuda::unavailableReason(); !why.empty()) \
      GTEST_SKIP() << "no GPU: " << why;                           \
  } while (0)

bool haveGpu() {
  return cuda::unavailableReason().empty();
}

struct OpCase {
  std::string op;    // the op under test (its backward ops come with it)
  std::string text;  // f32 inputs, output %y
  bool grads = true;
  bool positive = false;  // inputs from [0.5, 1.5] instead of [-1, 1]
  bool exact = false;     // 16-bit outputs bit for bit (Cast, byte movers, selections)
  double slack = 1.0;     // tolerance multiplier (16-bit attention: see as16)
};

void PrintTo(const OpCase& c, std::ostream* os) {
  *os << c.op;
}

// Forward ops with gradients: the backward ops (ConvGradInput, MaxPoolGrad, ...)
// run in the same plans.
// `n` mask values: 0, or a large negative score every third.
std::string maskRow(int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += std::string(i ? ", " : "") + (i % 3 == 2 ? "-1e4" : "0");
  return out;
}

std::vector<OpCase> nnCases() {
  return {
      {"Conv",
       "input %x0 : f32[2,4,9,9]\n input %x1 : f32[6,2,3,3]\n input %x2 : f32[6]\n"
       " %y = Conv(%x0, %x1, %x2) {dilations = [2, 2], group = 2, pads = [1, 1, 1, 1], strides = "
       "[2, 2]} : f32[2,6,4,4] @n"},
      {"Conv",
       "input %x0 : f32[4,16,8,8]\n input %x1 : f32[32,16,3,3]\n"
       " %y = Conv(%x0, %x1) {pads = [1, 1, 1, 1]} : f32[4,32,8,8] @n"},
      {"Conv",
       "input %x0 : f32[2,3,16,16]\n input %x1 : f32[8,3,7,7]\n"
       " %y = Conv(%x0, %x1) {pads = [3, 3, 3, 3], strides = [2, 2]} : f32[2,8,8,8] @n"},
      {"Conv",
       "input %x0 : f32[1,2,7]\n input %x1 : f32[3,2,3]\n"
       " %y = Conv(%x0, %x1) {pads = [1, 1], strides = [2]} : f32[1,3,4] @n"},
      {"MaxPool",
       "input %x0 : f32[2,3,8,8]\n %y = MaxPool(%x0) {kernel_shape = [3, 3], pads = [1, 1, 1, 1], "
       "strides = [2, 2]} : f32[2,3,4,4] @n"},
      {"MaxPool",
       "input %x0 : f32[2,2,6,6]\n %y = MaxPool(%x0) {ceil_mode = 1, kernel_shape = [3, 3], pads = "
       "[1, 1, 1, 1], strides = [2, 2]} : f32[2,2,4,4] @n"},
      // Dilated: the general gradient kernel (the others take the 2-D fast path).
      {"MaxPool",
       "input %x0 : f32[2,2,9,9]\n %y = MaxPool(%x0) {dilations = [2, 2], kernel_shape = [3, 3], "
       "strides = [2, 2]} : f32[2,2,3,3] @n"},
      {"AveragePool",
       "input %x0 : f32[2,2,6,6]\n %y = AveragePool(%x0) {ceil_mode = 1, count_include_pad = 1, "
       "kernel_shape = [3, 3], pads = [1, 1, 1, 1], strides = [2, 2]} : f32[2,2,4,4] @n"},
      {"AveragePool",
       "input %x0 : f32[2,2,6,6]\n %y = AveragePool(%x0) {kernel_shape = [3, 3], pads = [1, 1, 1, "
       "1], strides = [2, 2]} : f32[2,2,3,3] @n"},
      {"GlobalAveragePool",
       "input %x0 : f32[2,3,5,5]\n %y = GlobalAveragePool(%x0) : f32[2,3,1,1] @n"},
      {"BatchNormalization",
       "input %x0 : f32[4,3,5,5]\n input %x1 : f32[3]\n input %x2 : f32[3]\n"
       " const %m : f32[3] = [0.1, -0.2, 0.3]\n const %v : f32[3] = [0.5, 2.0, 1.0]\n"
       " %y, %rm, %rv = BatchNormalization(%x0, %x1, %x2, %m, %v) {epsilon = 0.01, momentum = 0.8,"
       " training_mode = 1} : f32[4,3,5,5], f32[3], f32[3] @n"},
      {"BatchNormalization",
       "input %x0 : f32[2,3,2]\n input %x1 : f32[3]\n input %x2 : f32[3]\n input %x3 : f32[3]\n"
       " input %x4 : f32[3]\n %y = BatchNormalization(%x0, %x1, %x2, %x3, %x4) {epsilon = 0.01} : "
       "f32[2,3,2] @n",
       true, true},
      // Statistics over planes of 196 (whole planes, not a whole number of packs)
      // and of 64 (elements in packs):
      {"BatchNormalization",
       "input %x0 : f32[4,3,14,14]\n input %x1 : f32[3]\n input %x2 : f32[3]\n"
       " const %m : f32[3] = [0, 0, 0]\n const %v : f32[3] = [1, 1, 1]\n"
       " %y = BatchNormalization(%x0, %x1, %x2, %m, %v) {training_mode = 1} : f32[4,3,14,14] @n"},
      {"BatchNormalization",
       "input %x0 : f32[8,4,8,8]\n input %x1 : f32[4]\n input %x2 : f32[4]\n"
       " const %m : f32[4] = [0, 0, 0, 0]\n const %v : f32[4] = [1, 1, 1, 1]\n"
       " %y = BatchNormalization(%x0, %x1, %x2, %m, %v) {training_mode = 1} : f32[8,4,8,8] @n"},
      // Large channels: statistics split over several blocks per channel.
      {"BatchNormalization",
       "input %x0 : f32[16,4,32,32]\n input %x1 : f32[4]\n input %x2 : f32[4]\n"
       " const %m : f32[4] = [0.1, -0.2, 0.3, 0]\n const %v : f32[4] = [0.5, 2.0, 1.0, 1.0]\n"
       " %y, %rm, %rv = BatchNormalization(%x0, %x1, %x2, %m, %v) {momentum = 0.9,"
       " training_mode = 1} : f32[16,4,32,32], f32[4], f32[4] @n"},
      {"LayerNormalization",
       "input %x0 : f32[6,32]\n input %x1 : f32[32]\n input %x2 : f32[32]\n"
       " %y = LayerNormalization(%x0, %x1, %x2) {epsilon = 0.00001} : f32[6,32] @n"},
      // Many rows: the parameter gradients' sums split over row blocks.
      {"LayerNormalization",
       "input %x0 : f32[300,40]\n input %x1 : f32[40]\n input %x2 : f32[40]\n"
       " %y = LayerNormalization(%x0, %x1, %x2) {epsilon = 0.00001} : f32[300,40] @n"},
      {"Gemm",
       "input %x0 : f32[3,2]\n input %x1 : f32[3,4]\n input %x2 : f32[4]\n"
       " %y = Gemm(%x0, %x1, %x2) {alpha = 0.5, beta = 2.0, transA = 1} : f32[2,4] @n"},
      {"Gemm",
       "input %x0 : f32[8,32]\n input %x1 : f32[16,32]\n input %x2 : f32[8,1]\n"
       " %y = Gemm(%x0, %x1, %x2) {transB = 1} : f32[8,16] @n"},
      // Attention (Q, K, V in [batch, T, heads, head]): causal; and longer keys with a
      // value head size of their own. Its gradient case runs FusedAttentionGrad.
      {"ReduceSumSquare",
       "input %x0 : f32[3,40,5]\n %y = ReduceSumSquare(%x0) {axes = [1]} : f32[3,1,5] @n"},
      {"ReduceSumSquare",  // no axis with noop_with_empty_axes: each element squared
       "input %x0 : f32[3,70]\n %y = ReduceSumSquare(%x0) {noop_with_empty_axes = 1} : "
       "f32[3,70] @n"},
      {"ReduceSumSquare",  // every axis, as the gradient norm sums a bucket
       "input %x0 : f32[4000]\n %y = ReduceSumSquare(%x0) {keepdims = 0} : f32[] @n"},
      {"FusedAttention",
       "input %x0 : f32[2,7,3,8]\n input %x1 : f32[2,7,3,8]\n input %x2 : f32[2,7,3,8]\n"
       " %y, %l = FusedAttention(%x0, %x1, %x2) {causal = 1} : f32[2,7,3,8], f32[2,3,7] @n"},
      {"FusedAttention",
       "input %x0 : f32[2,3,2,8]\n input %x1 : f32[2,5,2,8]\n input %x2 : f32[2,5,2,16]\n"
       " %y, %l = FusedAttention(%x0, %x1, %x2) {scale = 0.3} : f32[2,3,2,16], f32[2,2,3] @n"},
      {"FusedAttention",  // a head size cuDNN's engines lack: the cuBLAS kernels in 16 bits
       "input %x0 : f32[1,6,2,4]\n input %x1 : f32[1,6,2,4]\n input %x2 : f32[1,6,2,4]\n"
       " %y, %l = FusedAttention(%x0, %x1, %x2) {causal = 1} : f32[1,6,2,4], f32[1,2,6] @n"},
      {"FusedAttention",  // Q, K and V packed in one [B, T, 3, H, D] (pack-attention)
       "input %x0 : f32[2,7,3,3,8]\n"
       " %y, %l = FusedAttention(%x0) {causal = 1} : f32[2,7,3,8], f32[2,3,7] @n"},
      {"FusedAttention",  // packed, of a GPT's head size: cuDNN's engines in 16 bits
       "input %x0 : f32[1,16,3,2,64]\n"
       " %y, %l = FusedAttention(%x0) {causal = 1} : f32[1,16,2,64], f32[1,2,16] @n"},
      {"MatMul",
       "input %x0 : f32[2,5,3]\n input %x1 : f32[3,4]\n %y = MatMul(%x0, %x1) : f32[2,5,4] @n"},
      {"MatMul",
       "input %x0 : f32[2,1,3,5]\n input %x1 : f32[3,5,2]\n %y = MatMul(%x0, %x1) : f32[2,3,3,2] "
       "@n"},
      {"MatMul",
       "input %x0 : f32[4]\n input %x1 : f32[2,4,3]\n %y = MatMul(%x0, %x1) : f32[2,3] @n", false},
      {"MatMul",
       "input %x0 : f32[2,3,5]\n input %x1 : f32[2,4,3]\n"
       " %y = MatMul(%x0, %x1) {transA = 1, transB = 1} : f32[2,5,4] @n"},
      {"MatMul",
       "input %x0 : f32[2,4,3]\n input %x1 : f32[2,5,3]\n"
       " %y = MatMul(%x0, %x1) {alpha = 0.125, transB = 1} : f32[2,4,5] @n"},
      {"MatMul",  // a linear layer: the bias Add is the product's cuBLASLt epilogue
       "input %x0 : f32[2,5,24]\n input %x1 : f32[24,40]\n input %x2 : f32[40]\n"
       " %m = MatMul(%x0, %x1) : f32[2,5,40] @mm\n %y = Add(%m, %x2) : f32[2,5,40] @n"},
      {"MatMul",  // tied weights (transB) and a [1, N] bias
       "input %x0 : f32[6,24]\n input %x1 : f32[40,24]\n input %x2 : f32[1,40]\n"
       " %m = MatMul(%x0, %x1) {transB = 1} : f32[6,40] @mm\n %y = Add(%x2, %m) : f32[6,40] @n"},
      {"MatMul",  // odd sizes (16-bit rows of 2-byte alignment: cuBLASLt may have no
                  // algorithm, the fallback adds the bias after the product) and alpha
       "input %x0 : f32[3,7]\n input %x1 : f32[7,5]\n input %x2 : f32[5]\n"
       " %m = MatMul(%x0, %x1) {alpha = 0.5} : f32[3,5] @mm\n %y = Add(%m, %x2) : f32[3,5] @n"},
      {"SoftmaxCrossEntropyLoss",
       "input %x0 : f32[5,3]\n const %t : i64[5] = [0, 2, 1, 2, 1]\n"
       " const %w : f32[3] = [0.5, 2.0, 1.5]\n"
       " %y = SoftmaxCrossEntropyLoss(%x0, %t, %w) {ignore_index = 1} : f32[] @n"},
      {"SoftmaxCrossEntropyLoss",
       "input %x0 : f32[2,3,2]\n const %t : i32[2,2] = [0, 2, 1, 1]\n"
       " %y = SoftmaxCrossEntropyLoss(%x0, %t) {reduction = \"sum\"} : f32[] @n"},
      {"SoftmaxCrossEntropyLoss",  // confident: the labels' p − 1 near -1e-6, where
                                   // an f32 p would be off by ~10%
       "input %x0 : f32[4,6]\n const %t : i64[4] = [2, 0, 5, 3]\n"
       " const %b : f32[4,6] = [0, 0, 16, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0, "
       "16, 0, 0]\n %s = Add(%x0, %b) : f32[4,6] @bias\n"
       " %y = SoftmaxCrossEntropyLoss(%s, %t) : f32[] @n"},
      {"SoftmaxCrossEntropyLoss",  // padded scores: the first 5 of 8 classes
       "input %x0 : f32[4,8]\n const %t : i64[4] = [4, 0, 2, 1]\n"
       " %y = SoftmaxCrossEntropyLoss(%x0, %t) {classes = 5} : f32[] @n"},
      {"SoftmaxCrossEntropyLoss",
       "input %x0 : f32[3,4]\n const %t : i64[3] = [3, 0, 3]\n"
       " %y = SoftmaxCrossEntropyLoss(%x0, %t) {reduction = \"none\"} : f32[3] @n"},
      {"SoftmaxCrossEntropyLoss",  // a NaN score, and a row all -inf: NaN, as on the CPU
       "input %x0 : f32[3,4]\n const %t : i64[3] = [3, 0, 1]\n"
       " const %b : f32[3,4] = [0, nan, 0, 0, -inf, -inf, -inf, -inf, 0, 0, 0, 0]\n"
       " %s = Add(%x0, %b) : f32[3,4] @bias\n"
       " %y = SoftmaxCrossEntropyLoss(%s, %t) {reduction = \"none\"} : f32[3] @n"},
      {"SoftmaxCrossEntropyLoss",
       "input %x0 : f32[3,4]\n const %t : i64[3] = [3, 0, 1]\n"
       " %l, %y = SoftmaxCrossEntropyLoss(%x0, %t) : f32[], f32[3,4] @n"},
      // A long trailing dim (a sequence): the kernels tiled over it, a partial tile.
      {"SoftmaxCrossEntropyLoss",
       "input %x0 : f32[2,5,40]\n const %t : i64[2,40] = [1, 2, 0, 3, 3, 1, 0, 0, 0, 3, 4, 2, 0, "
       "1, 4, 4, 2, 2, 1, 0, 2, 1, 0, 2, 2, 1, 1, 2, 2, 2, 0, 4, 2, 3, 4, 1, 1, 1, 3, 2, 0, 4, 2, "
       "0, 2, 4, 2, 4, 1, 3, 3, 4, 2, 3, 3, 1, 1, 2, 2, 0, 0, 0, 3, 2, 4, 4, 3, 2, 1, 1, 0, 3, 1, "
       "3, 2, 1, 2, 3, 4, 2]\n"
       " const %w : f32[5] = [0.5, 2.0, 1.5, 1.0, 0.25]\n"
       " %l, %y = SoftmaxCrossEntropyLoss(%x0, %t, %w) {ignore_index = 2} : f32[], "
       "f32[2,5,40] @n"},
      {"SoftmaxCrossEntropyLoss",
       "input %x0 : f32[2,5,40]\n const %t : i64[2,40] = [1, 2, 0, 3, 3, 1, 0, 0, 0, 3, 4, 2, 0, "
       "1, 4, 4, 2, 2, 1, 0, 2, 1, 0, 2, 2, 1, 1, 2, 2, 2, 0, 4, 2, 3, 4, 1, 1, 1, 3, 2, 0, 4, 2, "
       "0, 2, 4, 2, 4, 1, 3, 3, 4, 2, 3, 3, 1, 1, 2, 2, 0, 0, 0, 3, 2, 4, 4, 3, 2, 1, 1, 0, 3, 1, "
       "3, 2, 1, 2, 3, 4, 2]\n"
       " %y = SoftmaxCrossEntropyLoss(%x0, %t) {reduction = \"none\"} : f32[2,40] @n"},
  };
}

// Concat and Split of many small parts of a flat buffer (ZeRO's buckets of
// normalisation parameters), which the CUDA kernel copies in one batched launch:
// parts of 1 to 5 floats, so ranges copy by 16-byte or 4-byte words (and, in the
// 16-bit runs of these cases, by 2-byte ones).
std::vector<OpCase> manyPartCases() {
  std::string inputs, args, outputs, types, sizes;
  int64_t total = 0;
  for (int k = 0; k < 17; ++k) {
    const int64_t n = k % 5 + 1;
    const std::string type = "f32[" + std::to_string(n) + "]", sep = k ? ", " : "";
    inputs += "input %x" + std::to_string(k) + " : " + type + "\n";
    args += sep + "%x" + std::to_string(k);
    outputs += sep + (k ? "%y" + std::to_string(k) : std::string("%y"));
    types += sep + type;
    sizes += sep + std::to_string(n);
    total += n;
  }
  const std::string flat = "f32[" + std::to_string(total) + "]";
  return {{"Concat", inputs + "%y = Concat(" + args + ") {axis = 0} : " + flat + " @n"},
          {"Split", "input %x0 : " + flat + "\n" + outputs + " = Split(%x0) {axis = 0, split = [" +
                        sizes + "]} : " + types + " @n"}};
}

std::vector<OpCase> tensorCases() {
  std::vector<OpCase> many = manyPartCases();
  std::vector<OpCase> cases = {
      {"Add", "input %x0 : f32[2,3]\n input %x1 : f32[3]\n %y = Add(%x0, %x1) : f32[2,3] @n"},
      // Same shapes, not a whole number of 16-byte packs: packed access, then a tail.
      {"Add", "input %x0 : f32[3,37]\n input %x1 : f32[3,37]\n %y = Add(%x0, %x1) : f32[3,37] @n"},
      {"Relu", "input %x0 : f32[5,29]\n %y = Relu(%x0) : f32[5,29] @n"},
      {"Sigmoid", "input %x0 : f32[5,29]\n %y = Sigmoid(%x0) : f32[5,29] @n"},
      {"Sub", "input %x0 : f32[2,3]\n input %x1 : f32[2,1]\n %y = Sub(%x0, %x1) : f32[2,3] @n"},
      {"Mul",
       "input %x0 : f32[2,3,4]\n input %x1 : f32[1,3,1]\n %y = Mul(%x0, %x1) : f32[2,3,4] @n"},
      {"Div", "input %x0 : f32[2,3]\n input %x1 : f32[2,3]\n %y = Div(%x0, %x1) : f32[2,3] @n",
       true, true},
      {"Pow", "input %x0 : f32[3,4]\n const %p : f32[] = [3.0]\n %y = Pow(%x0, %p) : f32[3,4] @n",
       true, true},
      {"Neg", "input %x0 : f32[4]\n %y = Neg(%x0) : f32[4] @n"},
      {"Identity", "input %x0 : f32[4]\n %y = Identity(%x0) : f32[4] @n"},
      {"Relu", "input %x0 : f32[3,4]\n %y = Relu(%x0) : f32[3,4] @n"},
      {"LeakyRelu", "input %x0 : f32[5,37]\n %y = LeakyRelu(%x0) {alpha = 0.1} : f32[5,37] @n"},
      {"Pad",  // a fill that is not zero, padding on two axes
       "input %x0 : f32[2,3,4]\n %y = Pad(%x0) {pads = [0, 1, 2, 0, 0, 1], value = -1.5} : "
       "f32[2,4,7] @n"},
      // ReLU6's bounds, and a contiguous run long enough for the packed kernels.
      {"Clip", "input %x0 : f32[5,37]\n %y = Clip(%x0) {max = 0.5, min = -0.4} : f32[5,37] @n"},
      {"Sigmoid", "input %x0 : f32[3,4]\n %y = Sigmoid(%x0) : f32[3,4] @n"},
      {"Tanh", "input %x0 : f32[3,4]\n %y = Tanh(%x0) : f32[3,4] @n"},
      {"Sqrt", "input %x0 : f32[3,4]\n %y = Sqrt(%x0) : f32[3,4] @n", true, true},
      {"Log", "input %x0 : f32[3,4]\n %y = Log(%x0) : f32[3,4] @n", true, true},
      {"Softplus", "input %x0 : f32[5,37]\n %y = Softplus(%x0) : f32[5,37] @n"},
      {"Exp", "input %x0 : f32[3,4]\n %y = Exp(%x0) : f32[3,4] @n"},
      {"Erf", "input %x0 : f32[3,4]\n %y = Erf(%x0) : f32[3,4] @n"},
      {"Gelu", "input %x0 : f32[3,4]\n %y = Gelu(%x0) : f32[3,4] @n"},
      {"Gelu", "input %x0 : f32[3,4]\n %y = Gelu(%x0) {approximate = \"tanh\"} : f32[3,4] @n"},
      {"GeluGrad",
       "input %x0 : f32[3,40]\n input %x1 : f32[3,40]\n %y = GeluGrad(%x0, %x1) : f32[3,40] @n",
       false},
      {"GeluGrad",
       "input %x0 : f32[3,40]\n input %x1 : f32[3,40]\n"
       " %y = GeluGrad(%x0, %x1) {approximate = \"tanh\"} : f32[3,40] @n",
       false},
      {"Where",
       "input %x0 : f32[2,3]\n input %x1 : f32[3]\n const %c : bool[2,3] = [1, 0, 1, 0, 0, 1]\n"
       " %y = Where(%c, %x0, %x1) : f32[2,3] @n"},
      {"Cast", "input %x0 : f32[4]\n %y = Cast(%x0) {to = \"f32\"} : f32[4] @n"},
      {"Reshape", "input %x0 : f32[2,6]\n %y = Reshape(%x0) {shape = [3, -1]} : f32[3,4] @n"},
      {"Flatten", "input %x0 : f32[2,3,2]\n %y = Flatten(%x0) : f32[2,6] @n"},
      {"Squeeze", "input %x0 : f32[2,1,3]\n %y = Squeeze(%x0) {axes = [1]} : f32[2,3] @n"},
      {"Unsqueeze", "input %x0 : f32[2,3]\n %y = Unsqueeze(%x0) {axes = [0]} : f32[1,2,3] @n"},
      {"Transpose",
       "input %x0 : f32[2,3,4]\n %y = Transpose(%x0) {perm = [2, 0, 1]} : f32[4,2,3] @n"},
      {"Expand", "input %x0 : f32[3,1]\n %y = Expand(%x0) {shape = [2, 3, 4]} : f32[2,3,4] @n"},
      {"ReduceSum",
       "input %x0 : f32[2,3,4]\n %y = ReduceSum(%x0) {axes = [1], keepdims = 0} : f32[2,4] @n"},
      {"ReduceSum", "input %x0 : f32[300,70]\n %y = ReduceSum(%x0) {keepdims = 0} : f32[] @n"},
      // Few columns over many rows (bias gradients): rows split over blocks.
      {"ReduceSum",
       "input %x0 : f32[1000,40]\n %y = ReduceSum(%x0) {axes = [0], keepdims = 0} : f32[40] @n"},
      {"ReduceSum",
       "input %x0 : f32[3,300,20]\n %y = ReduceSum(%x0) {axes = [1]} : f32[3,1,20] @n"},
      // Long enough to be split over several blocks.
      {"ReduceSum", "input %x0 : f32[400,400]\n %y = ReduceSum(%x0) {keepdims = 0} : f32[] @n"},
      {"ReduceMean",
       "input %x0 : f32[2,3,4,5]\n %y = ReduceMean(%x0) {axes = [1, 3], keepdims = 0} : f32[2,4] "
       "@n"},
      {"ReduceMean",
       "input %x0 : f32[2,3,4]\n %y = ReduceMean(%x0) {axes = [0, 2]} : f32[1,3,1] @n"},
      {"ReduceSum",  // a conv bias gradient: long interleaved reductions, a block each
       "input %x0 : f32[6,5,9,10]\n %y = ReduceSum(%x0) {axes = [0, 2, 3], keepdims = 0} : f32[5] "
       "@n"},
      {"Softmax", "input %x0 : f32[3,500]\n %y = Softmax(%x0) {axis = -1} : f32[3,500] @n"},
      {"Softmax", "input %x0 : f32[3,5,2]\n %y = Softmax(%x0) {axis = 1} : f32[3,5,2] @n"},
      {"Softmax",  // an attention mask, repeating along the rows
       "input %x0 : f32[2,3,4,6]\n const %m : f32[1,1,4,6] = [0, -1e4, -1e4, -1e4, -1e4, -1e4, "
       "0, 0, -1e4, -1e4, -1e4, -1e4, 0, 0, 0, -1e4, -1e4, -1e4, 0, 0, 0, 0, -1e4, -1e4]\n"
       " %y = Softmax(%x0, %m) : f32[2,3,4,6] @n"},
      {"Softmax",  // one mask row for every row
       "input %x0 : f32[3,300]\n const %m : f32[300] = [" + maskRow(300) +
           "]\n"
           " %y = Softmax(%x0, %m) : f32[3,300] @n"},
      {"LogSoftmax", "input %x0 : f32[3,5]\n %y = LogSoftmax(%x0) {axis = -1} : f32[3,5] @n"},
      {"Concat",
       "input %x0 : f32[2,3]\n input %x1 : f32[2,1]\n %y = Concat(%x0, %x1) {axis = 1} : f32[2,4] "
       "@n"},
      {"Split",
       "input %x0 : f32[2,5]\n %y, %rest = Split(%x0) {axis = 1, split = [2, 3]} : f32[2,2], "
       "f32[2,3] @n"},
      {"Gather",
       "input %x0 : f32[5,3]\n const %i : i64[4] = [1, 3, 1, -1]\n"
       " %y = Gather(%x0, %i) : f32[4,3] @n"},
      {"Gather",
       "input %x0 : f32[2,4,3]\n const %i : i32[2,2] = [0, 3, 3, -4]\n"
       " %y = Gather(%x0, %i) {axis = 1} : f32[2,2,2,3] @n"},
      {"Slice",
       "input %x0 : f32[5,6]\n %y = Slice(%x0) {axes = [0, 1], ends = [5, 0], starts = [0, 5], "
       "steps = [2, -2]} : f32[3,3] @n"},
      {"Trilu", "input %x0 : f32[2,3,4]\n %y = Trilu(%x0) {k = 1} : f32[2,3,4] @n", false},
  };
  cases.insert(cases.end(), many.begin(), many.end());
  return cases;
}

// Ops without gradients: integer, bool and random outputs, optimizer steps.
// BatchNormalizationGrad reading a following Relu's gradient and output (the
// fuse-relu-grad pass): R from a Relu, so exact zeros mask dY; elementwise and in
// packs ([8,4,8,8]).
std::vector<OpCase> reluBatchNormGradCases(const std::string& t) {
  std::vector<OpCase> cases;
  for (const std::string shape : {"[4,3,5,5]", "[8,4,8,8]"}) {
    const std::string c = shape == "[4,3,5,5]" ? "3" : "4", x = t + shape;
    cases.push_back({"BatchNormalizationGrad",
                     "input %dr : " + x + "\n input %x : " + x + "\n input %s : f32[" + c +
                         "]\n input %r0 : " + x + "\n %r = Relu(%r0) : " + x +
                         " @relu\n %y, %ds, %db = BatchNormalizationGrad(%dr, %x, %s, %r) : " + x +
                         ", f32[" + c + "], f32[" + c + "] @n",
                     false});
  }
  return cases;
}

std::vector<OpCase> forwardOnlyCases() {
  return {
      {"Equal",
       "input %x0 : f32[2,3]\n const %z : f32[3] = [0, 0.5, -1]\n %y = Equal(%x0, %z) : "
       "bool[2,3] @n",
       false},
      {"Less",
       "input %x0 : f32[2,3]\n const %z : f32[3] = [0, 0.5, -1]\n %y = Less(%x0, %z) : "
       "bool[2,3] @n",
       false},
      {"Greater",
       "input %x0 : f32[2,3]\n const %z : f32[3] = [0, 0.5, -1]\n %y = Greater(%x0, %z) : "
       "bool[2,3] @n",
       false},
      {"Not", "const %c : bool[4] = [1, 0, 0, 1]\n %y = Not(%c) : bool[4] @n", false},
      {"Clip",  // integers (index arithmetic): bounds truncated
       "input %x0 : f32[6]\n const %k : f32[] = [7.0]\n %t = Mul(%x0, %k) : f32[6] @scale\n"
       " %i = Cast(%t) {to = \"i64\"} : i64[6] @cast\n"
       " %y = Clip(%i) {max = 4.5, min = -2.5} : i64[6] @n",
       false},
      {"Cast",
       "input %x0 : f32[6]\n const %k : f32[] = [7.0]\n %t = Mul(%x0, %k) : f32[6] @scale\n"
       " %y = Cast(%t) {to = \"i64\"} : i64[6] @n",
       false},
      {"Cast",
       "input %x0 : f32[6]\n %h = Cast(%x0) {to = \"f16\"} : f16[6] @half\n"
       " %b = Cast(%h) {to = \"bool\"} : bool[6] @flag\n %y = Cast(%b) {to = \"f32\"} : f32[6] @n",
       false},
      {"Add",
       "const %a : i64[3] = [1, -2, 3]\n const %b : i64[1] = [5]\n %y = Add(%a, %b) : i64[3] @n",
       false},
      {"Shape", "input %x0 : f32[2,3,4]\n %y = Shape(%x0) {start = 1} : i64[2] @n", false},
      {"Range",
       "const %a : i64[] = [2]\n const %b : i64[] = [11]\n const %d : i64[] = [3]\n"
       " %y = Range(%a, %b, %d) : i64[3] @n",
       false},
      {"ConstantOfShape",
       "const %s : i64[2] = [2, 3]\n %y = ConstantOfShape(%s) {value = tensor<f32[1]>[1.5]} : "
       "f32[2,3] @n",
       false},
      {"Dropout",
       "input %x0 : f32[64,33]\n %y, %mask = Dropout(%x0) {ratio = 0.25, seed = 5, training_mode = "
       "1} : f32[64,33], bool[64,33] @n",
       false},
      // With the step input (training plans): the key follows step and micro-step.
      {"Dropout",
       "input %x0 : f32[16,9]\n const %s : i64[] = [4]\n %y, %mask = Dropout(%x0, %s) {ratio = "
       "0.5, training_mode = 1} : f32[16,9], bool[16,9] @n",
       false},
      {"AdamStep",
       "input %x0 : f32[40]\n input %x1 : f32[40]\n const %lr : f32[] = [0.01]\n"
       " const %s : i64[] = [3]\n input %x2 : f32[40]\n input %x3 : f32[40]\n"
       " %y, %m, %v = AdamStep(%x0, %x1, %lr, %s, %x2, %x3) {weight_decay = 0.1} : f32[40], "
       "f32[40], f32[40] @n",
       false, true},
      {"SgdStep",
       "input %x0 : f32[40]\n input %x1 : f32[40]\n const %lr : f32[] = [0.1]\n"
       " const %s : i64[] = [2]\n input %x2 : f32[40]\n"
       " %y, %b = SgdStep(%x0, %x1, %lr, %s, %x2) {momentum = 0.9, nesterov = 1, weight_decay = "
       "0.01} : f32[40], f32[40] @n",
       false},
      {"LionStep",
       "input %x0 : f32[40]\n input %x1 : f32[40]\n const %lr : f32[] = [0.01]\n"
       " const %s : i64[] = [3]\n input %x2 : f32[40]\n"
       " %y, %m = LionStep(%x0, %x1, %lr, %s, %x2) {beta2 = 0.99, weight_decay = 0.1} : f32[40], "
       "f32[40] @n",
       false},
      {"AdagradStep",
       "input %x0 : f32[40]\n input %x1 : f32[40]\n const %lr : f32[] = [0.05]\n"
       " const %s : i64[] = [3]\n input %x2 : f32[40]\n"
       " %y, %sum = AdagradStep(%x0, %x1, %lr, %s, %x2) {lr_decay = 0.1, weight_decay = 0.01} : "
       "f32[40], f32[40] @n",
       false, true},
      // 3000 elements: several blocks' sums make the trust ratio.
      {"LambStep",
       "input %x0 : f32[3000]\n input %x1 : f32[3000]\n const %lr : f32[] = [0.01]\n"
       " const %s : i64[] = [3]\n input %x2 : f32[3000]\n input %x3 : f32[3000]\n"
       " %y, %m, %v = LambStep(%x0, %x1, %lr, %s, %x2, %x3) {weight_decay = 0.1} : f32[3000], "
       "f32[3000], f32[3000] @n",
       false, true},
      {"ClipCoef", "input %x0 : f32[]\n %y = ClipCoef(%x0) {max_norm = 0.7} : f32[] @n", false,
       true},
      {"ZerosLike", "input %x0 : f32[3,2]\n %y = ZerosLike(%x0) : f32[3,2] @n", false},
      {"Copy", "input %x0 : f32[3,2]\n %y = Copy(%x0) {to = \"device\"} : f32[3,2] @n", false},
      // Collectives of a one-rank plan: copies, no communicator (multi-rank runs
      // are tests/cuda_comm_test.cc's).
      {"AllReduce", "input %x0 : f32[6]\n %y = AllReduce(%x0) {world_size = 1} : f32[6] @n", false},
      {"ReduceScatter",
       "input %x0 : f32[4,2]\n %y = ReduceScatter(%x0) {world_size = 1} : f32[4,2] @n", false},
      {"AllGather", "input %x0 : f32[3,2]\n %y = AllGather(%x0) {world_size = 1} : f32[3,2] @n",
       false},
      {"Broadcast", "input %x0 : f32[5]\n %y = Broadcast(%x0) {world_size = 1} : f32[5] @n", false},
  };
}

// The case with every f32 in its text written as `dtype` (f16 or bf16).
OpCase as16(OpCase c, const std::string& dtype) {
  c.text = test::replaceAll(c.text, "f32", dtype);
  // FusedAttention's statistics (its second output's type) stay f32. Its 16-bit
  // kernels round the probabilities and their gradient dS to 16 bits before the
  // products, as flash attention does, where the CPU's promoted kernel keeps them
  // in f32; dQ = Σ dS·K cancels (dS's rows sum to 0), so that rounding reaches
  // about twice the 16-bit tolerance there.
  if (c.op == "FusedAttention") {
    c.text = test::replaceAll(c.text, ", " + dtype + "[", ", f32[");
    c.slack = 4;
  }
  return c;
}

// f32 cases whose op graphs also run in f16 and bf16 (with gradients where the
// f32 case has them: ConvGradInput, ConvGradWeight, MaxPoolGrad, ReLU's Where
// and so on run in 16 bits too).
std::vector<OpCase> cases16Source() {
  std::vector<OpCase> out;
  std::vector<OpCase> nn = nnCases(), tensor = tensorCases();
  for (const OpCase& c : nn)
    if (c.op == "Conv" || c.op == "MaxPool" || c.op == "AveragePool" || c.op == "Gemm" ||
        c.op == "MatMul" || c.op == "GlobalAveragePool" || c.op == "FusedAttention" ||
        c.op == "ReduceSumSquare")
      out.push_back(c);
  // Their gradients only move bytes too (Expand's, Gather's and Where's broadcast
  // add values, so those compare within tolerance).
  const std::set<std::string> byte_movers = {"Identity",  "Reshape",   "Flatten", "Squeeze",
                                             "Unsqueeze", "Transpose", "Concat",  "Split",
                                             "Slice",     "Trilu"};
  for (OpCase c : tensor) {
    if (c.op == "Cast") continue;  // below, in every direction
    c.exact = byte_movers.count(c.op) != 0;
    out.push_back(c);
  }
  out.push_back({"Conv",  // grouped and strided, without bias: native in 16 bits
                 "input %x0 : f32[2,4,9,9]\n input %x1 : f32[6,2,3,3]\n"
                 " %y = Conv(%x0, %x1) {group = 2, pads = [1, 1, 1, 1], strides = [2, 2]} : "
                 "f32[2,6,5,5] @n"});
  out.push_back({"Gemm",  // without C: cuBLAS rounds its f32 result once
                 "input %x0 : f32[8,32]\n input %x1 : f32[32,16]\n"
                 " %y = Gemm(%x0, %x1) {alpha = 0.5} : f32[8,16] @n"});
  out.push_back({"Equal",
                 "input %x0 : f32[2,3]\n const %z : f32[3] = [0, 0.5, -1]\n"
                 " %r = Relu(%x0) : f32[2,3] @relu\n %y = Equal(%r, %z) : bool[2,3] @n",
                 false});
  return out;
}

// Cast between every pair of f32, f16, bf16, and between 16 bits and integers and
// bool; constants on rounding ties check nearest-even.
std::vector<OpCase> castCases16() {
  std::vector<OpCase> out;
  const std::vector<std::string> floats = {"f32", "f16", "bf16"};
  for (const std::string& from : floats)
    for (const std::string& to : floats)
      if (from != to)
        out.push_back({"Cast",
                       "input %x0 : " + from + "[67]\n %y = Cast(%x0) {to = \"" + to +
                           "\"} : " + to + "[67] @n",  // 16 packs of 4 and a tail
                       false, false, true});
  // Ties: 1 + 2^-11 (f16) and 1 + 2^-8 (bf16) round down to 1, 1 + 3·2^-11 and
  // 1 + 3·2^-8 up to the even neighbour; 2049 is an f16 tie (to 2048).
  const std::string ties =
      "const %c : f32[6] = [1.00048828125, 1.00146484375, 1.00390625, 1.01171875, 2049, -0.1]\n";
  for (const std::string to : {"f16", "bf16"})
    out.push_back({"Cast", ties + " %y = Cast(%c) {to = \"" + to + "\"} : " + to + "[6] @n", false,
                   false, true});
  for (const std::string t : {"f16", "bf16"}) {
    out.push_back({"Cast",
                   "input %x0 : " + t + "[6]\n const %k : " + t +
                       "[] = [7.0]\n %s = Mul(%x0, %k) : " + t +
                       "[6] @scale\n %y = Cast(%s) {to = \"i64\"} : i64[6] @n",
                   false, false, true});
    out.push_back({"Cast",
                   "const %a : i64[5] = [1, -300, 2049, 65504, -7]\n %y = Cast(%a) {to = \"" + t +
                       "\"} : " + t + "[5] @n",
                   false, false, true});
    out.push_back({"Cast",
                   "input %x0 : " + t +
                       "[6]\n %b = Cast(%x0) {to = \"bool\"} : bool[6] @flag\n"
                       " %y = Cast(%b) {to = \"" +
                       t + "\"} : " + t + "[6] @n",
                   false, false, true});
  }
  return out;
}

// The normalisations as mixed precision runs them: X, Y (and dY, dX) in 16 bits
// `t`, parameters, statistics and their gradients in f32 (passes/mixed_precision.h);
// Native16 kernels read and write the 16-bit tensors themselves.
std::vector<OpCase> normCases16(const std::string& t) {
  std::vector<OpCase> cases = {
      {"BatchNormalization", R"(input %x0 : T[4,3,5,5]
        input %x1 : f32[3]
        input %x2 : f32[3]
        const %m : f32[3] = [0.1, -0.2, 0.3]
        const %v : f32[3] = [0.5, 2.0, 1.0]
        %y, %rm, %rv = BatchNormalization(%x0, %x1, %x2, %m, %v) {epsilon = 0.01, momentum = 0.8, training_mode = 1} : T[4,3,5,5], f32[3], f32[3] @n)"},
      {"BatchNormalization", R"(input %x0 : T[8,4,32,32]
        input %x1 : f32[4]
        input %x2 : f32[4]
        const %m : f32[4] = [0.1, -0.2, 0.3, 0]
        const %v : f32[4] = [0.5, 2.0, 1.0, 1.0]
        %y, %rm, %rv = BatchNormalization(%x0, %x1, %x2, %m, %v) {training_mode = 1} : T[8,4,32,32], f32[4], f32[4] @n)"},
      {"BatchNormalization", R"(input %x0 : T[4,3,14,14]
        input %x1 : f32[3]
        input %x2 : f32[3]
        const %m : f32[3] = [0, 0, 0]
        const %v : f32[3] = [1, 1, 1]
        %y = BatchNormalization(%x0, %x1, %x2, %m, %v) {training_mode = 1} : T[4,3,14,14] @n)"},
      {"BatchNormalization", R"(input %x0 : T[8,4,8,8]
        input %x1 : f32[4]
        input %x2 : f32[4]
        const %m : f32[4] = [0, 0, 0, 0]
        const %v : f32[4] = [1, 1, 1, 1]
        %y = BatchNormalization(%x0, %x1, %x2, %m, %v) {training_mode = 1} : T[8,4,8,8] @n)"},
      {"LayerNormalization", R"(input %x0 : T[300,40]
        input %x1 : f32[40]
        input %x2 : f32[40]
        %y = LayerNormalization(%x0, %x1, %x2) : T[300,40] @n)"},
      // 2-D, without the running statistics.
      {"BatchNormalization", R"(input %x0 : T[6,4]
        input %x1 : f32[4]
        input %x2 : f32[4]
        const %m : f32[4] = [0, 0, 0, 0]
        const %v : f32[4] = [1, 1, 1, 1]
        %y = BatchNormalization(%x0, %x1, %x2, %m, %v) {training_mode = 1} : T[6,4] @n)"},
      {"LayerNormalization", R"(input %x0 : T[6,32]
        input %x1 : f32[32]
        input %x2 : f32[32]
        %y = LayerNormalization(%x0, %x1, %x2) {epsilon = 0.00001} : T[6,32] @n)"},
      // Over the last two dims, with the f32 statistics out.
      {"LayerNormalization", R"(input %x0 : T[2,6,8]
        input %x1 : f32[6,8]
        input %x2 : f32[6,8]
        %y, %mean, %inv = LayerNormalization(%x0, %x1, %x2) {axis = 1} : T[2,6,8], f32[2,1,1], f32[2,1,1] @n)"},
  };
  for (OpCase& c : cases) c.text = test::replaceAll(c.text, "T[", t + "[");
  return cases;
}

// `n` labels in [0, classes), comma-separated.
std::string labelList(int n, int classes) {
  std::string out;
  for (int i = 0; i < n; ++i) out += (i ? ", " : "") + std::to_string((7 * i + 3) % classes);
  return out;
}

// The cross-entropy loss on 16-bit scores, as mixed precision leaves the logits:
// an f32 loss and weights, the gradient rounded once to the scores' dtype; rows of
// contiguous classes (a language model's, flattened), and [N, C, d] scores with
// many d (the tiled kernels).
std::vector<OpCase> crossEntropyCases16(const std::string& t) {
  std::vector<OpCase> cases = {
      {"SoftmaxCrossEntropyLoss", R"(input %x0 : T[6,300]
        const %t : i64[6] = [0, 299, 17, 150, 3, 298]
        %y = SoftmaxCrossEntropyLoss(%x0, %t) : f32[] @n)"},
      {"SoftmaxCrossEntropyLoss", R"(input %x0 : T[5,4]
        const %t : i64[5] = [0, 2, 1, 2, 3]
        const %w : f32[4] = [1.0, 0.5, 2.0, 1.5]
        %l, %y = SoftmaxCrossEntropyLoss(%x0, %t, %w) {ignore_index = 1} : f32[], T[5,4] @n)"},
      // Padded scores (pad-products' logits read by fuse-loss-padding): 300 of 320.
      {"SoftmaxCrossEntropyLoss", R"(input %x0 : T[6,320]
        const %t : i64[6] = [0, 299, 17, 150, 3, 298]
        %y = SoftmaxCrossEntropyLoss(%x0, %t) {classes = 300} : f32[] @n)"},
      {"SoftmaxCrossEntropyLoss", R"(input %x0 : T[2,5,70]
        const %t : i64[2,70] = [)" + labelList(140, 5) +
                                      R"(]
        %y = SoftmaxCrossEntropyLoss(%x0, %t) {reduction = "sum"} : f32[] @n)"},
  };
  for (OpCase& c : cases) c.text = test::replaceAll(c.text, "T[", t + "[");
  return cases;
}

// Mixed precision's optimizer tail (passes/fuse_optimizer_casts.h): an f32 master
// stepped by a 16-bit gradient, writing the rounded 16-bit copy; the 16-bit
// gradient's norm summed into f32; a 16-bit sum into f32 with its gradient.
std::vector<OpCase> optimizerCases16(const std::string& t) {
  std::vector<OpCase> cases = {
      {"AdamStep",
       "input %x0 : f32[40]\n input %x1 : T[40]\n const %lr : f32[] = [0.01]\n"
       " const %s : i64[] = [3]\n input %x2 : f32[40]\n input %x3 : f32[40]\n"
       " const %c : f32[] = [0.5]\n"
       " %y, %m, %v, %r = AdamStep(%x0, %x1, %lr, %s, %x2, %x3, %c) {round_to = \"T\", "
       "weight_decay = 0.1} : f32[40], f32[40], f32[40], T[40] @n",
       false, true},
      {"SgdStep",
       "input %x0 : f32[40]\n input %x1 : T[40]\n const %lr : f32[] = [0.1]\n"
       " const %s : i64[] = [2]\n input %x2 : f32[40]\n"
       " %y, %b, %r = SgdStep(%x0, %x1, %lr, %s, %x2) {momentum = 0.9, round_to = \"T\", "
       "weight_decay = 0.01} : f32[40], f32[40], T[40] @n",
       false},
      {"LionStep",
       "input %x0 : f32[40]\n input %x1 : T[40]\n const %lr : f32[] = [0.01]\n"
       " const %s : i64[] = [3]\n input %x2 : f32[40]\n const %c : f32[] = [0.5]\n"
       " %y, %m, %r = LionStep(%x0, %x1, %lr, %s, %x2, %c) {round_to = \"T\", weight_decay = "
       "0.1} : f32[40], f32[40], T[40] @n",
       false},
      {"LambStep",
       "input %x0 : f32[3000]\n input %x1 : T[3000]\n const %lr : f32[] = [0.01]\n"
       " const %s : i64[] = [3]\n input %x2 : f32[3000]\n input %x3 : f32[3000]\n"
       " const %c : f32[] = [0.5]\n"
       " %y, %m, %v, %r = LambStep(%x0, %x1, %lr, %s, %x2, %x3, %c) {round_to = \"T\", "
       "weight_decay = 0.1} : f32[3000], f32[3000], f32[3000], T[3000] @n",
       false, true},
      {"AdagradStep",
       "input %x0 : f32[40]\n input %x1 : T[40]\n const %lr : f32[] = [0.05]\n"
       " const %s : i64[] = [1]\n input %x2 : f32[40]\n"
       " %y, %sum, %r = AdagradStep(%x0, %x1, %lr, %s, %x2) {initial_accumulator_value = 0.1, "
       "round_to = \"T\"} : f32[40], f32[40], T[40] @n",
       false, true},
      {"ReduceSumSquare",
       "input %x0 : T[4000]\n %y = ReduceSumSquare(%x0) {keepdims = 0, to = \"f32\"} : f32[] @n",
       false},
      {"ReduceSum",
       "input %x0 : T[3,40,5]\n %y = ReduceSum(%x0) {axes = [1], to = \"f32\"} : f32[3,1,5] @n"},
  };
  for (OpCase& c : cases) {
    c.text = test::replaceAll(c.text, "T[", t + "[");
    c.text = test::replaceAll(c.text, "\"T\"", "\"" + t + "\"");
  }
  return cases;
}

// WeightBiasGrad(A [k, m], B [k, n]) in dtype `t`, summing input `bias_input`'s rows.
std::string weightBiasGradText(const std::string& t, int64_t k, int64_t m, int64_t n,
                               int bias_input) {
  auto type = [&](std::initializer_list<int64_t> dims) {
    std::string out = t + "[";
    for (int64_t d : dims) out += (out.back() == '[' ? "" : ",") + std::to_string(d);
    return out + "]";
  };
  return "input %x0 : " + type({k, m}) + "\n input %x1 : " + type({k, n}) +
         "\n %y, %s = WeightBiasGrad(%x0, %x1) {bias_input = " + std::to_string(bias_input) +
         "} : " + type({m, n}) + ", " + type({bias_input == 0 ? m : n}) + " @n";
}

// A linear layer's weight and bias gradients in one step (k rows: the batch's
// tokens), the sum over A's rows and over B's: odd sizes (16-bit rows of 2-byte
// alignment, where cuBLASLt may have no algorithm and the MatMul and ReduceSum
// kernels run) and a GPT's (in 16 bits one cuBLASLt matmul with a bias-gradient
// epilogue). Both outputs are compared.
std::vector<OpCase> weightBiasGradCases(const std::string& t) {
  std::vector<OpCase> cases;
  for (int bias_input : {0, 1}) {
    cases.push_back({"WeightBiasGrad", weightBiasGradText(t, 7, 5, 3, bias_input), false});
    cases.push_back({"WeightBiasGrad", weightBiasGradText(t, 256, 64, 192, bias_input), false});
  }
  return cases;
}

std::vector<OpCase> sixteenBitCases() {
  std::vector<OpCase> out = castCases16();
  for (const std::string dtype : {"f16", "bf16"}) {
    for (const OpCase& c : cases16Source()) out.push_back(as16(c, dtype));
    for (const OpCase& c : normCases16(dtype)) out.push_back(c);
    for (const OpCase& c : reluBatchNormGradCases(dtype)) out.push_back(c);
    for (const OpCase& c : crossEntropyCases16(dtype)) out.push_back(c);
    for (const OpCase& c : optimizerCases16(dtype)) out.push_back(c);
    for (const OpCase& c : weightBiasGradCases(dtype)) out.push_back(c);
  }
  return out;
}

// The normalisations with 16-bit parameters too (not what mixed precision makes):
// the Native16 factories decline them, so they run promoted.
std::vector<OpCase> promotedNormCases16() {
  std::vector<OpCase> out;
  for (const OpCase& c : nnCases())
    if (c.op == "BatchNormalization" || c.op == "LayerNormalization") out.push_back(as16(c, "f16"));
  return out;
}

// Chains the CUDA executor fuses (kernels/cuda/epilogues.h), in dtype `t`:
// BatchNorm -> residual Add -> Relu as one BatchNorm, and in the backward a
// gradient sum then the ReluGrad it feeds as one Add.
std::vector<OpCase> fusionCases(const std::string& t) {
  std::vector<OpCase> cases = {
      {"BatchNormalization", R"(input %x0 : T[4,8,6,6]
        input %x1 : T[4,8,6,6]
        input %s : f32[8]
        input %b : f32[8]
        const %m : f32[8] = [0, 0, 0, 0, 0, 0, 0, 0]
        const %v : f32[8] = [1, 1, 1, 1, 1, 1, 1, 1]
        %n = BatchNormalization(%x0, %s, %b, %m, %v) {training_mode = 1} : T[4,8,6,6] @bn
        %a = Add(%n, %x1) : T[4,8,6,6] @residual
        %y = Relu(%a) : T[4,8,6,6] @n)"},
      {"ReluGrad", R"(input %x0 : T[4,8,6,6]
        input %x1 : T[4,8,6,6]
        %z = Relu(%x0) : T[4,8,6,6] @relu
        %p = Mul(%z, %x1) : T[4,8,6,6] @product
        %y = Add(%p, %z) : T[4,8,6,6] @n)"},
  };
  for (OpCase& c : cases) c.text = test::replaceAll(c.text, "T[", t + "[");
  return cases;
}

std::vector<OpCase> allCases() {
  std::vector<OpCase> all = nnCases();
  for (const auto& part : {tensorCases(), forwardOnlyCases(), reluBatchNormGradCases("f32"),
                           weightBiasGradCases("f32"), sixteenBitCases(), promotedNormCases16(),
                           fusionCases("f32"), fusionCases("f16"), fusionCases("bf16")})
    all.insert(all.end(), part.begin(), part.end());
  return all;
}

// The case's graph with outputs %y (and the case's other outputs), then, with
// gradients, d(Σ y·r)/d x for every float input x.
PlanFile casePlan(const OpCase& c) {
  auto g = parseGraph("graph cuda_case {\n " + c.text + "\n return %y\n}");
  Value* y = g->value("y");
  // Attention's statistics too: its forward and backward may run different kernels
  // (cuDNN's, cuBLAS's), which must agree on L.
  if (c.op == "FusedAttention") g->addOutput(g->value("l"));
  if (c.op == "WeightBiasGrad") g->addOutput(g->value("s"));  // the bias gradient
  if (c.grads) {
    std::mt19937_64 rng(42);
    std::uniform_real_distribution<double> u(-1, 1);
    Tensor r({y->dtype(), y->shape()});
    for (int64_t i = 0; i < r.numel(); ++i) r.setDouble(i, u(rng));
    Value* weighted = g->addNode("Mul", {y, g->addConstant("r", r)})->output(0);
    Value* loss =
        g->addNode("ReduceSum", {weighted}, {{"keepdims", int64_t{0}}}, {"loss"})->output(0);
    std::vector<Value*> wrt;
    for (Value* x : g->feeds())
      if (isFloat(x->dtype())) wrt.push_back(x);
    auto grads = buildGradients(*g, loss, wrt);
    for (Value* x : wrt) g->addOutput(grads.at(x));
  }
  verifyGraph(*g);
  return lowerToPlan(*g, planMemory(*g), {});
}

std::vector<Tensor> randomFeeds(const Executor& exec, uint64_t seed, bool positive) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(positive ? 0.5 : -1.0, positive ? 1.5 : 1.0);
  std::vector<Tensor> feeds;
  for (const std::string& name : exec.feedNames()) {
    Tensor t(exec.feedType(name));
    for (int64_t i = 0; i < t.numel(); ++i)
      t.setDouble(i, isFloat(t.dtype()) ? u(rng) : std::floor(u(rng) * 3));
    feeds.push_back(std::move(t));
  }
  return feeds;
}

// The relative tolerance of a float output. f32: 1e-4. f16/bf16: both backends
// compute in f32 and round each output once, but their f32 results differ in the
// last bits (summation order, library functions), so an element may round to the
// neighbouring 16-bit value: one ulp, at most 2^-10 (f16) or 2^-7 (bf16) of the
// element. 16-bit intermediates of a graph (a forward value its gradient reuses)
// can carry one such ulp on, so two ulps: 2e-3 for f16, 1.6e-2 for bf16.
double tolerance(DType t) {
  return t == DType::F16 ? 2e-3 : t == DType::BF16 ? 1.6e-2 : 1e-4;
}

// Floats within tolerance() of max(|want|, RMS(want)) (+1e-6 for all-zero
// tensors); the rest, and all of an `exact` case, exactly. `precision`: the dtype
// the values were computed in, when that is not the one they are stored in (an f32
// output of 16-bit steps).
void expectClose(const Tensor& got, const Tensor& want, const std::string& what, bool exact = false,
                 std::optional<DType> precision = std::nullopt, double slack = 1.0) {
  ASSERT_EQ(got.type(), want.type()) << what;
  if (!isFloat(want.dtype()) || exact) {
    EXPECT_EQ(got.toDoubles(), want.toDoubles()) << what;
    return;
  }
  std::vector<double> a = got.toDoubles(), b = want.toDoubles();
  double rms = 0.0;
  for (double v : b) rms += v * v;
  rms = std::sqrt(rms / static_cast<double>(std::max<size_t>(b.size(), 1)));
  int bad = 0;
  for (size_t i = 0; i < b.size() && bad < 5; ++i) {
    bool same_nan = std::isnan(a[i]) && std::isnan(b[i]);
    const double tol =
        slack * tolerance(precision.value_or(want.dtype())) * std::max(std::fabs(b[i]), rms) + 1e-6;
    if (!same_nan && !(std::fabs(a[i] - b[i]) <= tol))
      ADD_FAILURE() << what << " element " << i << ": cuda " << a[i] << ", cpu " << b[i]
                    << (++bad, "");
  }
}

// Relative L2 distance ||got - want|| / ||want|| within 1e-4 (parameters after
// training: Adam's normalised updates move near-zero gradient entries by ±lr
// whatever their rounding, so elementwise bounds would judge noise).
void expectCloseL2(const Tensor& got, const Tensor& want, const std::string& what) {
  std::vector<double> a = got.toDoubles(), b = want.toDoubles();
  ASSERT_EQ(a.size(), b.size()) << what;
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < b.size(); ++i) {
    diff += (a[i] - b[i]) * (a[i] - b[i]);
    norm += b[i] * b[i];
  }
  EXPECT_LE(std::sqrt(diff), 1e-4 * std::sqrt(norm) + 1e-7) << what;
}

// Runs `plan` on both backends with the same random feeds and compares every
// output; without a GPU only the CPU half runs (the caller then skips).
void checkPlanOnBothBackends(const PlanFile& plan, const std::string& what, bool positive,
                             int runs = 1, bool exact = false, double slack = 1.0) {
  CpuExecutor cpu(plan, {});
  std::vector<Tensor> feeds = randomFeeds(cpu, 7, positive);
  std::vector<std::string> names = cpu.feedNames();
  for (size_t i = 0; i < feeds.size(); ++i) cpu.setFeed(names[i], feeds[i]);
  std::vector<std::vector<Tensor>> want(static_cast<size_t>(runs));
  for (auto& outputs : want) {
    cpu.run();
    for (size_t i = 0; i < cpu.numOutputs(); ++i) outputs.push_back(cpu.output(i));
  }
  if (!haveGpu()) return;
  CudaExecutor gpu(plan, {});
  for (size_t i = 0; i < feeds.size(); ++i) gpu.setFeed(names[i], feeds[i]);
  for (int r = 0; r < runs; ++r) {
    gpu.run();
    for (size_t i = 0; i < gpu.numOutputs(); ++i)
      expectClose(gpu.output(i), want[static_cast<size_t>(r)][i],
                  what + " run " + std::to_string(r) + " output " + gpu.outputName(i), exact,
                  std::nullopt, slack);
  }
}

TEST(CudaBackend, EveryCpuKernelHasACudaKernel) {
  // Collectives are the communicator's (NCCL on GPUs), not compute kernels.
  const std::set<std::string> collectives = {"AllGather", "AllReduce", "Broadcast",
                                             "ReduceScatter"};
  std::vector<std::string> missing;
  for (const std::string& op : cpu::CpuKernelRegistry::instance().ops())
    if (!collectives.count(op) && !cuda::CudaKernelRegistry::instance().find(op))
      missing.push_back(op);
  EXPECT_TRUE(missing.empty()) << "no CUDA kernel: " << ::testing::PrintToString(missing);
}

TEST(CudaBackend, EveryCudaKernelHasACase) {
  std::set<std::string> covered;
  for (const OpCase& c : allCases()) {
    auto plan = casePlan(c);
    for (const auto& step : plan.plan.ranks(0).steps()) covered.insert(step.op());
  }
  for (const std::string& op : cuda::CudaKernelRegistry::instance().ops())
    EXPECT_TRUE(covered.count(op)) << op << " runs in no case";
}

// The step's context with fake device addresses (never dereferenced).
cpu::KernelContext fakeContext(const PlanFile& plan, const planpb::Step& step) {
  cpu::KernelContext ctx;
  ctx.op = step.op();
  ctx.node_name = step.node();
  for (const auto& a : step.attrs()) ctx.attrs[a.name()] = fromPlanAttr(a);
  void* fake = reinterpret_cast<void*>(uintptr_t{1} << 20);
  for (int idx : step.inputs())
    ctx.inputs.push_back(idx < 0 ? cpu::TensorView{} : cpu::TensorView{fake, plan.tensorType(idx)});
  for (int idx : step.outputs()) ctx.outputs.push_back({fake, plan.tensorType(idx)});
  return ctx;
}

// The context an F32Only kernel of a promoted step sees: 16-bit floats as f32.
cpu::KernelContext promotedContext(cpu::KernelContext ctx) {
  for (auto* list : {&ctx.inputs, &ctx.outputs})
    for (cpu::TensorView& v : *list)
      if (v.present() && (v.dtype() == DType::F16 || v.dtype() == DType::BF16))
        v.type.dtype = DType::F32;
  return ctx;
}

// Builds the step's kernel as the executor does: Native16 factories (and any for
// a step without 16-bit arithmetic) see the step itself; F32Only ones, and a
// Native16 one that returned null, the promoted step. Returns whether it runs
// natively; throws what the factory throws.
bool buildKernel(const cuda::CudaKernelRegistry::Entry& entry, const cpu::KernelContext& ctx) {
  if (entry.precision == cuda::Precision::Native16 || !cpu::needsPromotion(ctx))
    if (entry.factory(ctx, cuda::Device{})) return true;
  EXPECT_TRUE(cpu::needsPromotion(ctx)) << ctx.op << ": null kernel for a step without 16 bits";
  EXPECT_NE(entry.factory(promotedContext(ctx), cuda::Device{}), nullptr) << ctx.op << " promoted";
  return false;
}

// Every step of `plan` gets its CUDA kernel built without a GPU: factories get
// fake device addresses and no library handles, so attributes, shapes and walks
// are all checked; only calls that need a device may fail (the "X failed: ..." of
// a status check).
void expectKernelsBuild(const PlanFile& plan, const std::string& what) {
  for (const auto& step : plan.plan.ranks(0).steps()) {
    cpu::KernelContext ctx = fakeContext(plan, step);
    const cuda::CudaKernelRegistry::Entry* entry =
        cuda::CudaKernelRegistry::instance().find(ctx.op);
    ASSERT_NE(entry, nullptr) << what << ": no CUDA kernel for " << ctx.op;
    try {
      buildKernel(*entry, ctx);
    } catch (const Error& e) {
      EXPECT_TRUE(test::contains(e.what(), " failed: "))
          << what << " step " << ctx.node_name << " (" << ctx.op << "): " << e.what();
    }
  }
}

// 16-bit attention of a GPT's head size runs as cuDNN's fused flash attention, forward
// and backward (the cuBLAS kernels remain for f32 and what cuDNN declines; the
// FusedAttention cases above compare either against the CPU).
TEST(CudaBackend, SixteenBitAttentionRunsOnCudnn) {
  SKIP_WITHOUT_GPU();
  const std::string separate =
      "input %x0 : f32[2,128,4,64]\n input %x1 : f32[2,128,4,64]\n input %x2 : f32[2,128,4,64]\n"
      " %y, %l = FusedAttention(%x0, %x1, %x2) {causal = 1} : f32[2,128,4,64], f32[2,4,128] @n";
  const std::string packed =  // Q, K and V read with a row stride of 3·heads·D
      "input %x0 : f32[2,128,3,4,64]\n"
      " %y, %l = FusedAttention(%x0) {causal = 1} : f32[2,128,4,64], f32[2,4,128] @n";
  const std::string packed_case =  // the packed case above, compared with the CPU
      "input %x0 : f32[1,16,3,2,64]\n"
      " %y, %l = FusedAttention(%x0) {causal = 1} : f32[1,16,2,64], f32[1,2,16] @n";
  for (const char* t : {"f16", "bf16"})
    for (const std::string& text : {separate, packed, packed_case}) {
      PlanFile plan = casePlan(as16({"FusedAttention", text}, t));
      cuda::Device dev;
      ASSERT_EQ(cudnnCreate(&dev.cudnn), CUDNN_STATUS_SUCCESS);
      int built = 0;
      for (const auto& step : plan.plan.ranks(0).steps()) {
        if (step.op() != "FusedAttention" && step.op() != "FusedAttentionGrad") continue;
        std::string why;
        EXPECT_NE(cuda::cudnnAttentionKernel(fakeContext(plan, step), dev,
                                             step.op() == "FusedAttentionGrad", &why),
                  nullptr)
            << t << " " << step.op() << " (" << step.inputs_size()
            << " inputs): cuDNN declined: " << why;
        ++built;
      }
      EXPECT_EQ(built, 2);
      cuda::releaseCudnnAttentionGraphs(dev.cudnn);
      cudnnDestroy(dev.cudnn);
    }
}

// 16-bit WeightBiasGrad of a GPT's linear layer runs as one cuBLASLt matmul whose
// epilogue sums either operand's rows (the WeightBiasGrad cases compare whichever
// path runs with the CPU).
TEST(CudaBackend, SixteenBitWeightBiasGradRunsOnCublasLt) {
  SKIP_WITHOUT_GPU();
  cuda::Device dev;
  ASSERT_EQ(cublasLtCreate(&dev.cublaslt), CUBLAS_STATUS_SUCCESS);
  for (const char* t : {"f16", "bf16"})
    for (int bias_input : {0, 1}) {
      const std::string text = weightBiasGradText(t, 256, 64, 192, bias_input);
      PlanFile plan = casePlan({"WeightBiasGrad", text, false});
      int built = 0;
      for (const auto& step : plan.plan.ranks(0).steps()) {
        if (step.op() != "WeightBiasGrad") continue;
        std::string why;
        EXPECT_NE(cuda::ltWeightBiasGradKernel(fakeContext(plan, step), dev, &why), nullptr)
            << text << ": cuBLASLt declined: " << why;
        ++built;
      }
      EXPECT_EQ(built, 1) << text;
    }
  cublasLtDestroy(dev.cublaslt);
}

TEST(CudaBackend, KernelFactoriesAcceptEveryCasePlan) {
  for (const OpCase& c : allCases()) expectKernelsBuild(casePlan(c), c.op);
}

// The ops with native 16-bit kernels take the 16-bit cases themselves rather than
// falling back to promotion (a 16-bit Conv with bias is promoted by design:
// conv_kernels.cc). A factory that gets as far as a device call (cuDNN's algorithm
// choice, an index table's upload: "... failed: ...") has accepted its dtypes.
TEST(CudaBackend, Native16KernelsRunSixteenBitCasesNatively) {
  std::set<std::string> seen;  // ops met in 16-bit steps
  for (const OpCase& c : sixteenBitCases()) {
    PlanFile plan = casePlan(c);
    for (const auto& step : plan.plan.ranks(0).steps()) {
      cpu::KernelContext ctx = fakeContext(plan, step);
      const auto* entry = cuda::CudaKernelRegistry::instance().find(ctx.op);
      ASSERT_NE(entry, nullptr) << ctx.op;
      if (!cpu::needsPromotion(ctx) || entry->precision != cuda::Precision::Native16) continue;
      seen.insert(ctx.op);
      if (ctx.op == "Conv" && ctx.hasInput(2)) continue;
      try {
        EXPECT_TRUE(buildKernel(*entry, ctx)) << c.text << "\nstep " << ctx.op << " promoted";
      } catch (const Error& e) {
        EXPECT_TRUE(test::contains(e.what(), " failed: ")) << ctx.op << ": " << e.what();
      }
    }
  }
  // The cases reach the 16-bit steps of fp16 ResNet and bf16 GPT training plans.
  for (const char* op : {"Conv", "ConvGradInput", "ConvGradWeight", "MaxPool", "MaxPoolGrad",
                         "GlobalAveragePool", "Gemm", "MatMul", "ReduceSum", "Softmax", "Add",
                         "Mul", "Div", "Relu", "Gelu", "Where", "Equal"})
    EXPECT_TRUE(seen.count(op)) << op << " is in no 16-bit case";
  // The normalisations with 16-bit data and f32 parameters (normCases16) and the
  // loss on 16-bit scores (crossEntropyCases16) too.
  for (const char* op :
       {"BatchNormalization", "BatchNormalizationGrad", "LayerNormalization",
        "LayerNormalizationGrad", "SoftmaxCrossEntropyLoss", "SoftmaxCrossEntropyLossGrad"})
    EXPECT_TRUE(seen.count(op)) << op << " is in no 16-bit case";
  // And a linear layer's fused weight and bias gradients (weightBiasGradCases).
  EXPECT_TRUE(seen.count("WeightBiasGrad")) << "WeightBiasGrad is in no 16-bit case";
}

// Norm steps with 16-bit parameters are left to promotion: their factories decline.
TEST(CudaBackend, NormsWithSixteenBitParametersRunPromoted) {
  for (const OpCase& c : promotedNormCases16()) {
    PlanFile plan = casePlan(c);
    for (const auto& step : plan.plan.ranks(0).steps()) {
      cpu::KernelContext ctx = fakeContext(plan, step);
      if (ctx.op.rfind(c.op, 0) != 0) continue;  // the norm and its gradient
      EXPECT_FALSE(buildKernel(*cuda::CudaKernelRegistry::instance().find(ctx.op), ctx))
          << c.text << "\nstep " << ctx.op << " ran natively";
    }
  }
}

// One test per case, so that a case which faults the device (a sticky CUDA error)
// can be run, and reported, in a process of its own (bench/gpu_check.sh does).
class CudaOp : public ::testing::TestWithParam<OpCase> {};

TEST_P(CudaOp, MatchesTheCpuBackend) {
  const OpCase& c = GetParam();
  SCOPED_TRACE(c.op + ": " + c.text);
  try {
    checkPlanOnBothBackends(casePlan(c), c.op, c.positive, c.op == "Dropout" ? 3 : 1, c.exact,
                            c.slack);
  } catch (const Error& e) {
    ADD_FAILURE() << c.op << ": " << e.what();
  }
  SKIP_WITHOUT_GPU();
}

INSTANTIATE_TEST_SUITE_P(Cuda, CudaOp, ::testing::ValuesIn(allCases()),
                         [](const ::testing::TestParamInfo<OpCase>& info) {
                           return info.param.op + "_" + std::to_string(info.index);
                         });

// BatchNormalization then LayerNormalization (over the last two dims) on 16-bit
// `t` data with f32 parameters; with `casts`, as Cast -> f32 op -> Cast instead,
// which is what running the 16-bit steps promoted means.
std::string normChain(const std::string& t, bool casts) {
  const std::string inputs = R"(input %x0 : T[4,3,5,5]
    input %s : f32[3]
    input %b : f32[3]
    input %g : f32[5,5]
    input %c : f32[5,5]
    const %m : f32[3] = [0.1, -0.2, 0.3]
    const %v : f32[3] = [0.5, 2.0, 1.0])";
  const std::string direct = R"(
    %n, %rm, %rv = BatchNormalization(%x0, %s, %b, %m, %v) {training_mode = 1} : T[4,3,5,5], f32[3], f32[3] @bn
    %y = LayerNormalization(%n, %g, %c) {axis = 2} : T[4,3,5,5] @ln)";
  const std::string promoted = R"(
    %x32 = Cast(%x0) {to = "f32"} : f32[4,3,5,5] @x32
    %n32, %rm, %rv = BatchNormalization(%x32, %s, %b, %m, %v) {training_mode = 1} : f32[4,3,5,5], f32[3], f32[3] @bn
    %n = Cast(%n32) {to = "T"} : T[4,3,5,5] @n16
    %w = Cast(%n) {to = "f32"} : f32[4,3,5,5] @w
    %y32 = LayerNormalization(%w, %g, %c) {axis = 2} : f32[4,3,5,5] @ln
    %y = Cast(%y32) {to = "T"} : T[4,3,5,5] @y16)";
  std::string text = test::replaceAll(inputs + (casts ? promoted : direct), "T[", t + "[");
  return test::replaceAll(text, "\"T\"", "\"" + t + "\"");
}

using test::outputsOf;

void expectSameBits(const std::vector<Tensor>& got, const std::vector<Tensor>& want,
                    const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_EQ(got[i].type(), want[i].type()) << what << " output " << i;
    EXPECT_EQ(std::memcmp(got[i].raw(), want[i].raw(), want[i].bytes()), 0)
        << what << " output " << i;
  }
}

// The native 16-bit normalisation kernels compute what their promoted f32 kernels
// do, to the bit: forward and every gradient equal Cast -> f32 op -> Cast's on the
// GPU (checked on the CPU first, where promotion makes them equal by construction).
TEST(CudaBackend, SixteenBitNormsEqualCastF32NormCast) {
  for (const std::string t : {"f16", "bf16"}) {
    PlanFile direct = casePlan({"norms", normChain(t, false)});
    PlanFile casts = casePlan({"norms", normChain(t, true)});
    expectSameBits(outputsOf<CpuExecutor>(direct), outputsOf<CpuExecutor>(casts), t + " cpu");
    if (!haveGpu()) continue;
    expectSameBits(outputsOf<CudaExecutor>(direct), outputsOf<CudaExecutor>(casts), t + " cuda");
  }
  SKIP_WITHOUT_GPU();
}

TEST(CudaBackend, MissingKernelNamesTheNode) {
  auto g =
      parseGraph("graph g {\n input %x : f32[2]\n %y = Relu(%x) : f32[2] @the_relu\n return %y\n}");
  PlanFile plan = lowerToPlan(*g, planMemory(*g), {});
  plan.plan.mutable_ranks(0)->mutable_steps(0)->set_op("NoSuchOp");
  SKIP_WITHOUT_GPU();
  try {
    CudaExecutor exec(plan, {});
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_TRUE(test::contains(e.what(), "node 'the_relu' (NoSuchOp): no CUDA kernel")) << e.what();
  }
}

// ---- whole models ----

PlanFile modelPlan(const onnx::ModelProto& model, const std::string& name, int64_t batch,
                   const std::string& config_json = "", bool training = false) {
  CompileOptions o;
  o.model_path = test::tempPath(name + ".onnx");
  saveModel(model, o.model_path);
  o.micro_batch = batch;
  if (!config_json.empty()) {
    o.config_path = test::tempPath(name + ".json");
    test::writeFile(*o.config_path, config_json);
  }
  if (training) o.loss = "cross_entropy";
  return buildPlan(compile(o), o.model_path);
}

GptOptions tinyGpt() {
  GptOptions g;
  g.layers = 2;
  g.d_model = 64;
  g.heads = 4;
  g.vocab = 100;
  g.seq = 16;
  return g;
}

ResNetOptions smallResNet() {
  ResNetOptions r;
  r.depth = 18;
  r.image = 32;
  r.classes = 10;
  return r;
}

TEST(CudaBackend, MlpForwardMatchesCpu) {
  checkPlanOnBothBackends(modelPlan(buildMlp({}), "cuda_mlp", 8), "mlp", false);
  SKIP_WITHOUT_GPU();
}

TEST(CudaBackend, ResNet18ForwardMatchesCpu) {
  checkPlanOnBothBackends(modelPlan(buildResNet(smallResNet()), "cuda_r18", 4), "resnet18", false);
  SKIP_WITHOUT_GPU();
}

TEST(CudaBackend, GptForwardMatchesCpu) {
  checkPlanOnBothBackends(modelPlan(buildGpt(tinyGpt()), "cuda_gpt", 2), "gpt", false);
  SKIP_WITHOUT_GPU();
}

// `steps` optimizer steps on both backends from the same data; every step's loss
// within 1e-4 relative, then every parameter within 1e-4 (relative L2).
void checkTraining(const PlanFile& plan, const std::string& what, int64_t steps, int64_t samples) {
  TrainOptions options;
  options.steps = steps;
  {
    CpuExecutor probe(plan, {});
    std::vector<Tensor> one = randomFeeds(probe, 11, false);
    std::vector<std::string> names = probe.feedNames();
    std::mt19937_64 rng(3);
    for (size_t i = 0; i < names.size(); ++i) {
      if (names[i].rfind("ds.", 0) == 0) continue;  // lr and step: the trainer's
      Shape shape = one[i].shape();
      shape[0] *= samples / shape[0];
      Tensor data(TensorType{one[i].dtype(), shape});
      std::uniform_real_distribution<double> u(-1, 1);
      for (int64_t k = 0; k < data.numel(); ++k)
        data.setDouble(k, isFloat(data.dtype()) ? u(rng) : static_cast<double>(rng() % 10));
      options.datasets[names[i]] = data;
    }
  }
  CpuExecutor cpu(plan, {});
  std::vector<StepMetrics> want = train(cpu, plan, options);
  SKIP_WITHOUT_GPU();
  CudaExecutor gpu(plan, {});
  std::vector<StepMetrics> got = train(gpu, plan, options);
  ASSERT_EQ(got.size(), want.size());
  for (size_t s = 0; s < want.size(); ++s) {
    EXPECT_NEAR(got[s].loss, want[s].loss, 1e-4 * std::fabs(want[s].loss)) << what << " step " << s;
    EXPECT_NEAR(got[s].grad_norm, want[s].grad_norm, 1e-4 * std::fabs(want[s].grad_norm))
        << what << " step " << s;
  }
  for (int i = 0; i < plan.plan.tensors_size(); ++i)
    if (plan.plan.tensors(i).role() == static_cast<int>(Role::Parameter))
      expectCloseL2(gpu.readTensor(i), cpu.readTensor(i), what + " " + plan.plan.tensors(i).name());
}

TEST(CudaBackend, MlpTrainingMatchesCpu) {
  PlanFile plan = modelPlan(buildMlp({}), "cuda_mlp_train", 8,
                            R"({"train_micro_batch_size_per_gpu": 8,
                                "optimizer": {"type": "AdamW",
                                              "params": {"lr": 0.001, "weight_decay": 0.01}}})",
                            true);
  checkTraining(plan, "mlp", 5, 64);
}

TEST(CudaBackend, ResNet18TrainingMatchesCpu) {
  PlanFile plan = modelPlan(buildResNet(smallResNet()), "cuda_r18_train", 4,
                            R"({"train_micro_batch_size_per_gpu": 4, "gradient_clipping": 1.0,
                                "optimizer": {"type": "SGD",
                                              "params": {"lr": 0.01, "momentum": 0.9}}})",
                            true);
  checkTraining(plan, "resnet18", 3, 16);
}

// SGD, not Adam: the key third of each attn.c_attn.bias has an exactly zero
// gradient (it adds the same q·b_k to a whole softmax row), so Adam would scale
// each backend's rounding noise up to ±lr steps there and compare noise
// (tests/torch_golden.py measures the same effect against PyTorch in float64).
TEST(CudaBackend, GptTrainingMatchesCpu) {
  PlanFile plan = modelPlan(buildGpt(tinyGpt()), "cuda_gpt_train", 2,
                            R"({"train_micro_batch_size_per_gpu": 2,
                                "optimizer": {"type": "SGD",
                                              "params": {"lr": 0.01, "momentum": 0.9}}})",
                            true);
  checkTraining(plan, "gpt", 3, 8);
}

// Epilogue fusion on the CUDA backend, decided without a GPU on an fp16 ResNet-18
// training plan with contexts at consistent fake addresses (the decision compares
// addresses, never reads them): every Relu right after a BatchNorm or a residual
// Add on the same stream is absorbed (ResNet-18 has 17 such), every residual Add
// right after the BatchNorm whose output it reads is absorbed into that BatchNorm
// with its Relu (bn -> add -> relu in one pass), every backward ReluGrad right after
// the gradient sum that is its dY into that Add, and nothing else.
// Rank 0's steps of `plan` as the CUDA executor plans them, with contexts at
// consistent fake addresses (the load-time decisions compare addresses, never read
// them).
struct FakeSteps {
  std::vector<cpu::KernelContext> contexts;
  std::vector<cpu::PlannedStep> planned;
};

void fakeSteps(const PlanFile& plan, FakeSteps& out) {
  const planpb::RankPlan& rank = plan.plan.ranks(0);
  const auto base = [](planpb::Storage s) { return (uintptr_t{1} << 40) * (1 + uintptr_t(s)); };
  std::vector<cpu::KernelContext>& contexts = out.contexts;
  std::vector<cpu::PlannedStep>& planned = out.planned;
  contexts.assign(static_cast<size_t>(rank.steps_size()), {});
  planned.assign(contexts.size(), {});
  for (size_t s = 0; s < contexts.size(); ++s) {
    const planpb::Step& step = rank.steps(static_cast<int>(s));
    cpu::KernelContext& ctx = contexts[s];
    ctx.op = step.op();
    ctx.node_name = step.node();
    for (const auto& a : step.attrs()) ctx.attrs[a.name()] = fromPlanAttr(a);
    auto view = [&](int t) {
      if (t < 0) return cpu::TensorView{};
      const planpb::TensorInfo& info = plan.plan.tensors(t);
      void* at =
          reinterpret_cast<void*>(base(info.storage()) + static_cast<uintptr_t>(info.offset()));
      return cpu::TensorView{at, plan.tensorType(t)};
    };
    for (int t : step.inputs()) ctx.inputs.push_back(view(t));
    for (int t : step.outputs()) ctx.outputs.push_back(view(t));
    const cuda::CudaKernelRegistry::Entry* entry =
        cuda::CudaKernelRegistry::instance().find(ctx.op);
    ASSERT_NE(entry, nullptr) << ctx.op;
    planned[s] = {&ctx,
                  {step.inputs().begin(), step.inputs().end()},
                  {step.outputs().begin(), step.outputs().end()},
                  step.phase()};
    planned[s].lane = step.stream();
    planned[s].waits = step.wait_events_size() > 0;
    planned[s].promoted = cpu::needsPromotion(ctx) && entry->precision == cuda::Precision::F32Only;
  }
}

PlanFile fp16ResNetTrainingPlan(const std::string& name, int64_t image = 32) {
  ResNetOptions resnet = smallResNet();
  resnet.image = image;
  return modelPlan(buildResNet(resnet), name, 4,
                   R"({"train_micro_batch_size_per_gpu": 4, "fp16": {"enabled": true},
                       "optimizer": {"type": "SGD", "params": {"lr": 0.01}}})",
                   true);
}

TEST(CudaBackend, ResNetEpiloguesAreFused) {
  PlanFile plan = fp16ResNetTrainingPlan("cuda_fuse_r18");
  const planpb::RankPlan& rank = plan.plan.ranks(0);
  FakeSteps fake;
  fakeSteps(plan, fake);
  std::vector<cpu::KernelContext>& contexts = fake.contexts;
  std::vector<cpu::PlannedStep>& planned = fake.planned;
  // The residual Adds the BatchNorm before them can absorb, found independently of
  // the fusion: forward Adds right after a BatchNorm whose output is one operand.
  size_t bn_adds = 0;
  for (size_t s = 1; s < planned.size(); ++s) {
    const planpb::Step& step = rank.steps(static_cast<int>(s));
    const planpb::Step& prev = rank.steps(static_cast<int>(s - 1));
    if (step.op() == "Add" && prev.op() == "BatchNormalization" && step.phase() == prev.phase() &&
        (step.inputs(0) == prev.outputs(0) || step.inputs(1) == prev.outputs(0)))
      ++bn_adds;
  }
  EXPECT_GT(bn_adds, 0u);
  // The backward's gradient sums at a block's input right before the ReluGrad of the
  // Relu that produced that input, the sum being its dY.
  size_t sum_relu_grads = 0;
  for (size_t s = 1; s < planned.size(); ++s) {
    const planpb::Step& step = rank.steps(static_cast<int>(s));
    const planpb::Step& prev = rank.steps(static_cast<int>(s - 1));
    if (step.op() == "ReluGrad" && prev.op() == "Add" && step.phase() == prev.phase() &&
        step.inputs(0) == prev.outputs(0))
      ++sum_relu_grads;
  }
  EXPECT_GT(sum_relu_grads, 0u);
  const size_t fused = cuda::fuseEpilogues(plan.plan, planned);
  EXPECT_EQ(fused, 17u + bn_adds + sum_relu_grads);
  size_t relus = 0;
  for (size_t s = 0; s < planned.size(); ++s) {
    if (!planned[s].absorbed) continue;
    ASSERT_GT(s, 0u);
    size_t root = s - 1;  // the step whose epilogue it joined
    while (root > 0 && planned[root].absorbed) --root;
    const cpu::KernelContext& fused_into = contexts[root];
    if (contexts[s].op == "Add") {
      EXPECT_EQ(fused_into.op, "BatchNormalization") << contexts[s].node_name;
      ASSERT_EQ(fused_into.epilogue.size(), 2u) << contexts[s].node_name;
      EXPECT_EQ(fused_into.epilogue[0].op, "Add");
      EXPECT_EQ(fused_into.epilogue[1].op, "Relu");
      continue;
    }
    if (contexts[s].op == "ReluGrad") {
      EXPECT_EQ(fused_into.op, "Add") << contexts[s].node_name;
      ASSERT_EQ(fused_into.epilogue.size(), 1u) << contexts[s].node_name;
      EXPECT_EQ(fused_into.epilogue[0].slot, 0u);  // the sum is ReluGrad's dY
      EXPECT_EQ(fused_into.epilogue[0].operand.data, contexts[s].inputs[1].data);
      continue;
    }
    EXPECT_EQ(contexts[s].op, "Relu") << contexts[s].node_name;
    ++relus;
    EXPECT_TRUE(fused_into.op == "BatchNormalization" || fused_into.op == "Add")
        << contexts[s].node_name;
    EXPECT_EQ(fused_into.epilogue.back().op, "Relu");
    EXPECT_EQ(fused_into.outputs[0].data, contexts[s].outputs[0].data);
  }
  EXPECT_EQ(relus, 17u);
  // The fused kernels build (ctx.epilogue set): BatchNorm takes its Add and Relu, Add
  // its Relu or ReluGrad.
  for (size_t s = 0; s < planned.size(); ++s) {
    if (contexts[s].epilogue.empty()) continue;
    const auto* entry = cuda::CudaKernelRegistry::instance().find(contexts[s].op);
    EXPECT_NE(entry->factory(contexts[s], cuda::Device{}), nullptr) << contexts[s].node_name;
  }
}

// A bf16 GPT training plan's linear layers: every MatMul right before the Add of its
// bias (a vector along the product's last dim) takes it as a cuBLASLt epilogue,
// decided without a GPU; products of two activations (attention) take none.
TEST(CudaBackend, LinearLayersTakeTheirBiasAsAnEpilogue) {
  PlanFile plan = modelPlan(buildGpt(tinyGpt()), "cuda_bias_gpt", 2,
                            R"({"train_micro_batch_size_per_gpu": 2, "bf16": {"enabled": true},
                                "optimizer": {"type": "AdamW", "params": {"lr": 0.001}}})",
                            true);
  const planpb::RankPlan& rank = plan.plan.ranks(0);
  FakeSteps fake;
  fakeSteps(plan, fake);
  size_t linear = 0;  // found independently: a 2-D second operand, a bias right after
  for (size_t s = 0; s + 1 < fake.contexts.size(); ++s) {
    const cpu::KernelContext& mm = fake.contexts[s];
    const cpu::KernelContext& add = fake.contexts[s + 1];
    const planpb::Step& next = rank.steps(static_cast<int>(s + 1));
    if (mm.op != "MatMul" || add.op != "Add" || mm.inputs[1].rank() != 2 ||
        (mm.attrs.count("transA") && mm.i("transA") != 0))
      continue;
    const int product = rank.steps(static_cast<int>(s)).outputs(0);
    const int other = next.inputs(0) == product ? 1 : next.inputs(1) == product ? 0 : -1;
    if (other < 0) continue;
    const cpu::TensorView& bias = add.inputs[static_cast<size_t>(other)];
    if (bias.numel() == bias.shape().back() && bias.shape().back() == mm.outputs[0].shape().back())
      ++linear;
  }
  EXPECT_GE(linear, 8u);  // 2 layers x (qkv, projection, fc, fc projection)
  cuda::fuseEpilogues(plan.plan, fake.planned);
  size_t fused = 0;
  for (const cpu::KernelContext& ctx : fake.contexts) {
    if (ctx.op != "MatMul" || ctx.epilogue.empty()) continue;
    ++fused;
    ASSERT_EQ(ctx.epilogue.size(), 1u);
    EXPECT_EQ(ctx.epilogue[0].op, "Add");
    EXPECT_EQ(ctx.inputs[1].rank(), 2);
  }
  EXPECT_EQ(fused, linear);
}

// The CUDA backend's channels-last choice (kernels/cuda/layout.h), made without a
// GPU on an fp16 ResNet-18 training plan: every activation between the first
// convolution's input and the pooled features is NHWC, forward and backward, so
// BatchNorm, max pooling, their gradients and every convolution's data operands
// are, except the image the first convolution reads (converted in its kernel);
// filters, and anything f32, fed or output, are not; and the kernels that take
// NHWC operands without cuDNN build for these contexts.
TEST(CudaBackend, SixteenBitResNetActivationsGoChannelsLast) {
  PlanFile plan = fp16ResNetTrainingPlan("cuda_nhwc_r18", 64);  // layer4 at 2x2
  FakeSteps fake;
  fakeSteps(plan, fake);
  EXPECT_GT(cuda::chooseChannelsLast(plan.plan, fake.planned), 0u);
  std::set<int> outside(plan.plan.feeds().begin(), plan.plan.feeds().end());
  outside.insert(plan.plan.outputs().begin(), plan.plan.outputs().end());
  std::map<std::string, int> nhwc_steps;
  for (size_t s = 0; s < fake.contexts.size(); ++s) {
    const cpu::KernelContext& ctx = fake.contexts[s];
    SCOPED_TRACE(ctx.node_name);
    const cpu::PlannedStep& step = fake.planned[s];
    for (size_t i = 0; i < ctx.inputs.size(); ++i) {
      const cpu::TensorView& v = ctx.inputs[i];
      if (!v.channels_last) continue;
      EXPECT_TRUE(v.dtype() == DType::F16 && v.rank() == 4);
      EXPECT_EQ(outside.count(step.inputs[i]), 0u);
    }
    for (size_t i = 0; i < ctx.outputs.size(); ++i) {
      const cpu::TensorView& v = ctx.outputs[i];
      if (v.channels_last) {
        EXPECT_EQ(outside.count(step.outputs[i]), 0u);
      }
    }
    const bool first_conv = ctx.node_name.rfind("conv1", 0) == 0;
    // Steps between activations only: every 16-bit 4-D spatial operand is NHWC.
    static const std::set<std::string> activations = {
        "BatchNormalization", "BatchNormalizationGrad", "Relu",  "ReluGrad", "Add", "MaxPool",
        "MaxPoolGrad",        "GlobalAveragePool",      "Expand"};
    if (activations.count(ctx.op))
      for (const auto* views : {&ctx.inputs, &ctx.outputs})
        for (const cpu::TensorView& v : *views)
          if (cpu::hasSpatialLayout(v) && v.dtype() == DType::F16) {
            EXPECT_TRUE(v.channels_last);
          }
    // Convolutions: data operands NHWC where they have a spatial layout, but the
    // image; filters plain.
    const auto spatial = [](const cpu::TensorView& v) { return cpu::hasSpatialLayout(v); };
    if (ctx.op == "Conv") {
      EXPECT_EQ(ctx.inputs[0].channels_last, spatial(ctx.inputs[0]) && !first_conv);
      EXPECT_EQ(ctx.outputs[0].channels_last, spatial(ctx.outputs[0]));
      EXPECT_FALSE(ctx.inputs[1].channels_last);
    } else if (ctx.op == "ConvGradInput") {
      EXPECT_EQ(ctx.inputs[0].channels_last, spatial(ctx.inputs[0]));
      EXPECT_EQ(ctx.outputs[0].channels_last, spatial(ctx.outputs[0]));
      EXPECT_FALSE(ctx.inputs[1].channels_last);
    } else if (ctx.op == "ConvGradWeight") {
      EXPECT_EQ(ctx.inputs[0].channels_last, spatial(ctx.inputs[0]));
      EXPECT_EQ(ctx.inputs[1].channels_last, spatial(ctx.inputs[1]) && !first_conv);
      EXPECT_FALSE(ctx.outputs[0].channels_last);
    }
    bool any = false;
    for (const auto* views : {&ctx.inputs, &ctx.outputs})
      for (const cpu::TensorView& v : *views) any |= v.channels_last;
    if (!any) continue;
    ++nhwc_steps[ctx.op];
    if (ctx.op.rfind("Conv", 0) == 0) continue;  // cuDNN's need a device
    const auto* entry = cuda::CudaKernelRegistry::instance().find(ctx.op);
    EXPECT_NE(entry->factory(ctx, cuda::Device{}), nullptr);
  }
  for (const char* op :
       {"Conv", "ConvGradInput", "ConvGradWeight", "BatchNormalization", "BatchNormalizationGrad",
        "Add", "Relu", "MaxPool", "MaxPoolGrad", "GlobalAveragePool", "Expand"})
    EXPECT_GT(nhwc_steps[op], 0) << op;
}

// The fusion cases (fusionCases) fuse as they are meant to on the CUDA backend, so
// the per-op comparison above runs the fused kernels (decided without a GPU).
TEST(CudaBackend, FusionCasesFuse) {
  for (const std::string t : {"f32", "f16", "bf16"})
    for (const OpCase& c : fusionCases(t)) {
      SCOPED_TRACE(c.op + " in " + t);
      PlanFile plan = casePlan(c);
      FakeSteps fake;
      fakeSteps(plan, fake);
      cuda::fuseEpilogues(plan.plan, fake.planned);
      bool found = false;
      for (const cpu::KernelContext& ctx : fake.contexts) {
        std::string chain = ctx.op;
        for (const cpu::Epilogue& e : ctx.epilogue) chain += "+" + e.op;
        found |= chain == (c.op == "ReluGrad" ? "Add+ReluGrad" : "BatchNormalization+Add+Relu");
      }
      EXPECT_TRUE(found);
    }
}

// Small 16-bit chains, each putting one family of channels-last kernels between
// NHWC tensors (the image cast in, pooled features out, so the executor can choose
// NHWC in between), trained one step: a first convolution converting its plain
// input, 3x3 convolutions, BatchNorm and its gradient in column mode, the residual
// epilogue, max pooling and GlobalAveragePool with their gradients. T: the dtype.
std::vector<OpCase> channelsLastChains(const std::string& t) {
  const std::string params = R"(input %x0 : f32[2,8,8,8]
    input %w1 : f32[16,8,3,3]
    input %w2 : f32[16,16,3,3]
    input %s : f32[16]
    input %b : f32[16]
    const %m : f32[16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    const %v : f32[16] = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    %h = Cast(%x0) {to = "T"} : T[2,8,8,8] @in16
    %k1 = Cast(%w1) {to = "T"} : T[16,8,3,3] @w1_16
    %k2 = Cast(%w2) {to = "T"} : T[16,16,3,3] @w2_16
    %c1 = Conv(%h, %k1) {pads = [1, 1, 1, 1]} : T[2,16,8,8] @conv1
    %n1 = BatchNormalization(%c1, %s, %b, %m, %v) {training_mode = 1} : T[2,16,8,8] @bn1
    %r1 = Relu(%n1) : T[2,16,8,8] @relu1)";
  std::vector<OpCase> chains = {
      {"Conv", params + R"(
    %c2 = Conv(%r1, %k2) {pads = [1, 1, 1, 1]} : T[2,16,8,8] @conv2
    %n2 = BatchNormalization(%c2, %s, %b, %m, %v) {training_mode = 1} : T[2,16,8,8] @bn2
    %a = Add(%n2, %r1) : T[2,16,8,8] @residual
    %r2 = Relu(%a) : T[2,16,8,8] @relu2
    %p = GlobalAveragePool(%r2) : T[2,16,1,1] @pool
    %y = Cast(%p) {to = "f32"} : f32[2,16,1,1] @n)"},
      {"MaxPool", params + R"(
    %q = MaxPool(%r1) {kernel_shape = [3, 3], pads = [1, 1, 1, 1], strides = [2, 2]} : T[2,16,4,4] @maxpool
    %c2 = Conv(%q, %k2) {pads = [1, 1, 1, 1]} : T[2,16,4,4] @conv2
    %p = GlobalAveragePool(%c2) : T[2,16,1,1] @pool
    %y = Cast(%p) {to = "f32"} : f32[2,16,1,1] @n)"},
  };
  for (OpCase& c : chains) {
    c.text = test::replaceAll(test::replaceAll(c.text, "T[", t + "["), "\"T\"", "\"" + t + "\"");
  }
  return chains;
}

// Each chain's tensors between the cast image and the pooled features go NHWC
// (decided without a GPU); on a GPU, the chain's outputs and gradients with
// channels-last match the CPU backend within 16-bit precision, as the plain
// layout's do.
TEST(CudaBackend, ChannelsLastChainsMatchTheCpu) {
  for (const std::string t : {"f16", "bf16"})
    for (const OpCase& c : channelsLastChains(t)) {
      SCOPED_TRACE(c.op + " chain in " + t);
      PlanFile plan = casePlan(c);
      FakeSteps fake;
      fakeSteps(plan, fake);
      EXPECT_GT(cuda::chooseChannelsLast(plan.plan, fake.planned), 0u);
      for (const cpu::KernelContext& ctx : fake.contexts) {
        const bool activation_op = ctx.op == "BatchNormalization" ||
                                   ctx.op == "BatchNormalizationGrad" || ctx.op == "MaxPool" ||
                                   ctx.op == "MaxPoolGrad" || ctx.op == "GlobalAveragePool";
        if (activation_op) {
          EXPECT_TRUE(ctx.inputs[0].channels_last) << ctx.node_name;
        }
        if (ctx.op == "Conv") {
          EXPECT_TRUE(ctx.outputs[0].channels_last) << ctx.node_name;
        }
      }
      if (!haveGpu()) continue;
      CpuExecutor cpu(plan, {});
      std::vector<Tensor> feeds = randomFeeds(cpu, 11, false);
      ExecutorOptions nhwc;
      nhwc.cuda_channels_last = true;
      CudaExecutor gpu(plan, nhwc);
      EXPECT_GT(gpu.channelsLastTensors(), 0u);
      std::vector<std::string> names = cpu.feedNames();
      for (size_t i = 0; i < names.size(); ++i) {
        cpu.setFeed(names[i], feeds[i]);
        gpu.setFeed(names[i], feeds[i]);
      }
      cpu.run();
      gpu.run();
      ASSERT_EQ(gpu.numOutputs(), cpu.numOutputs());
      // The chains' outputs are f32, cast from 16-bit results.
      const DType computed = t == "f16" ? DType::F16 : DType::BF16;
      for (size_t o = 0; o < cpu.numOutputs(); ++o)
        expectClose(gpu.output(o), cpu.output(o), "output " + std::to_string(o), false, computed);
    }
  SKIP_WITHOUT_GPU();
}

// The kernels of whole training plans build (without a GPU too).
TEST(CudaBackend, KernelFactoriesAcceptModelTrainingPlans) {
  const std::string adam = R"({"train_micro_batch_size_per_gpu": 2,
                               "optimizer": {"type": "Adam", "params": {"lr": 0.001}}})";
  expectKernelsBuild(modelPlan(buildMlp({}), "cuda_kf_mlp", 2, adam, true), "mlp");
  expectKernelsBuild(modelPlan(buildResNet(smallResNet()), "cuda_kf_r18", 2, adam, true),
                     "resnet18");
  expectKernelsBuild(modelPlan(buildGpt(tinyGpt()), "cuda_kf_gpt", 2, adam, true), "gpt");
}

// Mixed-precision training plans (fp16 with loss scaling and its overflow check,
// bf16): every step builds, natively or promoted.
TEST(CudaBackend, KernelFactoriesAcceptMixedPrecisionTrainingPlans) {
  const std::string fp16 = R"({"train_micro_batch_size_per_gpu": 2, "fp16": {"enabled": true},
                               "optimizer": {"type": "SGD",
                                             "params": {"lr": 0.01, "momentum": 0.9}}})";
  const std::string bf16 = R"({"train_micro_batch_size_per_gpu": 2, "bf16": {"enabled": true},
                               "optimizer": {"type": "AdamW", "params": {"lr": 0.001}}})";
  expectKernelsBuild(modelPlan(buildMlp({}), "cuda_kf_mlp16", 2, fp16, true), "mlp fp16");
  expectKernelsBuild(modelPlan(buildResNet(smallResNet()), "cuda_kf_r18_16", 2, fp16, true),
                     "resnet18 fp16");
  expectKernelsBuild(modelPlan(buildGpt(tinyGpt()), "cuda_kf_gpt16", 2, bf16, true), "gpt bf16");
}

}  // namespace
}  // namespace ds

#else
TEST(CudaBackend, MatchesTheCpuBackend) {
  GTEST_SKIP() << "built without CUDA (DS_ENABLE_CUDA=OFF or no nvcc)";
}
#endif
