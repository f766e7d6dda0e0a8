// Elementwise op schemas: unary activations and math, numpy-broadcasting binary
// ops, Where and Cast. Outputs keep the (broadcast) input shape.
#include <limits>
#include <string>
#include <vector>

#include "ir/op_registry.h"
#include "ir/ops/ops.h"
#include "ir/ops/shape_helpers.h"

namespace ds {
namespace {

enum class Accepts { Float, Numeric, Any };

void checkUnaryDType(const InferContext& ctx, Accepts accepts) {
  if (accepts == Accepts::Float) requireFloat(ctx, 0);
  if (accepts == Accepts::Numeric) requireNumeric(ctx, 0);
}

OpSchema unary(const std::string& name, Accepts accepts, std::vector<AttrSpec> attrs = {}) {
  OpSchema s;
  s.name = name;
  s.attrs = std::move(attrs);
  s.inplace_input = 0;
  s.infer = [accepts](InferContext& ctx) {
    checkUnaryDType(ctx, accepts);
    ctx.setOutput(0, ctx.input(0));
  };
  return s;
}

OpSchema gelu() {
  OpSchema s =
      unary("Gelu", Accepts::Float, {{"approximate", AttrKind::String, std::string("none")}});
  s.infer = [](InferContext& ctx) {
    requireOneOf(ctx, "approximate", ctx.node().s("approximate"), {"none", "tanh"});
    requireFloat(ctx, 0);
    ctx.setOutput(0, ctx.input(0));
  };
  return s;
}

// Add, Sub, Mul, Div: same numeric dtype on both sides, broadcast shape.
OpSchema arithmetic(const std::string& name) {
  OpSchema s;
  s.name = name;
  s.min_inputs = s.max_inputs = 2;
  s.inplace_input = 0;
  s.infer = [](InferContext& ctx) {
    requireNumeric(ctx, 0);
    requireSameDType(ctx, 0, 1);
    ctx.setOutput(0, ctx.dtype(0), broadcastShapes(ctx, ctx.shape(0), ctx.shape(1)));
  };
  return s;
}

OpSchema powOp() {
  OpSchema s = arithmetic("Pow");
  s.infer = [](InferContext& ctx) {
    requireNumeric(ctx, 0);
    requireNumeric(ctx, 1);
    ctx.setOutput(0, ctx.dtype(0), broadcastShapes(ctx, ctx.shape(0), ctx.shape(1)));
  };
  return s;
}

// Equal (any dtype), Less, Greater (numeric): same dtype on both sides, bool
// result, broadcast shape.
OpSchema comparison(const std::string& name) {
  OpSchema s = arithmetic(name);
  s.infer = [ordered = name != "Equal"](InferContext& ctx) {
    if (ordered) requireNumeric(ctx, 0);
    requireSameDType(ctx, 0, 1);
    ctx.setOutput(0, DType::Bool, broadcastShapes(ctx, ctx.shape(0), ctx.shape(1)));
  };
  return s;
}

OpSchema where() {
  OpSchema s;
  s.name = "Where";
  s.min_inputs = s.max_inputs = 3;
  s.infer = [](InferContext& ctx) {
    if (ctx.dtype(0) != DType::Bool)
      ctx.fail("condition (input 0) must be bool, is ", dtypeName(ctx.dtype(0)));
    requireSameDType(ctx, 1, 2);
    Shape xy = broadcastShapes(ctx, ctx.shape(1), ctx.shape(2));
    ctx.setOutput(0, ctx.dtype(1), broadcastShapes(ctx, ctx.shape(0), xy));
  };
  return s;
}

OpSchema logicalNot() {
  OpSchema s;
  s.name = "Not";
  s.infer = [](InferContext& ctx) {
    if (ctx.dtype(0) != DType::Bool) ctx.fail("input must be bool, is ", dtypeName(ctx.dtype(0)));
    ctx.setOutput(0, ctx.input(0));
  };
  return s;
}

OpSchema cast() {
  OpSchema s;
  s.name = "Cast";
  s.attrs = {{"to", AttrKind::String, std::nullopt}};
  s.infer = [](InferContext& ctx) {
    const std::string& to = ctx.node().s("to");
    std::optional<DType> t = parseDType(to);
    if (!t) ctx.fail("attribute 'to' names unknown dtype '", to, "'");
    ctx.setOutput(0, *t, ctx.shape(0));
  };
  return s;
}

}  // namespace

void registerElementwiseOps(OpRegistry& r) {
  for (const char* name : {"Relu", "Sigmoid", "Tanh", "Erf", "Sqrt", "Log", "Softplus"})
    r.add(unary(name, Accepts::Float));
  r.add(unary("Neg", Accepts::Numeric));
  r.add(unary("Identity", Accepts::Any));
  r.add(logicalNot());
  r.add(unary("LeakyRelu", Accepts::Float, {{"alpha", AttrKind::Float, 0.01}}));
  // Clip{min, max}: y = min(max(x, min), max); ONNX's min and max inputs (opset 11+)
  // are constants the importer makes attributes (ReLU6 is Clip{0, 6}).
  r.add(unary("Clip", Accepts::Numeric,
              {{"min", AttrKind::Float, -std::numeric_limits<double>::infinity()},
               {"max", AttrKind::Float, std::numeric_limits<double>::infinity()}}));
  r.add(gelu());
  for (const char* name : {"Add", "Sub", "Mul", "Div"}) r.add(arithmetic(name));
  r.add(powOp());
  for (const char* name : {"Equal", "Less", "Greater"}) r.add(comparison(name));
  r.add(where());
  r.add(cast());
}

}  // namespace ds
