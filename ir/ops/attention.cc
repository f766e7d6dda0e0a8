// FusedAttention and its gradient (dscompile extensions): scaled dot-product
// attention in one step, so the [batch, heads, Tq, Tk] scores and probabilities are
// never tensors of the plan (passes/fuse_attention.h makes them from MatMul ->
// Softmax -> MatMul). Operands are in the layout the projections write,
// [batch, T, heads, head_dim] ("BSHD"), so the head transposes go too:
//
//   FusedAttention(Q, K, V){scale, causal} -> Y, L
//     S[b,h,i,j] = scale · Σ_d Q[b,i,h,d] K[b,j,h,d], with j > i masked out if causal
//     Y[b,i,h,:] = Σ_j softmax_j(S[b,h,i,:]) V[b,j,h,:]
//     L[b,h,i]   = log Σ_j exp(S[b,h,i,j])   (the softmax's statistics, f32 (f64 for
//                                             f64 operands): the gradient reads them
//                                             instead of the probabilities)
//   FusedAttentionGrad(dY, Q, K, V, Y, L){scale, causal} -> dQ, dK, dV
//
// Self-attention whose Q, K and V are one projection's output split in three
// (GPT's c_attn) may instead take them packed, as that projection writes them
// (passes/pack_attention.h), so no Split copies them out and no Concat gathers
// their gradients:
//
//   FusedAttention(QKV [B, T, 3, H, D]) -> Y, L
//   FusedAttentionGrad(dY, QKV, Y, L) -> dQKV
//
// scale 0 means 1/sqrt(head_dim), as ONNX's Attention. Y and the gradients have
// Q's dtype; 16-bit operands compute in f32, as flash attention does.
#include "ir/op_registry.h"
#include "ir/ops/ops.h"
#include "ir/ops/shape_helpers.h"

namespace ds {
namespace {

std::vector<AttrSpec> attentionAttrs() {
  return {{"scale", AttrKind::Float, 0.0}, {"causal", AttrKind::Int, int64_t{0}}};
}

// Checks the packed QKV at `first` and returns Y's shape [B, T, H, D].
Shape checkPacked(const InferContext& ctx, size_t first) {
  requireFloat(ctx, first);
  requireRank(ctx, first, 5, 5);
  const Shape& p = ctx.shape(first);
  if (p[2] != 3)
    ctx.fail("packed QKV ", shapeToString(p), " must be [batch, T, 3, heads, head_dim]");
  return {p[0], p[1], p[3], p[4]};
}

// Checks Q, K, V (at `first`; `count` 3, or 1 packed) and returns Y's shape [B, Tq, H, Dv].
Shape checkOperands(const InferContext& ctx, size_t first, size_t count) {
  if (ctx.node().f("scale") < 0) ctx.fail("scale must not be negative");
  if (count == 1) return checkPacked(ctx, first);
  const size_t q = first, k = first + 1, v = first + 2;
  for (size_t i : {q, k, v}) {
    requireFloat(ctx, i);
    requireRank(ctx, i, 4, 4);
  }
  requireSameDType(ctx, q, k);
  requireSameDType(ctx, q, v);
  const Shape &qs = ctx.shape(q), &ks = ctx.shape(k), &vs = ctx.shape(v);
  if (ks[0] != qs[0] || ks[2] != qs[2] || ks[3] != qs[3])
    ctx.fail("K ", shapeToString(ks), " must match Q ", shapeToString(qs),
             " in batch, heads and head size ([batch, T, heads, head_dim])");
  if (vs[0] != ks[0] || vs[1] != ks[1] || vs[2] != ks[2])
    ctx.fail("V ", shapeToString(vs), " must match K ", shapeToString(ks),
             " in batch, length and heads");
  if (ctx.node().i("causal") != 0 && qs[1] != ks[1])
    ctx.fail("causal attention needs Q and K of one length, not ", qs[1], " and ", ks[1]);
  return {qs[0], qs[1], qs[2], vs[3]};
}

// The number of Q, K, V operands of the node (3, or 1 packed); fails on another
// input count.
size_t operandCount(const InferContext& ctx) {
  try {
    return attentionOperandCount(ctx.node().op(), ctx.node().numInputs());
  } catch (const Error& e) {
    ctx.fail(e.what());
  }
}
OpSchema fusedAttention() {
  OpSchema s;
  s.name = "FusedAttention";
  s.min_inputs = 1;
  s.max_inputs = 3;
  s.min_outputs = s.max_outputs = 2;
  s.attrs = attentionAttrs();
  s.infer = [](InferContext& ctx) {
    const Shape y = checkOperands(ctx, 0, operandCount(ctx));
    ctx.setOutput(0, ctx.dtype(0), y);
    ctx.setOutput(1, attentionStatsDType(ctx.dtype(0)), {y[0], y[2], y[1]});
  };
  return s;
}

OpSchema fusedAttentionGrad() {
  OpSchema s;
  s.name = "FusedAttentionGrad";
  s.min_inputs = 4;
  s.max_inputs = 6;
  s.min_outputs = 1;
  s.max_outputs = 3;
  s.attrs = attentionAttrs();
  s.infer = [](InferContext& ctx) {
    const size_t count = operandCount(ctx), y_at = 1 + count;
    if (ctx.numOutputs() != count) ctx.fail("has one gradient output per operand, ", count);
    const Shape y = checkOperands(ctx, 1, count);
    for (size_t i : {size_t{0}, y_at}) {
      requireSameDType(ctx, i, 1);
      if (ctx.shape(i) != y)
        ctx.fail("input ", i, " shape ", shapeToString(ctx.shape(i)), " must be Y's, ",
                 shapeToString(y));
    }
    const TensorType stats{attentionStatsDType(ctx.dtype(1)), {y[0], y[2], y[1]}};
    if (ctx.input(y_at + 1) != stats)
      ctx.fail("L must be ", stats.toString(), ", not ", ctx.input(y_at + 1).toString());
    for (size_t i = 0; i < count; ++i) ctx.setOutput(i, ctx.input(1 + i));
  };
  return s;
}

}  // namespace

void registerAttentionOps(OpRegistry& r) {
  r.add(fusedAttention());
  r.add(fusedAttentionGrad());
}

}  // namespace ds
