#include "ir/graph.h"

#include <algorithm>
#include <array>

#include "ir/error.h"
#include "ir/op_registry.h"

namespace ds {

namespace {
constexpr std::array<const char*, kNumRoles> kRoleNames = {
    "input", "label", "param", "buffer", "const", "activation", "grad", "optstate", "comm"};
static_assert(static_cast<int>(Role::CommBuffer) + 1 == kNumRoles);
}  // namespace

const char* roleName(Role r) {
  return kRoleNames[static_cast<size_t>(r)];
}

bool parseRole(std::string_view s, Role* out) {
  for (size_t i = 0; i < kRoleNames.size(); ++i) {
    if (s == kRoleNames[i]) {
      *out = static_cast<Role>(i);
      return true;
    }
  }
  return false;
}

bool isSourceRole(Role r) {
  return r == Role::Input || r == Role::Label || r == Role::Parameter || r == Role::Buffer ||
         r == Role::Constant || r == Role::OptimizerState;
}

int64_t ShardLayout::shardElements() const {
  int64_t end = 0;
  for (const ShardPiece& p : pieces) end = std::max(end, p.offset + numElements(p.shape));
  return (end + world_size - 1) / world_size;
}

TensorType Value::dataType() const {
  if (!shard_layout_) return type_;
  return {type_.dtype, {type_.numel() * shard_layout_->world_size}};
}

const Tensor& Value::data() const {
  DS_CHECK(data_ != nullptr, "value '", name_, "' has no data");
  return *data_;
}

void Value::removeUser(Node* n) {
  auto it = std::find(users_.begin(), users_.end(), n);
  if (it != users_.end()) users_.erase(it);
}

// ---- Node ----

void Node::setInput(size_t i, Value* v) {
  Value*& slot = inputs_.at(i);
  if (slot) slot->removeUser(this);
  slot = v;
  if (v) v->users_.push_back(this);
}

void Node::addInput(Value* v) {
  inputs_.push_back(v);
  if (v) v->users_.push_back(this);
}

std::string Node::describe() const {
  return "node '" + name_ + "' (" + op_ + ")";
}

const Attribute& Node::attr(const std::string& name) const {
  if (auto it = attrs_.find(name); it != attrs_.end()) return it->second;
  const AttrSpec* spec = schema_->findAttr(name);
  DS_CHECK(spec != nullptr, describe(), ": op has no attribute '", name, "'");
  DS_CHECK(spec->default_value.has_value(), describe(), ": required attribute '", name,
           "' is missing");
  return *spec->default_value;
}

namespace {
template <typename T>
const T& attrAs(const Node& n, const std::string& name, AttrKind kind) {
  const Attribute& a = n.attr(name);
  const T* v = std::get_if<T>(&a);
  DS_CHECK(v != nullptr, n.describe(), ": attribute '", name, "' must be ", attrKindName(kind),
           ", is ", attrKindName(attrKind(a)));
  return *v;
}
}  // namespace

int64_t Node::i(const std::string& name) const {
  return attrAs<int64_t>(*this, name, AttrKind::Int);
}
double Node::f(const std::string& name) const {
  return attrAs<double>(*this, name, AttrKind::Float);
}
const std::string& Node::s(const std::string& name) const {
  return attrAs<std::string>(*this, name, AttrKind::String);
}
const std::vector<int64_t>& Node::ints(const std::string& name) const {
  return attrAs<std::vector<int64_t>>(*this, name, AttrKind::Ints);
}
const std::vector<double>& Node::floats(const std::string& name) const {
  return attrAs<std::vector<double>>(*this, name, AttrKind::Floats);
}
const Tensor& Node::t(const std::string& name) const {
  return attrAs<Tensor>(*this, name, AttrKind::Tensor);
}

// ---- Graph ----

Value* Graph::newValue(const std::string& name, TensorType type, Role role) {
  DS_CHECK(!name.empty(), "graph '", name_, "': value with an empty name");
  DS_CHECK(values_.count(name) == 0, "graph '", name_, "': value '", name, "' defined twice");
  auto* v = new Value(name, std::move(type), role);
  values_.emplace(name, std::unique_ptr<Value>(v));
  return v;
}

Value* Graph::addSource(const std::string& name, TensorType type, Role role,
                        std::shared_ptr<const Tensor> data) {
  DS_CHECK(isSourceRole(role), "value '", name, "': role ", roleName(role),
           " cannot be a graph source");
  if (data)
    DS_CHECK(data->type() == type, "value '", name, "': data ", data->type().toString(),
             " does not match type ", type.toString());
  Value* v = newValue(name, std::move(type), role);
  v->data_ = std::move(data);
  sources_.push_back(v);
  return v;
}

Value* Graph::addShardedSource(const std::string& name, DType dtype, Role role, ShardLayout layout,
                               std::shared_ptr<const Tensor> data) {
  DS_CHECK(layout.world_size >= 1 && !layout.pieces.empty(), "value '", name,
           "': a shard layout needs a world size and at least one piece");
  Value* v = addSource(name, {dtype, {layout.shardElements()}}, role);
  v->shard_layout_ = std::make_shared<const ShardLayout>(std::move(layout));
  if (data)
    DS_CHECK(data->type() == v->dataType(), "value '", name, "': data ", data->type().toString(),
             " does not match the flat buffer ", v->dataType().toString());
  v->data_ = std::move(data);
  return v;
}

Value* Graph::addConstant(const std::string& name, Tensor data) {
  TensorType type = data.type();
  return addSource(name, std::move(type), Role::Constant,
                   std::make_shared<const Tensor>(std::move(data)));
}

Node* Graph::nextNode(const Node* node) const {
  auto it = std::next(node->position_);
  return it == nodes_.end() ? nullptr : it->get();
}

std::vector<Value*> Graph::sourcesWithRole(Role role) const {
  std::vector<Value*> out;
  for (Value* v : sources_)
    if (v->role() == role) out.push_back(v);
  return out;
}

std::vector<Value*> Graph::feeds() const {
  std::vector<Value*> out;
  for (Value* v : sources_)
    if (v->role() == Role::Input || v->role() == Role::Label) out.push_back(v);
  return out;
}

Node* Graph::insertNode(const std::string& op, std::vector<Value*> inputs, AttributeMap attrs,
                        const std::string& node_name, Node* before) {
  const OpSchema& schema = OpRegistry::instance().get(op);
  auto node = std::unique_ptr<Node>(new Node());
  Node* n = node.get();
  n->graph_ = this;
  n->schema_ = &schema;
  n->op_ = op;
  n->name_ = node_name.empty() ? uniqueName(op) : node_name;
  n->attrs_ = std::move(attrs);
  n->phase_ = insertion_phase_;
  for (Value* v : inputs) n->addInput(v);
  n->position_ = nodes_.insert(before ? before->position_ : nodes_.end(), std::move(node));
  return n;
}

Node* Graph::addNode(const std::string& op, std::vector<Value*> inputs, AttributeMap attrs,
                     std::vector<std::string> output_names, const std::string& node_name,
                     Node* before) {
  if (output_names.empty()) output_names.push_back("");
  Node* n = insertNode(op, std::move(inputs), std::move(attrs), node_name, before);
  try {
    for (std::string& name : output_names) {
      Value* v = newValue(name.empty() ? uniqueName(n->name_) : name, {}, Role::Activation);
      v->producer_ = n;
      n->outputs_.push_back(v);
    }
    inferTypes(n);
  } catch (...) {
    for (Value* v : n->outputs_) values_.erase(v->name());
    n->outputs_.clear();
    for (size_t i = 0; i < n->inputs_.size(); ++i) n->setInput(i, nullptr);
    nodes_.erase(n->position_);
    throw;
  }
  return n;
}

Node* Graph::addNodeN(const std::string& op, std::vector<Value*> inputs, AttributeMap attrs,
                      size_t num_outputs, const std::string& node_name, Node* before) {
  return addNode(op, std::move(inputs), std::move(attrs), std::vector<std::string>(num_outputs),
                 node_name, before);
}

Value* Graph::addNodeOutput(Node* node, const std::string& name) {
  Value* v = newValue(name, {}, Role::Activation);
  v->producer_ = node;
  node->outputs_.push_back(v);
  try {
    inferTypes(node);
  } catch (...) {
    node->outputs_.pop_back();
    values_.erase(v->name());
    throw;
  }
  return v;
}

Node* Graph::addNodeTyped(const std::string& op, std::vector<Value*> inputs, AttributeMap attrs,
                          const std::vector<std::pair<std::string, TensorType>>& outputs,
                          const std::string& node_name) {
  Node* n = insertNode(op, std::move(inputs), std::move(attrs), node_name, nullptr);
  for (const auto& [name, type] : outputs) {
    Value* v = newValue(name, type, Role::Activation);
    v->producer_ = n;
    n->outputs_.push_back(v);
  }
  return n;
}

void Graph::inferTypes(Node* node) {
  std::vector<TensorType> types = inferOutputTypes(*node);
  for (size_t i = 0; i < node->numOutputs(); ++i) node->outputs_[i]->type_ = std::move(types[i]);
}

void Graph::eraseValue(Value* v) {
  DS_CHECK(v->users_.empty(), "cannot erase value '", v->name(), "': it still has users");
  DS_CHECK(std::find(outputs_.begin(), outputs_.end(), v) == outputs_.end(), "cannot erase value '",
           v->name(), "': it is a graph output");
  for (const StateUpdate& u : state_updates_)
    DS_CHECK(u.state != v && u.next != v, "cannot erase value '", v->name(),
             "': it takes part in a state update");
  values_.erase(v->name());
}

void Graph::eraseNode(Node* node) {
  for (Value* v : node->outputs_) eraseValue(v);
  node->outputs_.clear();
  for (size_t i = 0; i < node->inputs_.size(); ++i) node->setInput(i, nullptr);
  nodes_.erase(node->position_);
}

void Graph::eraseSource(Value* value) {
  DS_CHECK(value->producer_ == nullptr, "value '", value->name(), "' is not a source");
  sources_.erase(std::find(sources_.begin(), sources_.end(), value));
  eraseValue(value);
}

void Graph::replaceAllUsesWith(Value* from, Value* to) {
  std::vector<Node*> users = from->users_;
  for (Node* n : users)
    for (size_t i = 0; i < n->inputs_.size(); ++i)
      if (n->inputs_[i] == from) n->setInput(i, to);
  for (Value*& out : outputs_)
    if (out == from) out = to;
  for (StateUpdate& u : state_updates_)
    if (u.next == from) u.next = to;
}

void Graph::addStateUpdate(Value* state, Value* next) {
  DS_CHECK(state->producer() == nullptr && isSourceRole(state->role()) &&
               state->role() != Role::Input && state->role() != Role::Label &&
               state->role() != Role::Constant,
           "state update: '", state->name(), "' (", roleName(state->role()),
           ") is not a parameter, buffer or optimizer state");
  DS_CHECK(next->producer() != nullptr, "state update: '", next->name(), "' is not computed");
  DS_CHECK(state->type() == next->type(), "state update: '", next->name(), "' is ",
           next->type().toString(), " but '", state->name(), "' is ", state->type().toString());
  for (const StateUpdate& u : state_updates_)
    DS_CHECK(u.next != next, "state update: '", next->name(), "' is already the update of '",
             u.state->name(), "'");
  state_updates_.push_back({state, next});
}

void Graph::replaceStateUpdate(Value* state, Value* next, Value* replacement) {
  for (StateUpdate& u : state_updates_) {
    if (u.state != state || u.next != next) continue;
    DS_CHECK(replacement->producer() != nullptr && replacement->type() == state->type(),
             "state update: '", replacement->name(), "' cannot update '", state->name(), "'");
    u.next = replacement;
    return;
  }
  throw makeError("state update: '", next->name(), "' does not update '", state->name(), "'");
}

Value* Graph::findValue(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() ? nullptr : it->second.get();
}

Value* Graph::value(const std::string& name) const {
  Value* v = findValue(name);
  DS_CHECK(v != nullptr, "graph '", name_, "' has no value '", name, "'");
  return v;
}

std::string Graph::uniqueName(const std::string& prefix) {
  int64_t& counter = name_counters_[prefix];
  std::string name;
  do {
    name = prefix + "_" + std::to_string(counter++);
  } while (values_.count(name) != 0);
  return name;
}

}  // namespace ds
