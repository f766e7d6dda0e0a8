// Training-only op schemas: the backward ops the gradient rules emit (ReLU, Clip, LeakyReLU,
// normalisation, loss, linear layers' weight and bias, gather and slice backward here; the
// sliding-window ones in training_window.cc) and Exp, which the Erf, Gelu and LogSoftmax gradients
// need. Each backward op takes its forward op's attributes unchanged, plus the shape it cannot
// infer from its inputs.
#include <limits>
#include <string>
#include <vector>

#include "ir/op_registry.h"
#include "ir/ops/ops.h"
#include "ir/ops/shape_helpers.h"

namespace ds {

void registerTrainingWindowOps(OpRegistry& r);  // ir/ops/training_window.cc

namespace {

const std::vector<int64_t> kNoInts;

OpSchema expOp() {
  OpSchema s;
  s.name = "Exp";
  s.inplace_input = 0;
  s.infer = [](InferContext& ctx) {
    requireFloat(ctx, 0);
    ctx.setOutput(0, ctx.input(0));
  };
  return s;
}

void requireSameType(const InferContext& ctx, size_t a, size_t b) {
  if (ctx.input(a) != ctx.input(b))
    ctx.fail("input ", a, " must have the type of input ", b, ", ", ctx.input(b).toString());
}

// SoftmaxGrad(dY, Y){axis} -> dX = Y·(dY − Σ_axis dY·Y): Softmax's gradient from its
// output in one pass over each row, where Mul, ReduceSum, Sub and Mul would make four
// (and write three tensors of the attention scores' size).
OpSchema softmaxGrad() {
  OpSchema s;
  s.name = "SoftmaxGrad";
  s.min_inputs = s.max_inputs = 2;
  s.inplace_input = 0;
  s.attrs = {{"axis", AttrKind::Int, int64_t{-1}}};
  s.infer = [](InferContext& ctx) {
    requireFloat(ctx, 0);
    requireSameType(ctx, 0, 1);
    ctx.axis(ctx.node().i("axis"), ctx.rank(0));
    ctx.setOutput(0, ctx.input(0));
  };
  return s;
}

// ReluGrad(dY, Y) -> dX = (Y == 0 ? 0 : dY): Relu's gradient from its output in
// one pass, where Equal then Where would take two and a mask tensor.
OpSchema reluGrad() {
  OpSchema s;
  s.name = "ReluGrad";
  s.min_inputs = s.max_inputs = 2;
  s.inplace_input = 0;
  s.infer = [](InferContext& ctx) {
    requireFloat(ctx, 0);
    requireSameType(ctx, 0, 1);
    ctx.setOutput(0, ctx.input(0));
  };
  return s;
}

// ClipGrad(dY, X){min, max} -> dX = (min < X < max ? dY : 0): Clip's gradient, zero
// where the input was clipped and at the bounds themselves, as PyTorch's hardtanh
// (ReLU6) gradient is.
OpSchema clipGrad() {
  OpSchema s = reluGrad();
  s.name = "ClipGrad";
  s.attrs = {{"min", AttrKind::Float, -std::numeric_limits<double>::infinity()},
             {"max", AttrKind::Float, std::numeric_limits<double>::infinity()}};
  return s;
}

// LeakyReluGrad(dY, X){alpha} -> dX = (X > 0 ? dY : alpha·dY), as PyTorch's.
OpSchema leakyReluGrad() {
  OpSchema s = reluGrad();
  s.name = "LeakyReluGrad";
  s.attrs = {{"alpha", AttrKind::Float, 0.01}};
  return s;
}

// GeluGrad(dY, X){approximate} -> dX = dY·Gelu'(X): Gelu's gradient in one pass,
// where its slope written out takes ten element-wise steps (each rounding to 16
// bits under mixed precision).
OpSchema geluGrad() {
  OpSchema s;
  s.name = "GeluGrad";
  s.min_inputs = s.max_inputs = 2;
  s.inplace_input = 0;
  s.attrs = {{"approximate", AttrKind::String, std::string("none")}};
  s.infer = [](InferContext& ctx) {
    requireFloat(ctx, 0);
    requireSameType(ctx, 0, 1);
    requireOneOf(ctx, "approximate", ctx.node().s("approximate"), {"none", "tanh"});
    ctx.setOutput(0, ctx.input(0));
  };
  return s;
}

// BatchNormalizationGrad(dY, X, scale[, R]){epsilon} -> dX, dScale, dBias (training
// mode: batch statistics are recomputed from X). With R, the output of a Relu after
// the BatchNorm, dY is that Relu's: the BatchNorm's is ReluGrad(dY, R), applied as
// it is read (passes/fuse_relu_grad.h).
OpSchema batchNormGrad() {
  OpSchema s;
  s.name = "BatchNormalizationGrad";
  s.min_inputs = 3;
  s.max_inputs = 4;
  s.min_outputs = s.max_outputs = 3;
  s.attrs = {{"epsilon", AttrKind::Float, 1e-5}};
  s.infer = [](InferContext& ctx) {
    requireFloat(ctx, 0);
    requireRank(ctx, 0, 2, kAnyRank);
    requireSameType(ctx, 0, 1);
    requireFloat(ctx, 2);
    if (ctx.shape(2) != Shape{ctx.shape(1)[1]})
      ctx.fail("scale shape ", shapeToString(ctx.shape(2)), " must be [", ctx.shape(1)[1], "]");
    if (ctx.hasInput(3)) requireSameType(ctx, 3, 0);
    ctx.setOutput(0, ctx.input(1));
    ctx.setOutput(1, ctx.input(2));
    ctx.setOutput(2, ctx.input(2));
  };
  return s;
}

// LayerNormalizationGrad(dY, X, Scale){axis, epsilon} -> dX, dScale, dBias; the
// parameter gradients have the normalised shape X.shape[axis:] (the rule reduces
// them to Scale's and B's own shapes).
OpSchema layerNormGrad() {
  OpSchema s;
  s.name = "LayerNormalizationGrad";
  s.min_inputs = s.max_inputs = 3;
  s.min_outputs = s.max_outputs = 3;
  s.attrs = {{"axis", AttrKind::Int, int64_t{-1}}, {"epsilon", AttrKind::Float, 1e-5}};
  s.infer = [](InferContext& ctx) {
    requireFloat(ctx, 0);
    requireRank(ctx, 0, 1, kAnyRank);
    requireSameType(ctx, 0, 1);
    requireNormParamDType(ctx, 1, 2);
    const Shape& x = ctx.shape(1);
    int64_t axis = ctx.axis(ctx.node().i("axis"), ctx.rank(1));
    Shape normalized(x.begin() + axis, x.end());
    const Shape& p = ctx.shape(2);
    bool ok = p.size() <= normalized.size();
    for (size_t d = 0; ok && d < p.size(); ++d)
      ok = p[d] == 1 || p[d] == normalized[normalized.size() - p.size() + d];
    if (!ok)
      ctx.fail("Scale shape ", shapeToString(p), " does not broadcast to ",
               shapeToString(normalized));
    ctx.setOutput(0, ctx.input(1));
    ctx.setOutput(1, ctx.dtype(2), normalized);  // the parameters' dtype
    ctx.setOutput(2, ctx.dtype(2), normalized);
  };
  return s;
}

// SoftmaxCrossEntropyLossGrad(dLoss, scores, labels[, weights]) -> dScores, dLoss
// and weights of the loss's dtype (f32 for 16-bit scores: ir/ops/reduction.cc).
OpSchema crossEntropyGrad() {
  OpSchema s;
  s.name = "SoftmaxCrossEntropyLossGrad";
  s.min_inputs = 3;
  s.max_inputs = 4;
  s.attrs = {{"ignore_index", AttrKind::Int, std::numeric_limits<int64_t>::min()},
             {"reduction", AttrKind::String, std::string("mean")},
             {"classes", AttrKind::Int, int64_t{0}}};  // checkPaddedClasses
  s.infer = [](InferContext& ctx) {
    requireFloat(ctx, 1);
    requireRank(ctx, 1, 2, kAnyRank);
    checkPaddedClasses(ctx, 1, 3, 1);
    const DType loss_dtype = crossEntropyLossDType(ctx.dtype(1));
    if (ctx.dtype(0) != loss_dtype)
      ctx.fail("dLoss has dtype ", dtypeName(ctx.dtype(0)), "; it must be ", dtypeName(loss_dtype));
    requireIndexType(ctx, 2);
    const std::string& reduction = ctx.node().s("reduction");
    requireOneOf(ctx, "reduction", reduction, {"none", "mean", "sum"});
    Shape per_sample = ctx.shape(1);
    per_sample.erase(per_sample.begin() + 1);
    if (ctx.shape(2) != per_sample) ctx.fail("labels shape must be ", shapeToString(per_sample));
    Shape loss = reduction == "none" ? per_sample : Shape{};
    if (ctx.shape(0) != loss) ctx.fail("dLoss shape must be ", shapeToString(loss));
    if (ctx.hasInput(3)) {
      if (ctx.dtype(3) != loss_dtype)
        ctx.fail("weights have dtype ", dtypeName(ctx.dtype(3)), "; they must be ",
                 dtypeName(loss_dtype));
      if (ctx.shape(3) != Shape{ctx.shape(1)[1]})
        ctx.fail("weights shape must be [", ctx.shape(1)[1], "]");
    }
    ctx.setOutput(0, ctx.input(1));
  };
  return s;
}

// WeightBiasGrad(A, B){bias_input} -> (Y, S): a linear layer's weight and bias
// gradients over rows (passes/fuse_bias_grad.h). A [k, m] and B [k, n], one float
// dtype; Y [m, n] = Aᵀ·B (MatMul{transA = 1}), S = the sum of input `bias_input`'s
// k rows (ReduceSum{axes = [0]}): [m] for A, [n] for B. One kernel reads the
// gradient once for both, as cuBLASLt's bias-gradient epilogues do.
OpSchema weightBiasGrad() {
  OpSchema s;
  s.name = "WeightBiasGrad";
  s.min_inputs = s.max_inputs = 2;
  s.min_outputs = s.max_outputs = 2;
  s.attrs = {{"bias_input", AttrKind::Int, int64_t{1}}};
  s.infer = [](InferContext& ctx) {
    requireRank(ctx, 0, 2, 2);
    requireRank(ctx, 1, 2, 2);
    requireFloat(ctx, 0);
    requireSameDType(ctx, 0, 1);
    const Shape &a = ctx.shape(0), &b = ctx.shape(1);
    if (a[0] != b[0]) ctx.fail("A and B must have the same rows: ", a[0], " vs ", b[0]);
    const int64_t bias_input = ctx.node().i("bias_input");
    if (bias_input != 0 && bias_input != 1) ctx.fail("bias_input must be 0 or 1, is ", bias_input);
    ctx.setOutput(0, ctx.dtype(0), Shape{a[1], b[1]});
    ctx.setOutput(1, ctx.dtype(0), Shape{bias_input == 0 ? a[1] : b[1]});
  };
  return s;
}

// GatherGrad(dY, indices){axis, data_shape} -> dData : data_shape (scatter-add).
OpSchema gatherGrad() {
  OpSchema s;
  s.name = "GatherGrad";
  s.min_inputs = s.max_inputs = 2;
  s.attrs = {{"axis", AttrKind::Int, int64_t{0}}, {"data_shape", AttrKind::Ints, std::nullopt}};
  s.infer = [](InferContext& ctx) {
    requireFloat(ctx, 0);
    requireIndexType(ctx, 1);
    Shape data = ctx.node().ints("data_shape");
    if (data.empty()) ctx.fail("data_shape must have rank >= 1");
    int64_t axis = ctx.axis(ctx.node().i("axis"), static_cast<int64_t>(data.size()));
    Shape y(data.begin(), data.begin() + axis);
    y.insert(y.end(), ctx.shape(1).begin(), ctx.shape(1).end());
    y.insert(y.end(), data.begin() + axis + 1, data.end());
    if (ctx.shape(0) != y) ctx.fail("dY shape must be ", shapeToString(y));
    ctx.setOutput(0, ctx.dtype(0), data);
  };
  return s;
}

// SliceGrad(dY){Slice attrs, input_shape} -> dX : input_shape, zero outside the slice.
OpSchema sliceGrad() {
  OpSchema s;
  s.name = "SliceGrad";
  s.attrs = {{"axes", AttrKind::Ints, kNoInts},
             {"ends", AttrKind::Ints, std::nullopt},
             {"input_shape", AttrKind::Ints, std::nullopt},
             {"starts", AttrKind::Ints, std::nullopt},
             {"steps", AttrKind::Ints, kNoInts}};
  s.infer = [](InferContext& ctx) {
    const Node& n = ctx.node();
    Shape x = n.ints("input_shape");
    std::vector<SliceAxis> axes =
        resolveSlice(ctx, x, n.ints("starts"), n.ints("ends"), n.ints("axes"), n.ints("steps"));
    Shape y;
    for (const SliceAxis& a : axes) y.push_back(a.count);
    if (ctx.shape(0) != y) ctx.fail("dY shape must be ", shapeToString(y));
    ctx.setOutput(0, ctx.dtype(0), x);
  };
  return s;
}

}  // namespace

void registerTrainingOps(OpRegistry& r) {
  r.add(expOp());
  r.add(reluGrad());
  r.add(clipGrad());
  r.add(leakyReluGrad());
  r.add(geluGrad());
  r.add(softmaxGrad());
  r.add(batchNormGrad());
  r.add(layerNormGrad());
  r.add(crossEntropyGrad());
  r.add(weightBiasGrad());
  r.add(gatherGrad());
  r.add(sliceGrad());
  registerTrainingWindowOps(r);
}

}  // namespace ds
