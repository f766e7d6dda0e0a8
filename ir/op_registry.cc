#include "ir/op_registry.h"

#include <algorithm>

#include "ir/ops/ops.h"

namespace ds {

InferContext::InferContext(const Node& node) : node_(node), outputs_(node.numOutputs()) {}

const TensorType& InferContext::input(size_t i) const {
  if (!node_.hasInput(i)) fail("input ", i, " is required here");
  return node_.input(i)->type();
}

const Tensor* InferContext::constant(size_t i) const {
  if (!node_.hasInput(i)) return nullptr;
  const Value* v = node_.input(i);
  return v->role() == Role::Constant && v->hasData() ? &v->data() : nullptr;
}

int64_t InferContext::axis(int64_t axis, int64_t rank) const {
  if (axis < -rank || axis >= std::max<int64_t>(rank, 1))
    fail("axis ", axis, " is out of range for rank ", rank);
  return axis < 0 ? axis + rank : axis;
}

std::string InferContext::inputTypesString() const {
  std::string s;
  for (size_t i = 0; i < node_.numInputs(); ++i) {
    if (i) s += ", ";
    s += node_.hasInput(i) ? node_.input(i)->type().toString() : "none";
  }
  return s;
}

const AttrSpec* OpSchema::findAttr(const std::string& attr) const {
  for (const AttrSpec& a : attrs)
    if (a.name == attr) return &a;
  return nullptr;
}

const OpRegistry& OpRegistry::instance() {
  static const OpRegistry registry = [] {
    OpRegistry r;
    registerElementwiseOps(r);
    registerNnOps(r);
    registerReductionOps(r);
    registerShapeOps(r);
    registerTrainingOps(r);
    registerOptimizerOps(r);
    registerCollectiveOps(r);
    registerAttentionOps(r);
    std::sort(r.schemas_.begin(), r.schemas_.end(),
              [](const OpSchema& a, const OpSchema& b) { return a.name < b.name; });
    return r;
  }();
  return registry;
}

void OpRegistry::add(OpSchema schema) {
  DS_CHECK(find(schema.name) == nullptr, "op '", schema.name, "' registered twice");
  DS_CHECK(schema.infer != nullptr, "op '", schema.name, "' has no shape rule");
  schemas_.push_back(std::move(schema));
}

const OpSchema* OpRegistry::find(const std::string& op) const {
  for (const OpSchema& s : schemas_)
    if (s.name == op) return &s;
  return nullptr;
}

const OpSchema& OpRegistry::get(const std::string& op) const {
  const OpSchema* s = find(op);
  DS_CHECK(s != nullptr, "unknown op '", op, "'");
  return *s;
}

std::vector<std::string> OpRegistry::names() const {
  std::vector<std::string> out;
  for (const OpSchema& s : schemas_) out.push_back(s.name);
  return out;
}

std::vector<TensorType> inferOutputTypes(const Node& node) {
  const OpSchema& s = node.schema();
  auto count = static_cast<int>(node.numInputs());
  DS_CHECK(count >= s.min_inputs && count <= s.max_inputs, node.describe(), ": takes ",
           s.min_inputs, s.max_inputs == s.min_inputs ? "" : " or more", " inputs, got ", count);
  auto outs = static_cast<int>(node.numOutputs());
  DS_CHECK(outs >= s.min_outputs && outs <= s.max_outputs, node.describe(), ": has ", s.min_outputs,
           s.max_outputs == s.min_outputs ? "" : " or more", " outputs, got ", outs);
  for (int i = 0; i < s.min_inputs; ++i)
    DS_CHECK(node.hasInput(static_cast<size_t>(i)), node.describe(), ": required input ", i,
             " is missing");
  for (const auto& [name, value] : node.attrs()) {
    const AttrSpec* spec = s.findAttr(name);
    DS_CHECK(spec != nullptr, node.describe(), ": unknown attribute '", name, "'");
    DS_CHECK(attrKind(value) == spec->kind, node.describe(), ": attribute '", name, "' must be ",
             attrKindName(spec->kind), ", is ", attrKindName(attrKind(value)));
  }
  InferContext ctx(node);
  s.infer(ctx);
  return std::move(ctx.outputs());
}

AttributeMap attrsWithDefaults(const Node& node) {
  AttributeMap attrs = node.attrs();
  for (const AttrSpec& spec : node.schema().attrs)
    if (spec.default_value && !attrs.count(spec.name)) attrs[spec.name] = *spec.default_value;
  return attrs;
}

Shape broadcastShapes(const InferContext& ctx, const Shape& a, const Shape& b) {
  size_t rank = std::max(a.size(), b.size());
  Shape out(rank);
  for (size_t i = 0; i < rank; ++i) {
    int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    if (da != db && da != 1 && db != 1)
      ctx.fail("shapes ", shapeToString(a), " and ", shapeToString(b), " do not broadcast");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

}  // namespace ds
