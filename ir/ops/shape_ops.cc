// Shape-manipulating op schemas: Flatten, Reshape, Transpose, (Un)Squeeze,
// Concat, Split, Slice, Gather, Expand, Trilu, Pad, and the shape-computing ops
// Shape, Range and ConstantOfShape (the latter two need constant inputs).
#include <limits>
#include <string>
#include <vector>

#include "ir/op_registry.h"
#include "ir/ops/ops.h"
#include "ir/ops/shape_helpers.h"

namespace ds {
namespace {

const std::vector<int64_t> kNoInts;

OpSchema schema(const std::string& name, std::vector<AttrSpec> attrs, InferFn infer) {
  OpSchema s;
  s.name = name;
  s.attrs = std::move(attrs);
  s.infer = std::move(infer);
  return s;
}

void inferFlatten(InferContext& ctx) {
  int64_t rank = ctx.rank(0);
  int64_t axis = ctx.node().i("axis");
  if (axis < -rank || axis > rank) ctx.fail("axis ", axis, " is out of range for rank ", rank);
  if (axis < 0) axis += rank;
  const Shape& x = ctx.shape(0);
  Shape outer(x.begin(), x.begin() + axis), inner(x.begin() + axis, x.end());
  ctx.setOutput(0, ctx.dtype(0), {numElements(outer), numElements(inner)});
}

void inferReshape(InferContext& ctx) {
  bool allowzero = ctx.node().i("allowzero") != 0;
  const std::vector<int64_t>& target = ctx.node().ints("shape");
  if (allowzero) {
    bool has_zero = false, has_minus = false;
    for (int64_t d : target) has_zero |= d == 0, has_minus |= d == -1;
    if (has_zero && has_minus) ctx.fail("allowzero=1 shape cannot hold both 0 and -1");
  }
  ctx.setOutput(0, ctx.dtype(0), reshapeTarget(ctx, ctx.shape(0), target, allowzero));
}

void inferTranspose(InferContext& ctx) {
  std::vector<int64_t> perm = transposePerm(ctx, ctx.node().ints("perm"), ctx.rank(0));
  Shape out;
  for (int64_t p : perm) out.push_back(ctx.shape(0)[p]);
  ctx.setOutput(0, ctx.dtype(0), out);
}

void inferUnsqueeze(InferContext& ctx) {
  const std::vector<int64_t>& axes = ctx.node().ints("axes");
  if (axes.empty()) ctx.fail("attribute 'axes' is empty");
  auto out_rank = static_cast<int64_t>(ctx.rank(0) + axes.size());
  std::vector<bool> inserted(static_cast<size_t>(out_rank), false);
  for (int64_t a : normalizeAxes(ctx, axes, out_rank)) inserted[a] = true;
  Shape out;
  size_t next = 0;
  for (int64_t d = 0; d < out_rank; ++d) out.push_back(inserted[d] ? 1 : ctx.shape(0)[next++]);
  ctx.setOutput(0, ctx.dtype(0), out);
}

void inferSqueeze(InferContext& ctx) {
  const Shape& x = ctx.shape(0);
  const std::vector<int64_t>& axes = ctx.node().ints("axes");
  std::vector<bool> squeezed(x.size(), false);
  for (size_t d = 0; d < x.size(); ++d) squeezed[d] = axes.empty() && x[d] == 1;
  for (int64_t a : normalizeAxes(ctx, axes, ctx.rank(0))) {
    if (x[a] != 1) ctx.fail("cannot squeeze axis ", a, " of size ", x[a]);
    squeezed[a] = true;
  }
  Shape out;
  for (size_t d = 0; d < x.size(); ++d)
    if (!squeezed[d]) out.push_back(x[d]);
  ctx.setOutput(0, ctx.dtype(0), out);
}

void inferConcat(InferContext& ctx) {
  for (size_t i = 0; i < ctx.numInputs(); ++i) ctx.input(i);  // all inputs must be present
  int64_t rank = ctx.rank(0);
  if (rank == 0) ctx.fail("cannot concatenate scalars");
  int64_t axis = ctx.axis(ctx.node().i("axis"), rank);
  Shape out = ctx.shape(0);
  for (size_t i = 1; i < ctx.numInputs(); ++i) {
    requireSameDType(ctx, 0, i);
    const Shape& s = ctx.shape(i);
    bool ok = static_cast<int64_t>(s.size()) == rank;
    for (int64_t d = 0; ok && d < rank; ++d) ok = d == axis || s[d] == out[d];
    if (!ok)
      ctx.fail("input ", i, " shape ", shapeToString(s), " does not match ",
               shapeToString(ctx.shape(0)), " outside axis ", axis);
    out[axis] += s[axis];
  }
  ctx.setOutput(0, ctx.dtype(0), out);
}

void inferSplit(InferContext& ctx) {
  int64_t axis = ctx.axis(ctx.node().i("axis"), ctx.rank(0));
  if (ctx.rank(0) == 0) ctx.fail("cannot split a scalar");
  std::vector<int64_t> sizes =
      splitSizes(ctx, ctx.shape(0)[axis], ctx.node().ints("split"), ctx.numOutputs());
  for (size_t i = 0; i < sizes.size(); ++i) {
    Shape out = ctx.shape(0);
    out[axis] = sizes[i];
    ctx.setOutput(i, ctx.dtype(0), out);
  }
}

void inferSlice(InferContext& ctx) {
  const Node& n = ctx.node();
  std::vector<SliceAxis> axes = resolveSlice(ctx, ctx.shape(0), n.ints("starts"), n.ints("ends"),
                                             n.ints("axes"), n.ints("steps"));
  Shape out;
  for (const SliceAxis& a : axes) out.push_back(a.count);
  ctx.setOutput(0, ctx.dtype(0), out);
}

void inferGather(InferContext& ctx) {
  requireRank(ctx, 0, 1, kAnyRank);
  requireIndexType(ctx, 1);
  const Shape& data = ctx.shape(0);
  int64_t axis = ctx.axis(ctx.node().i("axis"), ctx.rank(0));
  if (const Tensor* idx = ctx.constant(1)) {
    for (int64_t v : idx->toInts())
      if (v < -data[axis] || v >= data[axis])
        ctx.fail("index ", v, " is out of range for axis ", axis, " of size ", data[axis]);
  }
  Shape out(data.begin(), data.begin() + axis);
  out.insert(out.end(), ctx.shape(1).begin(), ctx.shape(1).end());
  out.insert(out.end(), data.begin() + axis + 1, data.end());
  ctx.setOutput(0, ctx.dtype(0), out);
}

void inferExpand(InferContext& ctx) {
  const std::vector<int64_t>& shape = ctx.node().ints("shape");
  for (int64_t d : shape)
    if (d < 0) ctx.fail("shape ", shapeToString(shape), " has a negative dim");
  ctx.setOutput(0, ctx.dtype(0), broadcastShapes(ctx, ctx.shape(0), shape));
}

void inferTrilu(InferContext& ctx) {
  requireRank(ctx, 0, 2, kAnyRank);
  ctx.setOutput(0, ctx.input(0));
}

// Pad{pads, value}: ONNX's constant mode with the pads of every axis, begins then
// ends (the importer fills in the axes the model leaves out); never negative.
void inferPad(InferContext& ctx) {
  const std::vector<int64_t>& pads = ctx.node().ints("pads");
  const int64_t rank = ctx.rank(0);
  if (static_cast<int64_t>(pads.size()) != 2 * rank)
    ctx.fail("pads has ", pads.size(), " values, needs 2 x rank ", rank);
  Shape out = ctx.shape(0);
  for (int64_t d = 0; d < rank; ++d) {
    if (pads[d] < 0 || pads[d + rank] < 0)
      ctx.fail("pads must not be negative (axis ", d, ": ", pads[d], ", ", pads[d + rank], ")");
    out[d] += pads[d] + pads[d + rank];
  }
  ctx.setOutput(0, ctx.dtype(0), out);
}

void inferShape(InferContext& ctx) {
  auto [start, end] = shapeOpRange(ctx.node().i("start"), ctx.node().i("end"), ctx.rank(0));
  ctx.setOutput(0, DType::I64, {end - start});
}

void inferRange(InferContext& ctx) {
  for (size_t i = 0; i < 3; ++i) {
    requireNumeric(ctx, i);
    requireSameDType(ctx, 0, i);
    if (ctx.rank(i) != 0) ctx.fail("input ", i, " must be a scalar");
  }
  const Tensor *start = ctx.constant(0), *limit = ctx.constant(1), *delta = ctx.constant(2);
  if (!start || !limit || !delta) ctx.fail("needs constant inputs (start, limit, delta)");
  ctx.setOutput(0, ctx.dtype(0), {rangeLength(ctx, *start, *limit, *delta)});
}

void inferConstantOfShape(InferContext& ctx) {
  if (ctx.dtype(0) != DType::I64 || ctx.rank(0) != 1)
    ctx.fail("shape input must be a 1-D i64 tensor");
  const Tensor* shape = ctx.constant(0);
  if (!shape) ctx.fail("needs a constant shape input");
  const Tensor& value = ctx.node().t("value");
  if (value.numel() != 1) ctx.fail("attribute 'value' must hold one element, has ", value.numel());
  Shape out = shape->toInts();
  for (int64_t d : out)
    if (d < 0) ctx.fail("shape ", shapeToString(out), " has a negative dim");
  ctx.setOutput(0, value.dtype(), out);
}

// Ops that only relabel the dims of their input's bytes: their output may share the
// input's buffer (the memory plan then makes the copy a no-op).
OpSchema relabelsDims(OpSchema s) {
  s.inplace_input = 0;
  return s;
}

}  // namespace

void registerShapeOps(OpRegistry& r) {
  using K = AttrKind;
  r.add(relabelsDims(schema("Flatten", {{"axis", K::Int, int64_t{1}}}, inferFlatten)));
  r.add(relabelsDims(schema("Reshape",
                            {{"allowzero", K::Int, int64_t{0}}, {"shape", K::Ints, std::nullopt}},
                            inferReshape)));
  r.add(schema("Transpose", {{"perm", K::Ints, kNoInts}}, inferTranspose));
  r.add(relabelsDims(schema("Unsqueeze", {{"axes", K::Ints, std::nullopt}}, inferUnsqueeze)));
  r.add(relabelsDims(schema("Squeeze", {{"axes", K::Ints, kNoInts}}, inferSqueeze)));
  OpSchema concat = schema("Concat", {{"axis", K::Int, std::nullopt}}, inferConcat);
  concat.max_inputs = kVariadic;
  r.add(concat);
  OpSchema split =
      schema("Split", {{"axis", K::Int, int64_t{0}}, {"split", K::Ints, kNoInts}}, inferSplit);
  split.max_outputs = kVariadic;
  r.add(split);
  r.add(schema("Slice",
               {{"axes", K::Ints, kNoInts},
                {"ends", K::Ints, std::nullopt},
                {"starts", K::Ints, std::nullopt},
                {"steps", K::Ints, kNoInts}},
               inferSlice));
  OpSchema gather = schema("Gather", {{"axis", K::Int, int64_t{0}}}, inferGather);
  gather.min_inputs = gather.max_inputs = 2;
  r.add(gather);
  r.add(schema("Expand", {{"shape", K::Ints, std::nullopt}}, inferExpand));
  r.add(schema("Trilu", {{"k", K::Int, int64_t{0}}, {"upper", K::Int, int64_t{1}}}, inferTrilu));
  r.add(schema("Pad", {{"pads", K::Ints, std::nullopt}, {"value", K::Float, 0.0}}, inferPad));
  r.add(
      schema("Shape",
             {{"end", K::Int, std::numeric_limits<int64_t>::max()}, {"start", K::Int, int64_t{0}}},
             inferShape));
  OpSchema range = schema("Range", {}, inferRange);
  range.min_inputs = range.max_inputs = 3;
  r.add(range);
  r.add(schema("ConstantOfShape", {{"value", K::Tensor, Tensor(TensorType{DType::F32, {1}})}},
               inferConstantOfShape));
}

}  // namespace ds
