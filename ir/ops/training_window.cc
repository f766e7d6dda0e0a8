// Backward op schemas of the sliding-window ops: ConvGradInput, ConvGradWeight,
// MaxPoolGrad and AveragePoolGrad. Each carries its forward op's attributes
// unchanged (so kernels reuse the window code) plus the shape it cannot infer
// from its inputs. The shape rule checks consistency by running the forward op's
// own rule on a scratch graph: the forward output it implies must be dY's type.
#include <string>
#include <vector>

#include "ir/op_registry.h"
#include "ir/ops/shape_helpers.h"

namespace ds {
namespace {

const std::vector<int64_t> kNoInts;

std::vector<AttrSpec> windowAttrs() {
  return {{"auto_pad", AttrKind::String, std::string("NOTSET")},
          {"dilations", AttrKind::Ints, kNoInts},
          {"pads", AttrKind::Ints, kNoInts},
          {"strides", AttrKind::Ints, kNoInts}};
}

// The forward `op` applied to inputs of the given types with the node's attributes
// (minus `extra`, the backward op's own) must produce dY's type (input 0).
void checkForward(const InferContext& ctx, const std::string& op,
                  const std::vector<TensorType>& inputs, const std::string& extra) {
  Graph scratch("scratch");
  std::vector<Value*> values;
  for (size_t i = 0; i < inputs.size(); ++i)
    values.push_back(scratch.addSource("in" + std::to_string(i), inputs[i], Role::Input));
  AttributeMap attrs = ctx.node().attrs();
  attrs.erase(extra);
  TensorType forward;
  try {
    forward = scratch.addNode(op, values, attrs)->output(0)->type();
  } catch (const Error& e) {
    ctx.fail("the forward ", op, " it differentiates is invalid: ", e.what());
  }
  if (forward != ctx.input(0))
    ctx.fail("dY must have the forward output type ", forward.toString());
}

// A shape attribute `attr` of the same rank as dY, with no negative dims.
Shape shapeAttr(const InferContext& ctx, const std::string& attr) {
  Shape s = ctx.node().ints(attr);
  if (static_cast<int64_t>(s.size()) != ctx.rank(0))
    ctx.fail("attribute '", attr, "' ", shapeToString(s), " must have rank ", ctx.rank(0));
  for (int64_t d : s)
    if (d < 0) ctx.fail("attribute '", attr, "' ", shapeToString(s), " has a negative dim");
  return s;
}

// ConvGradInput(dY, W){Conv attrs, input_shape} -> dX : input_shape.
void inferConvGradInput(InferContext& ctx) {
  requireFloat(ctx, 0);
  requireSameDType(ctx, 0, 1);
  Shape x = shapeAttr(ctx, "input_shape");
  checkForward(ctx, "Conv", {{ctx.dtype(0), x}, ctx.input(1)}, "input_shape");
  ctx.setOutput(0, ctx.dtype(0), x);
}

// ConvGradWeight(dY, X){Conv attrs, weight_shape} -> dW : weight_shape.
void inferConvGradWeight(InferContext& ctx) {
  requireFloat(ctx, 0);
  requireSameDType(ctx, 0, 1);
  Shape w = shapeAttr(ctx, "weight_shape");
  checkForward(ctx, "Conv", {ctx.input(1), {ctx.dtype(0), w}}, "weight_shape");
  ctx.setOutput(0, ctx.dtype(0), w);
}

OpSchema convGrad(const std::string& name, const std::string& shape_attr, InferFn infer) {
  OpSchema s;
  s.name = name;
  s.min_inputs = s.max_inputs = 2;
  s.attrs = windowAttrs();
  s.attrs.push_back({"group", AttrKind::Int, int64_t{1}});
  s.attrs.push_back({shape_attr, AttrKind::Ints, std::nullopt});
  s.attrs.push_back({"kernel_shape", AttrKind::Ints, kNoInts});
  s.infer = std::move(infer);
  return s;
}

// MaxPoolGrad(dY, X){MaxPool attrs} -> dX : X's type.
OpSchema maxPoolGrad() {
  OpSchema s;
  s.name = "MaxPoolGrad";
  s.min_inputs = s.max_inputs = 2;
  s.attrs = windowAttrs();
  s.attrs.push_back({"ceil_mode", AttrKind::Int, int64_t{0}});
  s.attrs.push_back({"kernel_shape", AttrKind::Ints, std::nullopt});
  s.attrs.push_back({"storage_order", AttrKind::Int, int64_t{0}});
  s.infer = [](InferContext& ctx) {
    requireFloat(ctx, 0);
    requireSameDType(ctx, 0, 1);
    checkForward(ctx, "MaxPool", {ctx.input(1)}, "");
    ctx.setOutput(0, ctx.input(1));
  };
  return s;
}

// AveragePoolGrad(dY){AveragePool attrs, input_shape} -> dX : input_shape.
OpSchema averagePoolGrad() {
  OpSchema s;
  s.name = "AveragePoolGrad";
  s.attrs = windowAttrs();
  s.attrs.push_back({"ceil_mode", AttrKind::Int, int64_t{0}});
  s.attrs.push_back({"count_include_pad", AttrKind::Int, int64_t{0}});
  s.attrs.push_back({"input_shape", AttrKind::Ints, std::nullopt});
  s.attrs.push_back({"kernel_shape", AttrKind::Ints, std::nullopt});
  s.infer = [](InferContext& ctx) {
    requireFloat(ctx, 0);
    Shape x = shapeAttr(ctx, "input_shape");
    checkForward(ctx, "AveragePool", {{ctx.dtype(0), x}}, "input_shape");
    ctx.setOutput(0, ctx.dtype(0), x);
  };
  return s;
}

}  // namespace

void registerTrainingWindowOps(OpRegistry& r) {
  r.add(convGrad("ConvGradInput", "input_shape", inferConvGradInput));
  r.add(convGrad("ConvGradWeight", "weight_shape", inferConvGradWeight));
  r.add(maxPoolGrad());
  r.add(averagePoolGrad());
}

}  // namespace ds
