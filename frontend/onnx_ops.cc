// Per-op conversion from ONNX nodes to the IR's canonical forms. Most ops map
// one to one; the table below lists the ones whose ONNX form varies by opset or
// takes constant inputs that the IR keeps as attributes.
#include <onnx/onnx_pb.h>

#include <algorithm>

#include "frontend/onnx_internal.h"
#include "ir/error.h"

namespace ds {

std::string OnnxNode::describe() const {
  return "node '" + name + "' (" + proto.op_type() + ", opset " + std::to_string(opset) + ")";
}

const Tensor& OnnxNode::constantInput(size_t i, const char* what) const {
  DS_CHECK(hasInput(i), describe(), ": input '", what, "' is required");
  Value* v = inputs[i];
  DS_CHECK((v->role() == Role::Constant || v->role() == Role::Parameter) && v->hasData(),
           describe(), ": input '", what, "' ('", v->name(), "') must be a compile-time constant");
  // A float initializer imports as a parameter; read as an attribute it is a
  // constant of the model (torch.onnx's constant folding writes Clip's bounds so),
  // for every node that reads it: none trains a value another has fixed.
  if (v->role() == Role::Parameter) v->setRole(Role::Constant);
  return v->data();
}

std::vector<Value*> OnnxNode::emit(const std::string& op, std::vector<Value*> ins,
                                   AttributeMap node_attrs, size_t num_outputs) {
  while (!ins.empty() && ins.back() == nullptr) ins.pop_back();
  std::vector<std::string> names(num_outputs);
  for (size_t i = 0; i < num_outputs && i < outputs.size(); ++i) names[i] = outputs[i];
  Node* node = graph.addNode(op, std::move(ins), std::move(node_attrs), names, name);
  return node->outputs();
}

namespace {

// Number of ONNX outputs actually named (trailing optional outputs may be omitted).
size_t usedOutputs(const OnnxNode& n) {
  size_t count = 0;
  for (size_t i = 0; i < n.outputs.size(); ++i)
    if (!n.outputs[i].empty()) count = i + 1;
  return std::max<size_t>(count, 1);
}

std::vector<Value*> passThrough(OnnxNode& n) {
  return n.emit(n.proto.op_type(), n.inputs, n.attrs, usedOutputs(n));
}

// Moves optional constant input i into integer-list attribute `attr`.
void inputToInts(OnnxNode& n, size_t i, const char* attr) {
  if (n.hasInput(i)) n.attrs[attr] = n.constantInput(i, attr).toInts();
  if (i < n.inputs.size()) n.inputs[i] = nullptr;
}

std::vector<Value*> firstInputOnly(OnnxNode& n) {
  n.inputs.resize(1);
  return passThrough(n);
}

std::vector<Value*> convertConstant(OnnxNode& n) {
  DS_CHECK(n.attrs.size() == 1, n.describe(), ": needs exactly one value attribute");
  const auto& [key, value] = *n.attrs.begin();
  Tensor t;
  if (key == "value")
    t = std::get<Tensor>(value);
  else if (key == "value_float")
    t = Tensor::fromDoubles(DType::F32, {}, {std::get<double>(value)});
  else if (key == "value_int")
    t = Tensor::fromInts(DType::I64, {}, {std::get<int64_t>(value)});
  else if (key == "value_floats") {
    const auto& v = std::get<std::vector<double>>(value);
    t = Tensor::fromDoubles(DType::F32, {static_cast<int64_t>(v.size())}, v);
  } else if (key == "value_ints") {
    const auto& v = std::get<std::vector<int64_t>>(value);
    t = Tensor::fromInts(DType::I64, {static_cast<int64_t>(v.size())}, v);
  } else {
    throw makeError(n.describe(), ": attribute '", key, "' is not supported");
  }
  return {n.graph.addConstant(n.outputs.at(0), std::move(t))};
}

std::vector<Value*> convertIdentity(OnnxNode& n) {
  return {n.inputs.at(0)};
}

std::vector<Value*> convertCast(OnnxNode& n) {
  auto to = dtypeFromOnnx(static_cast<int32_t>(std::get<int64_t>(n.attrs.at("to"))));
  DS_CHECK(to.has_value(), n.describe(), ": cast to ",
           onnxTypeName(static_cast<int32_t>(std::get<int64_t>(n.attrs.at("to")))),
           " is not supported");
  n.attrs.erase("saturate");
  n.attrs["to"] = std::string(dtypeName(*to));
  return passThrough(n);
}

std::vector<Value*> convertSoftmax(OnnxNode& n) {
  if (n.opset >= 13) return passThrough(n);
  // Before opset 13 the input is coerced to 2-D at `axis` (default 1) and normalised
  // over everything after it; express that as Flatten, softmax over the last axis, Reshape.
  Value* x = n.inputs.at(0);
  int64_t axis = n.attrs.count("axis") ? std::get<int64_t>(n.attrs["axis"]) : 1;
  if (axis < 0) axis += x->rank();
  if (axis == x->rank() - 1) return n.emit(n.proto.op_type(), {x}, {{"axis", int64_t{-1}}}, 1);
  Value* flat =
      n.graph.addNode("Flatten", {x}, {{"axis", axis}}, {}, n.name + "/flatten")->output(0);
  Value* soft =
      n.graph.addNode(n.proto.op_type(), {flat}, {{"axis", int64_t{-1}}}, {}, n.name + "/softmax")
          ->output(0);
  return n.emit("Reshape", {soft}, {{"shape", x->shape()}}, 1);
}

std::vector<Value*> convertBatchNorm(OnnxNode& n) {
  size_t used = usedOutputs(n);
  if (n.opset < 14) {
    // Opsets up to 13 mark training by the optional outputs: Y, mean, var, saved mean, saved var.
    DS_CHECK(used <= 3, n.describe(), ": the saved_mean/saved_var outputs are not supported");
    n.attrs.erase("spatial");
    if (used > 1) n.attrs["training_mode"] = int64_t{1};
  }
  return n.emit("BatchNormalization", n.inputs, n.attrs, used);
}

std::vector<Value*> convertMaxPool(OnnxNode& n) {
  DS_CHECK(usedOutputs(n) == 1, n.describe(), ": the Indices output is not supported");
  return passThrough(n);
}

std::vector<Value*> convertSplit(OnnxNode& n) {
  if (n.opset >= 13) inputToInts(n, 1, "split");
  auto num = n.attrs.find("num_outputs");
  if (num != n.attrs.end()) {
    // Opset 18: num_outputs chunks of ceil(dim / n), the last one smaller.
    int64_t parts = std::get<int64_t>(num->second);
    n.attrs.erase(num);
    int64_t axis = n.attrs.count("axis") ? std::get<int64_t>(n.attrs["axis"]) : 0;
    const Shape& shape = n.inputs.at(0)->shape();
    if (axis < 0) axis += static_cast<int64_t>(shape.size());
    DS_CHECK(axis >= 0 && axis < static_cast<int64_t>(shape.size()) && parts > 0, n.describe(),
             ": bad axis or num_outputs");
    int64_t chunk = (shape[axis] + parts - 1) / parts;
    std::vector<int64_t> sizes;
    for (int64_t left = shape[axis]; left > 0; left -= chunk)
      sizes.push_back(std::min(chunk, left));
    n.attrs["split"] = sizes;
  }
  return n.emit("Split", {n.inputs.at(0)}, n.attrs, n.outputs.size());
}

std::vector<Value*> convertAxesInput(OnnxNode& n, int64_t since_opset) {
  if (n.opset >= since_opset) inputToInts(n, 1, "axes");
  return firstInputOnly(n);
}

std::vector<Value*> convertSlice(OnnxNode& n) {
  inputToInts(n, 1, "starts");
  inputToInts(n, 2, "ends");
  inputToInts(n, 3, "axes");
  inputToInts(n, 4, "steps");
  return firstInputOnly(n);
}

std::vector<Value*> convertDropout(OnnxNode& n) {
  if (n.opset >= 12) {
    if (n.hasInput(1)) n.attrs["ratio"] = n.constantInput(1, "ratio").getDouble(0);
    if (n.hasInput(2)) n.attrs["training_mode"] = n.constantInput(2, "training_mode").getInt(0);
  }
  return n.emit("Dropout", {n.inputs.at(0)}, n.attrs, usedOutputs(n));
}

// Clip: min and max are inputs (every supported opset); constant ones become
// attributes, an absent one leaves that side unbounded.
std::vector<Value*> convertClip(OnnxNode& n) {
  if (n.hasInput(1)) n.attrs["min"] = n.constantInput(1, "min").getDouble(0);
  if (n.hasInput(2)) n.attrs["max"] = n.constantInput(2, "max").getDouble(0);
  return firstInputOnly(n);
}

// Pad: constant mode, with constant pads (and axes, opset 18) and value; every axis's
// pads in the IR's attribute. All-zero pads (torch.onnx writes them before some
// AveragePools) are an Identity.
std::vector<Value*> convertPad(OnnxNode& n) {
  const std::string mode = n.attrs.count("mode") ? std::get<std::string>(n.attrs.at("mode")) : "";
  DS_CHECK(mode.empty() || mode == "constant", n.describe(), ": mode '", mode,
           "' is not supported (constant only)");
  const int64_t rank = n.inputs.at(0)->rank();
  const std::vector<int64_t> given = n.constantInput(1, "pads").toInts();
  std::vector<int64_t> axes;
  if (n.hasInput(3)) {
    for (int64_t a : n.constantInput(3, "axes").toInts()) axes.push_back(a < 0 ? a + rank : a);
  } else {
    for (int64_t a = 0; a < rank; ++a) axes.push_back(a);
  }
  DS_CHECK(given.size() == 2 * axes.size(), n.describe(), ": pads has ", given.size(),
           " values for ", axes.size(), " axes");
  std::vector<int64_t> pads(static_cast<size_t>(2 * rank), 0);
  std::vector<bool> seen(static_cast<size_t>(rank), false);
  for (size_t i = 0; i < axes.size(); ++i) {
    DS_CHECK(axes[i] >= 0 && axes[i] < rank, n.describe(), ": axis out of range");
    DS_CHECK(!seen[static_cast<size_t>(axes[i])], n.describe(), ": axis ", axes[i],
             " is given twice");
    seen[static_cast<size_t>(axes[i])] = true;
    pads[static_cast<size_t>(axes[i])] = given[i];
    pads[static_cast<size_t>(axes[i] + rank)] = given[i + axes.size()];
  }
  DS_CHECK(std::none_of(pads.begin(), pads.end(), [](int64_t p) { return p < 0; }), n.describe(),
           ": negative pads (cropping) are not supported");
  if (std::all_of(pads.begin(), pads.end(), [](int64_t p) { return p == 0; }))
    return n.emit("Identity", {n.inputs[0]}, {}, 1);
  double value = n.hasInput(2) ? n.constantInput(2, "constant_value").getDouble(0) : 0.0;
  return n.emit("Pad", {n.inputs[0]}, {{"pads", pads}, {"value", value}}, 1);
}

// alpha·x + beta (ONNX HardSigmoid before its clip to [0, 1]), as Mul and Add nodes.
Value* hardSigmoidInput(OnnxNode& n, Value* x, double alpha, double beta) {
  const std::string& at = n.name;
  auto scalar = [&](double v, const char* what) {
    return n.graph.addConstant(n.graph.uniqueName(at + "/" + what),
                               Tensor::fromDoubles(x->dtype(), {}, {v}));
  };
  Value* scaled =
      n.graph.addNode("Mul", {x, scalar(alpha, "alpha")}, {}, {}, at + "/scale")->output(0);
  return n.graph.addNode("Add", {scaled, scalar(beta, "beta")}, {}, {}, at + "/shift")->output(0);
}

const AttributeMap kUnitInterval = {{"min", 0.0}, {"max", 1.0}};

double floatAttr(const OnnxNode& n, const char* name, double fallback) {
  auto it = n.attrs.find(name);
  return it == n.attrs.end() ? fallback : std::get<double>(it->second);
}

// HardSigmoid and HardSwish (x·HardSigmoid(x) with alpha 1/6, beta 1/2; MobileNetV3's
// activations) decompose into element-wise nodes, which autodiff and the fusions know.
std::vector<Value*> convertHardSigmoid(OnnxNode& n) {
  Value* x = n.inputs.at(0);
  Value* linear = hardSigmoidInput(n, x, floatAttr(n, "alpha", 0.2), floatAttr(n, "beta", 0.5));
  return n.emit("Clip", {linear}, kUnitInterval, 1);
}

std::vector<Value*> convertHardSwish(OnnxNode& n) {
  Value* x = n.inputs.at(0);
  Value* gate = n.graph
                    .addNode("Clip", {hardSigmoidInput(n, x, 1.0 / 6, 0.5)}, kUnitInterval, {},
                             n.name + "/clip")
                    ->output(0);
  return n.emit("Mul", {x, gate}, {}, 1);
}

std::vector<Value*> convertTrilu(OnnxNode& n) {
  if (n.hasInput(1)) n.attrs["k"] = n.constantInput(1, "k").getInt(0);
  return firstInputOnly(n);
}

std::vector<Value*> convertNamedInput(OnnxNode& n, const char* attr) {
  inputToInts(n, 1, attr);
  return firstInputOnly(n);
}

}  // namespace

const std::map<std::string, OnnxConverter>& onnxConverters() {
  static const std::map<std::string, OnnxConverter> table = [] {
    std::map<std::string, OnnxConverter> t;
    for (const char* op : {"Conv",
                           "Relu",
                           "LeakyRelu",
                           "Sigmoid",
                           "Tanh",
                           "Erf",
                           "Gelu",
                           "AveragePool",
                           "GlobalAveragePool",
                           "Flatten",
                           "Gemm",
                           "MatMul",
                           "Add",
                           "Sub",
                           "Mul",
                           "Div",
                           "Pow",
                           "Sqrt",
                           "Log",
                           "Softplus",
                           "Neg",
                           "Not",
                           "LayerNormalization",
                           "Transpose",
                           "Concat",
                           "Gather",
                           "Where",
                           "Equal",
                           "Less",
                           "Greater",
                           "Shape",
                           "Range",
                           "ConstantOfShape",
                           "SoftmaxCrossEntropyLoss"})
      t[op] = passThrough;
    t["Constant"] = convertConstant;
    t["Identity"] = convertIdentity;
    t["Cast"] = convertCast;
    t["Softmax"] = convertSoftmax;
    t["LogSoftmax"] = convertSoftmax;
    t["BatchNormalization"] = convertBatchNorm;
    t["MaxPool"] = convertMaxPool;
    t["Split"] = convertSplit;
    t["Squeeze"] = [](OnnxNode& n) { return convertAxesInput(n, 13); };
    t["Unsqueeze"] = [](OnnxNode& n) { return convertAxesInput(n, 13); };
    t["ReduceSum"] = [](OnnxNode& n) { return convertAxesInput(n, 13); };
    t["ReduceMean"] = [](OnnxNode& n) { return convertAxesInput(n, 18); };
    t["ReduceSumSquare"] = [](OnnxNode& n) { return convertAxesInput(n, 18); };
    t["Slice"] = convertSlice;
    t["Dropout"] = convertDropout;
    t["Trilu"] = convertTrilu;
    t["Clip"] = convertClip;
    t["Pad"] = convertPad;
    t["HardSigmoid"] = convertHardSigmoid;
    t["HardSwish"] = convertHardSwish;
    t["Reshape"] = [](OnnxNode& n) { return convertNamedInput(n, "shape"); };
    t["Expand"] = [](OnnxNode& n) { return convertNamedInput(n, "shape"); };
    return t;
  }();
  return table;
}

}  // namespace ds
