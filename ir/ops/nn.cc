// Neural-network op schemas: Conv, pooling, BatchNormalization, Gemm, MatMul and
// Dropout. Sliding-window ops share one output-size rule (auto_pad, dilations,
// ceil_mode) following the ONNX operator documentation.
#include <string>
#include <vector>

#include "ir/op_registry.h"
#include "ir/ops/ops.h"
#include "ir/ops/shape_helpers.h"

namespace ds {
namespace {

const std::vector<int64_t> kNoInts;

// Spatial attributes of a sliding-window op, resolved to one entry per spatial dim.
struct Window {
  std::vector<int64_t> kernel, strides, dilations, pads;  // pads: begins then ends
  std::string auto_pad;
  bool ceil_mode = false;
};

std::vector<int64_t> orDefault(const InferContext& ctx, const std::string& attr, size_t n,
                               int64_t fill, int64_t min_value) {
  std::vector<int64_t> v = ctx.node().ints(attr);
  if (v.empty()) v.assign(n, fill);
  if (v.size() != n) ctx.fail("attribute '", attr, "' has ", v.size(), " entries, expected ", n);
  for (int64_t x : v)
    if (x < min_value) ctx.fail("attribute '", attr, "' has value ", x, " below ", min_value);
  return v;
}

Window readWindow(const InferContext& ctx, std::vector<int64_t> kernel, bool has_ceil_mode) {
  Window w;
  size_t k = kernel.size();
  w.kernel = std::move(kernel);
  for (int64_t d : w.kernel)
    if (d < 1) ctx.fail("kernel_shape ", shapeToString(w.kernel), " has a dim below 1");
  w.strides = orDefault(ctx, "strides", k, 1, 1);
  w.dilations = orDefault(ctx, "dilations", k, 1, 1);
  w.pads = orDefault(ctx, "pads", 2 * k, 0, 0);
  w.auto_pad = ctx.node().s("auto_pad");
  requireOneOf(ctx, "auto_pad", w.auto_pad, {"NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"});
  if (w.auto_pad != "NOTSET" && !ctx.node().ints("pads").empty())
    ctx.fail("attribute 'pads' cannot be combined with auto_pad ", w.auto_pad);
  w.ceil_mode = has_ceil_mode && ctx.node().i("ceil_mode") != 0;
  return w;
}

// Output size of one spatial dim. With ceil_mode the last window must still start
// inside the input or its left padding (ONNX/PyTorch rule).
int64_t windowDim(const InferContext& ctx, const Window& w, size_t i, int64_t in) {
  size_t k = w.kernel.size();
  int64_t span = (w.kernel[i] - 1) * w.dilations[i] + 1;
  int64_t s = w.strides[i];
  if (w.auto_pad == "SAME_UPPER" || w.auto_pad == "SAME_LOWER") return (in + s - 1) / s;
  int64_t pad_begin = w.auto_pad == "NOTSET" ? w.pads[i] : 0;
  int64_t padded = in + pad_begin + (w.auto_pad == "NOTSET" ? w.pads[i + k] : 0);
  if (padded < span)
    ctx.fail("window of size ", span, " does not fit spatial dim ", i, " of size ", in, " (padded ",
             padded, ")");
  int64_t room = padded - span;
  int64_t out = (w.ceil_mode ? (room + s - 1) / s : room / s) + 1;
  if (w.ceil_mode && (out - 1) * s >= in + pad_begin) --out;
  return out;
}

// [N, C, spatial...] -> [N, channels, windowed spatial...].
Shape windowOutput(const InferContext& ctx, const Window& w, int64_t channels) {
  const Shape& x = ctx.shape(0);
  Shape out = {x[0], channels};
  for (size_t i = 0; i < w.kernel.size(); ++i) out.push_back(windowDim(ctx, w, i, x[i + 2]));
  return out;
}

void inferConv(InferContext& ctx) {
  requireRank(ctx, 0, 3, 5);
  requireFloat(ctx, 0);
  requireSameDType(ctx, 0, 1);
  const Shape& x = ctx.shape(0);
  const Shape& wt = ctx.shape(1);
  if (wt.size() != x.size())
    ctx.fail("weight rank ", wt.size(), " does not match input rank ", x.size());
  int64_t group = ctx.node().i("group");
  if (group < 1) ctx.fail("group ", group, " must be at least 1");
  if (x[1] != wt[1] * group)
    ctx.fail("input has ", x[1], " channels, weight expects ", wt[1], " x group ", group);
  if (wt[0] % group != 0) ctx.fail(wt[0], " output channels do not divide into ", group, " groups");
  if (ctx.hasInput(2)) {
    requireSameDType(ctx, 0, 2);
    if (ctx.shape(2) != Shape{wt[0]})
      ctx.fail("bias shape ", shapeToString(ctx.shape(2)), " must be [", wt[0], "]");
  }
  std::vector<int64_t> kernel(wt.begin() + 2, wt.end());
  const std::vector<int64_t>& attr_kernel = ctx.node().ints("kernel_shape");
  if (!attr_kernel.empty() && attr_kernel != kernel)
    ctx.fail("kernel_shape ", shapeToString(attr_kernel), " does not match weight ",
             shapeToString(wt));
  Window w = readWindow(ctx, kernel, false);
  ctx.setOutput(0, ctx.dtype(0), windowOutput(ctx, w, wt[0]));
}

std::vector<AttrSpec> windowAttrs() {
  return {{"auto_pad", AttrKind::String, std::string("NOTSET")},
          {"dilations", AttrKind::Ints, kNoInts},
          {"pads", AttrKind::Ints, kNoInts},
          {"strides", AttrKind::Ints, kNoInts}};
}

OpSchema conv() {
  OpSchema s;
  s.name = "Conv";
  s.min_inputs = 2;
  s.max_inputs = 3;
  s.attrs = windowAttrs();
  s.attrs.push_back({"group", AttrKind::Int, int64_t{1}});
  s.attrs.push_back({"kernel_shape", AttrKind::Ints, kNoInts});
  s.infer = inferConv;
  return s;
}

void inferPool(InferContext& ctx, bool int8_ok) {
  requireRank(ctx, 0, 3, 5);
  DType t = ctx.dtype(0);
  if (!(int8_ok && (t == DType::I8 || t == DType::U8))) requireFloat(ctx, 0);
  const std::vector<int64_t>& kernel = ctx.node().ints("kernel_shape");
  if (static_cast<int64_t>(kernel.size()) != ctx.rank(0) - 2)
    ctx.fail("kernel_shape ", shapeToString(kernel), " needs ", ctx.rank(0) - 2, " entries");
  Window w = readWindow(ctx, kernel, true);
  ctx.setOutput(0, t, windowOutput(ctx, w, ctx.shape(0)[1]));
}

OpSchema maxPool() {
  OpSchema s;
  s.name = "MaxPool";
  s.attrs = windowAttrs();
  s.attrs.push_back({"ceil_mode", AttrKind::Int, int64_t{0}});
  s.attrs.push_back({"kernel_shape", AttrKind::Ints, std::nullopt});
  s.attrs.push_back({"storage_order", AttrKind::Int, int64_t{0}});
  s.infer = [](InferContext& ctx) {
    int64_t order = ctx.node().i("storage_order");
    if (order != 0 && order != 1) ctx.fail("storage_order ", order, " must be 0 or 1");
    inferPool(ctx, true);
  };
  return s;
}

OpSchema averagePool() {
  OpSchema s;
  s.name = "AveragePool";
  s.attrs = windowAttrs();
  s.attrs.push_back({"ceil_mode", AttrKind::Int, int64_t{0}});
  s.attrs.push_back({"count_include_pad", AttrKind::Int, int64_t{0}});
  s.attrs.push_back({"kernel_shape", AttrKind::Ints, std::nullopt});
  s.infer = [](InferContext& ctx) { inferPool(ctx, false); };
  return s;
}

OpSchema globalAveragePool() {
  OpSchema s;
  s.name = "GlobalAveragePool";
  s.infer = [](InferContext& ctx) {
    requireRank(ctx, 0, 3, 5);
    requireFloat(ctx, 0);
    Shape out = ctx.shape(0);
    for (size_t i = 2; i < out.size(); ++i) out[i] = 1;
    ctx.setOutput(0, ctx.dtype(0), out);
  };
  return s;
}

void inferBatchNorm(InferContext& ctx) {
  requireRank(ctx, 0, 2, kAnyRank);
  requireFloat(ctx, 0);
  int64_t c = ctx.shape(0)[1];
  const char* names[] = {"X", "scale", "B", "input_mean", "input_var"};
  for (size_t i = 1; i < 5; ++i) {
    requireFloat(ctx, i);
    if (ctx.shape(i) != Shape{c})
      ctx.fail(names[i], " shape ", shapeToString(ctx.shape(i)), " must be [", c, "]");
  }
  bool training = ctx.node().i("training_mode") != 0;
  if (!training && ctx.numOutputs() > 1)
    ctx.fail("running_mean/running_var outputs need training_mode=1");
  ctx.setOutput(0, ctx.input(0));
  if (ctx.numOutputs() > 1) ctx.setOutput(1, ctx.input(3));
  if (ctx.numOutputs() > 2) ctx.setOutput(2, ctx.input(4));
}

OpSchema batchNorm() {
  OpSchema s;
  s.name = "BatchNormalization";
  s.min_inputs = s.max_inputs = 5;
  s.max_outputs = 3;
  // unbiased_running_var (not ONNX): running_var mixes in the unbiased batch
  // variance, as PyTorch's does, instead of ONNX's biased one; passes/add_optimizer.h
  // sets it for the models PyTorch exports.
  s.attrs = {{"epsilon", AttrKind::Float, 1e-5},
             {"momentum", AttrKind::Float, 0.9},
             {"training_mode", AttrKind::Int, int64_t{0}},
             {"unbiased_running_var", AttrKind::Int, int64_t{0}}};
  s.infer = inferBatchNorm;
  return s;
}

void inferGemm(InferContext& ctx) {
  requireRank(ctx, 0, 2, 2);
  requireRank(ctx, 1, 2, 2);
  requireNumeric(ctx, 0);
  requireSameDType(ctx, 0, 1);
  const Shape& a = ctx.shape(0);
  const Shape& b = ctx.shape(1);
  bool ta = ctx.node().i("transA") != 0;
  bool tb = ctx.node().i("transB") != 0;
  int64_t m = ta ? a[1] : a[0], ka = ta ? a[0] : a[1];
  int64_t kb = tb ? b[1] : b[0], n = tb ? b[0] : b[1];
  if (ka != kb) ctx.fail("inner dims differ: A gives K=", ka, ", B gives K=", kb);
  Shape out = {m, n};
  if (ctx.hasInput(2)) {
    requireSameDType(ctx, 0, 2);
    const Shape& c = ctx.shape(2);
    bool ok = c.size() <= 2;
    for (size_t i = 0; ok && i < c.size(); ++i) {
      int64_t target = out[out.size() - c.size() + i];
      ok = c[i] == 1 || c[i] == target;
    }
    if (!ok) ctx.fail("C shape ", shapeToString(c), " does not broadcast to ", shapeToString(out));
  }
  ctx.setOutput(0, ctx.dtype(0), out);
}

OpSchema gemm() {
  OpSchema s;
  s.name = "Gemm";
  s.min_inputs = 2;
  s.max_inputs = 3;
  s.attrs = {{"alpha", AttrKind::Float, 1.0},
             {"beta", AttrKind::Float, 1.0},
             {"transA", AttrKind::Int, int64_t{0}},
             {"transB", AttrKind::Int, int64_t{0}}};
  s.infer = inferGemm;
  return s;
}

// numpy.matmul: 1-D operands gain (and then lose) a unit dim; batch dims broadcast.
// transA/transB (a dscompile extension, default 0, like Gemm's) use an operand's last
// two dims swapped, so transposes feeding a product cost no copy (passes/fold_transpose);
// alpha (also an extension, default 1) scales the product inside the GEMM, before its
// one rounding, so a constant scale after it costs no pass over the output
// (passes/fold_scale: attention's 1/sqrt(d)).
void inferMatMul(InferContext& ctx) {
  requireRank(ctx, 0, 1, kAnyRank);
  requireRank(ctx, 1, 1, kAnyRank);
  requireNumeric(ctx, 0);
  requireSameDType(ctx, 0, 1);
  Shape a = ctx.shape(0), b = ctx.shape(1);
  bool a_vec = a.size() == 1, b_vec = b.size() == 1;
  bool trans_a = ctx.node().i("transA") != 0, trans_b = ctx.node().i("transB") != 0;
  if ((trans_a && a_vec) || (trans_b && b_vec)) ctx.fail("transA/transB need a matrix operand");
  if (trans_a) std::swap(a[a.size() - 1], a[a.size() - 2]);
  if (trans_b) std::swap(b[b.size() - 1], b[b.size() - 2]);
  if (a_vec) a.insert(a.begin(), 1);
  if (b_vec) b.push_back(1);
  int64_t k_a = a.back(), k_b = b[b.size() - 2];
  if (k_a != k_b) ctx.fail("inner dims differ: ", k_a, " vs ", k_b);
  Shape out = broadcastShapes(ctx, Shape(a.begin(), a.end() - 2), Shape(b.begin(), b.end() - 2));
  if (!a_vec) out.push_back(a[a.size() - 2]);
  if (!b_vec) out.push_back(b.back());
  ctx.setOutput(0, ctx.dtype(0), out);
}

OpSchema matMul() {
  OpSchema s;
  s.name = "MatMul";
  s.min_inputs = s.max_inputs = 2;
  s.attrs = {{"alpha", AttrKind::Float, 1.0},
             {"transA", AttrKind::Int, int64_t{0}},
             {"transB", AttrKind::Int, int64_t{0}}};
  s.infer = inferMatMul;
  return s;
}

OpSchema dropout() {
  OpSchema s;
  s.name = "Dropout";
  s.max_inputs = 2;  // optional: the optimizer step (training plans; see seed-dropout)
  s.max_outputs = 2;
  s.attrs = {{"ratio", AttrKind::Float, 0.5},
             {"seed", AttrKind::Int, int64_t{0}},
             {"training_mode", AttrKind::Int, int64_t{0}}};
  s.infer = [](InferContext& ctx) {
    requireFloat(ctx, 0);
    double ratio = ctx.node().f("ratio");
    if (!(ratio >= 0.0 && ratio < 1.0)) ctx.fail("ratio ", ratio, " must lie in [0, 1)");
    if (ctx.hasInput(1) && !(ctx.input(1).dtype == DType::I64 && ctx.input(1).numel() == 1))
      ctx.fail("the step input must be an i64 scalar, is ", ctx.input(1).toString());
    ctx.setOutput(0, ctx.input(0));
    if (ctx.numOutputs() > 1) ctx.setOutput(1, DType::Bool, ctx.shape(0));
  };
  return s;
}

}  // namespace

void registerNnOps(OpRegistry& r) {
  r.add(conv());
  r.add(maxPool());
  r.add(averagePool());
  r.add(globalAveragePool());
  r.add(batchNorm());
  r.add(gemm());
  r.add(matMul());
  r.add(dropout());
}

}  // namespace ds
