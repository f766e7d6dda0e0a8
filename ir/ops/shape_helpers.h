// Shape-rule building blocks shared by the op families and by the constant
// folder: dtype/rank checks, axis lists, and the ONNX index arithmetic of
// Reshape, Slice, Split, Shape and Range, so inference and evaluation agree.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "ir/op_registry.h"

namespace ds {

// Fails unless input i has a floating-point dtype.
void requireFloat(const InferContext& ctx, size_t i);
// Fails when input i is Bool (arithmetic needs numbers).
void requireNumeric(const InferContext& ctx, size_t i);
// Fails unless inputs a and b have the same dtype.
void requireSameDType(const InferContext& ctx, size_t a, size_t b);
// A normalisation's parameter `param` has the dtype of its data `x`, or is f32 for
// 16-bit data (mixed precision keeps the parameters in f32: passes/mixed_precision.h).
void requireNormParamDType(const InferContext& ctx, size_t x, size_t param);
// Fails unless input i is an i32 or i64 tensor.
void requireIndexType(const InferContext& ctx, size_t i);
inline constexpr int64_t kAnyRank = std::numeric_limits<int64_t>::max();

// Fails unless input i's rank lies in [min_rank, max_rank].
void requireRank(const InferContext& ctx, size_t i, int64_t min_rank, int64_t max_rank);
// Fails unless `value` is one of `allowed` (for string attributes).
void requireOneOf(const InferContext& ctx, const std::string& attr, const std::string& value,
                  const std::vector<std::string>& allowed);

// Normalises axes against `rank` (negative ones count from the end); fails on
// out-of-range or repeated axes. The result keeps the given order.
std::vector<int64_t> normalizeAxes(const InferContext& ctx, const std::vector<int64_t>& axes,
                                   int64_t rank);

// Transpose's permutation: empty means reversed; fails unless a permutation of [0, rank).
std::vector<int64_t> transposePerm(const InferContext& ctx, const std::vector<int64_t>& perm,
                                   int64_t rank);

// Reshape's target with ONNX semantics (0 copies the input dim unless allowzero, one -1 is
// inferred); fails when the element counts differ.
Shape reshapeTarget(const InferContext& ctx, const Shape& in, const std::vector<int64_t>& target,
                    bool allowzero);

// One axis of a resolved Slice: first index, step and number of elements taken.
struct SliceAxis {
  int64_t start = 0;
  int64_t step = 1;
  int64_t count = 0;
};
// Resolves Slice attributes against `shape` with ONNX clamping; one entry per dim
// (untouched dims take everything).
std::vector<SliceAxis> resolveSlice(const InferContext& ctx, const Shape& shape,
                                    const std::vector<int64_t>& starts,
                                    const std::vector<int64_t>& ends,
                                    const std::vector<int64_t>& axes,
                                    const std::vector<int64_t>& steps);

// Split's part sizes along a dim of size `dim` into `parts` outputs.
std::vector<int64_t> splitSizes(const InferContext& ctx, int64_t dim,
                                const std::vector<int64_t>& split, size_t parts);

// Shape op's [start, end) range of dims with opset-15 clamping (end >= start).
std::pair<int64_t, int64_t> shapeOpRange(int64_t start, int64_t end, int64_t rank);

// Number of elements of Range(start, limit, delta); exact for integer dtypes.
int64_t rangeLength(const InferContext& ctx, const Tensor& start, const Tensor& limit,
                    const Tensor& delta);

// Row-major strides of `shape`.
std::vector<int64_t> stridesOf(const Shape& shape);
// For each element of `out`, the linear index of the element of a tensor of shape `in`
// that broadcasts to it (numpy rules; `in` must broadcast to `out`).
std::vector<int64_t> broadcastIndices(const Shape& in, const Shape& out);

// FusedAttention's sizes (ir/ops/attention.cc) from its Q, K, V operand shapes:
// three, Q [B, Tq, H, D], K [B, Tk, H, D] and V [B, Tk, H, Dv], or one, the packed
// QKV [B, T, 3, H, D] (pack-attention's form: the projection's output as it lies).
// The scale is resolved (0 means 1/sqrt(D)). Element (b, t, h, d) of Q is at
// q_offset + (b·Tq + t)·q_row + h·D + d, of K and V likewise; Y [B, Tq, H, Dv] is
// never packed, its element at ((b·Tq + t)·H + h)·Dv + d.
struct AttentionDims {
  int64_t batch = 0, q_len = 0, kv_len = 0, heads = 0, head = 0, value_head = 0;
  double scale = 1.0;
  bool causal = false;
  bool packed = false;
  // Elements between consecutive tokens of Q, K and V, and where each starts in its
  // tensor (all in the one tensor when packed).
  int64_t q_row = 0, k_row = 0, v_row = 0;
  int64_t q_offset = 0, k_offset = 0, v_offset = 0;
  int64_t y_row() const { return heads * value_head; }
};
AttentionDims attentionDims(const std::vector<Shape>& qkv, double scale, bool causal);
// How many Q, K, V operands a FusedAttention(Grad) with `inputs` inputs has: 1
// (packed) or 3; throws on another count.
size_t attentionOperandCount(const std::string& op, size_t inputs);
// The dtype of FusedAttention's softmax statistics L: f64 for f64 operands, else f32.
DType attentionStatsDType(DType operands);

// Softmax's optional additive mask (a dscompile extension: Softmax(X + M) over the
// last axis, passes/fold_softmax_mask.h): how many rows of X's last dim M holds when
// it repeats along X's rows (M is [1.., R, C] with C X's last dim and R 1 or X's
// second-to-last dim, or [C]); 0 when M does not fit so.
int64_t softmaxMaskRows(const Shape& x, const Shape& mask);

// The loss dtype of SoftmaxCrossEntropyLoss(Grad) over scores of dtype `scores`:
// f32 for 16-bit scores (mixed precision's logits, read as they are: every kernel
// widens them exactly, so this is Cast to f32 then the loss without an f32 copy of
// the logits, GPT-2's [8192, 50257]), the scores' dtype otherwise.
DType crossEntropyLossDType(DType scores);

// SoftmaxCrossEntropyLoss(Grad)'s `classes` (a dscompile extension, 0: the whole
// class axis): only the first `classes` scores along the class axis take part in
// the loss, the rest is padding (pad-products' 16-byte-aligned logits) whose
// gradient is 0. Checks 0 <= classes <= C and, when it pads, no class weights
// (input `weights`) nor log_prob (more than `max_outputs` outputs).
void checkPaddedClasses(InferContext& ctx, size_t scores, size_t weights, size_t max_outputs);

}  // namespace ds
