// Reduction and normalisation op schemas: ReduceMean/ReduceSum (axes as an
// attribute), Softmax/LogSoftmax (opset-13, one axis), LayerNormalization and
// SoftmaxCrossEntropyLoss.
#include <limits>
#include <string>
#include <vector>

#include "ir/op_registry.h"
#include "ir/ops/ops.h"
#include "ir/ops/shape_helpers.h"

namespace ds {
namespace {

// The output's dtype: the input's, or with `to` = "f32" (a dscompile extension) f32
// from a 16-bit float input — the sum of the widened values, as Cast then the
// reduction would give, without the f32 copy (a mixed-precision gradient norm).
DType outputDType(InferContext& ctx) {
  const std::string& to = ctx.node().s("to");
  if (to.empty()) return ctx.dtype(0);
  const DType x = ctx.dtype(0);
  if (to != "f32" || (x != DType::F16 && x != DType::BF16 && x != DType::F32))
    ctx.fail("to must be 'f32' on a float input of at most 32 bits, is '", to, "'");
  return DType::F32;
}

void inferReduce(InferContext& ctx) {
  requireNumeric(ctx, 0);
  const Shape& x = ctx.shape(0);
  const std::vector<int64_t>& axes_attr = ctx.node().ints("axes");
  if (axes_attr.empty() && ctx.node().i("noop_with_empty_axes") != 0) {
    ctx.setOutput(0, outputDType(ctx), x);
    return;
  }
  std::vector<bool> reduced(x.size(), axes_attr.empty());
  for (int64_t a : normalizeAxes(ctx, axes_attr, ctx.rank(0))) reduced[a] = true;
  bool keep = ctx.node().i("keepdims") != 0;
  Shape out;
  for (size_t d = 0; d < x.size(); ++d) {
    if (!reduced[d])
      out.push_back(x[d]);
    else if (keep)
      out.push_back(1);
  }
  ctx.setOutput(0, outputDType(ctx), out);
}

OpSchema reduce(const std::string& name) {
  OpSchema s;
  s.name = name;
  s.attrs = {{"axes", AttrKind::Ints, std::vector<int64_t>{}},
             {"keepdims", AttrKind::Int, int64_t{1}},
             {"noop_with_empty_axes", AttrKind::Int, int64_t{0}},
             {"to", AttrKind::String, std::string()}};
  s.infer = inferReduce;
  return s;
}

// Softmax(X[, M]): with M (a dscompile extension), softmax(X + M) over the last
// axis, M an additive mask repeating along X's rows (softmaxMaskRows).
OpSchema softmax(const std::string& name) {
  OpSchema s;
  s.name = name;
  s.max_inputs = name == "Softmax" ? 2 : 1;
  s.attrs = {{"axis", AttrKind::Int, int64_t{-1}}};
  s.infer = [](InferContext& ctx) {
    requireFloat(ctx, 0);
    requireRank(ctx, 0, 1, kAnyRank);
    const int64_t axis = ctx.axis(ctx.node().i("axis"), ctx.rank(0));
    if (ctx.hasInput(1)) {
      requireSameDType(ctx, 0, 1);
      if (axis != ctx.rank(0) - 1) ctx.fail("a mask needs the last axis, not ", axis);
      if (softmaxMaskRows(ctx.shape(0), ctx.shape(1)) == 0)
        ctx.fail("mask shape ", shapeToString(ctx.shape(1)), " does not repeat along the rows of ",
                 shapeToString(ctx.shape(0)));
    }
    ctx.setOutput(0, ctx.input(0));
  };
  return s;
}

// Scale and B must broadcast (unidirectionally) to X.shape[axis:].
void checkNormParam(const InferContext& ctx, size_t i, const Shape& normalized) {
  requireNormParamDType(ctx, 0, i);
  const Shape& p = ctx.shape(i);
  bool ok = p.size() <= normalized.size();
  for (size_t d = 0; ok && d < p.size(); ++d)
    ok = p[d] == 1 || p[d] == normalized[normalized.size() - p.size() + d];
  if (!ok)
    ctx.fail("input ", i, " shape ", shapeToString(p), " does not broadcast to normalized shape ",
             shapeToString(normalized));
}

void inferLayerNorm(InferContext& ctx) {
  requireFloat(ctx, 0);
  requireRank(ctx, 0, 1, kAnyRank);
  const Shape& x = ctx.shape(0);
  int64_t axis = ctx.axis(ctx.node().i("axis"), ctx.rank(0));
  if (ctx.node().i("stash_type") != 1)
    ctx.fail("stash_type ", ctx.node().i("stash_type"), " is not supported (only 1, f32)");
  Shape normalized(x.begin() + axis, x.end());
  checkNormParam(ctx, 1, normalized);
  if (ctx.hasInput(2)) checkNormParam(ctx, 2, normalized);
  ctx.setOutput(0, ctx.input(0));
  Shape stats(x.begin(), x.begin() + axis);
  stats.resize(x.size(), 1);
  for (size_t i = 1; i < ctx.numOutputs(); ++i) ctx.setOutput(i, DType::F32, stats);
}

OpSchema layerNorm() {
  OpSchema s;
  s.name = "LayerNormalization";
  s.min_inputs = 2;
  s.max_inputs = 3;
  s.max_outputs = 3;
  s.attrs = {{"axis", AttrKind::Int, int64_t{-1}},
             {"epsilon", AttrKind::Float, 1e-5},
             {"stash_type", AttrKind::Int, int64_t{1}}};
  s.infer = inferLayerNorm;
  return s;
}

// scores [N, C, d1..], labels [N, d1..], weights [C]; 16-bit scores give an f32
// loss and take f32 weights (crossEntropyLossDType; ONNX's loss would be 16-bit,
// a dscompile extension like MatMul's alpha, for mixed precision).
void inferCrossEntropy(InferContext& ctx) {
  requireFloat(ctx, 0);
  requireRank(ctx, 0, 2, kAnyRank);
  requireIndexType(ctx, 1);
  const Shape& scores = ctx.shape(0);
  Shape per_sample = scores;
  per_sample.erase(per_sample.begin() + 1);
  if (ctx.shape(1) != per_sample)
    ctx.fail("labels shape ", shapeToString(ctx.shape(1)), " must be ", shapeToString(per_sample),
             " for scores ", shapeToString(scores));
  const DType loss = crossEntropyLossDType(ctx.dtype(0));
  if (ctx.hasInput(2)) {
    if (ctx.dtype(2) != loss)
      ctx.fail("weights have dtype ", dtypeName(ctx.dtype(2)), "; they must be ", dtypeName(loss));
    if (ctx.shape(2) != Shape{scores[1]})
      ctx.fail("weights shape ", shapeToString(ctx.shape(2)), " must be [", scores[1], "]");
  }
  const std::string& reduction = ctx.node().s("reduction");
  requireOneOf(ctx, "reduction", reduction, {"none", "mean", "sum"});
  checkPaddedClasses(ctx, 0, 2, 1);
  ctx.setOutput(0, loss, reduction == "none" ? per_sample : Shape{});
  if (ctx.numOutputs() > 1) ctx.setOutput(1, ctx.input(0));
}

OpSchema crossEntropy() {
  OpSchema s;
  s.name = "SoftmaxCrossEntropyLoss";
  s.min_inputs = 2;
  s.max_inputs = 3;
  s.max_outputs = 2;
  s.attrs = {{"ignore_index", AttrKind::Int, std::numeric_limits<int64_t>::min()},
             {"reduction", AttrKind::String, std::string("mean")},
             {"classes", AttrKind::Int, int64_t{0}}};  // checkPaddedClasses
  s.infer = inferCrossEntropy;
  return s;
}

}  // namespace

void registerReductionOps(OpRegistry& r) {
  r.add(reduce("ReduceMean"));
  r.add(reduce("ReduceSum"));
  r.add(reduce("ReduceSumSquare"));
  r.add(softmax("Softmax"));
  r.add(softmax("LogSoftmax"));
  r.add(layerNorm());
  r.add(crossEntropy());
}

}  // namespace ds
