// The SSA graph IR. A Graph owns Values and Nodes; every Value is defined once,
// either by a Node (activations, gradients, ...) or as a source of the graph
// (inputs, labels, parameters, buffers, constants). Use-def links are kept in
// sync by the mutators here, so passes never edit edges by hand.
#pragma once

#include <algorithm>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "ir/attribute.h"
#include "ir/tensor.h"

namespace ds {

class Node;
class Graph;
struct OpSchema;

// What a value is for; decides where it lives in a plan and how it is initialised.
enum class Role : uint8_t {
  Input,           // fed by the data pipeline
  Label,           // fed by the data pipeline, used only by the loss
  Parameter,       // trainable weight
  Buffer,          // persistent, not trained (BatchNorm running statistics)
  Constant,        // compile-time constant
  Activation,      // produced in forward
  Gradient,        // produced in backward
  OptimizerState,  // persistent optimizer moments, master weights
  CommBuffer,      // communication staging
};
inline constexpr int kNumRoles = 9;
const char* roleName(Role r);
bool parseRole(std::string_view s, Role* out);
bool isSourceRole(Role r);  // defined without a producer node

// When a node runs within an optimizer step of gradient_accumulation_steps
// micro-steps (lowered to planpb::Phase). Forward, backward and gradient
// accumulation run every micro-step; the optimizer-step nodes (gradient norm,
// clipping, the update, resetting the accumulators) run once, after the last.
// Nothing in the micro-step phase may read a value the optimizer step computes;
// it reads persistent state instead (the verifier checks this).
enum class Phase : uint8_t { EveryMicroStep, OptimizerStep };

// A sharded source (ZeRO): N ranks each hold one contiguous shard of a flat
// buffer that packs whole tensors (`pieces`, each at an element offset) and is
// zero-padded to N*k elements; rank r holds elements [r*k, (r+1)*k). The value's
// type is one shard, [k]; its data, when it has any, is the whole flat buffer
// [N*k], from which each rank takes its own shard. Pieces are named by the tensor
// they pack (a parameter, or its optimizer state "W.exp_avg"), so checkpoints and
// exports can put whole tensors back together from any layout.
struct ShardPiece {
  std::string name;
  Shape shape;
  int64_t offset = 0;  // in elements, within the flat buffer
};
struct ShardLayout {
  int64_t world_size = 1;
  std::vector<ShardPiece> pieces;
  int64_t shardElements() const;  // k: the packed elements, padded, divided by N
};

class Value {
 public:
  const std::string& name() const { return name_; }
  const TensorType& type() const { return type_; }
  DType dtype() const { return type_.dtype; }
  const Shape& shape() const { return type_.shape; }
  int64_t rank() const { return type_.rank(); }
  Role role() const { return role_; }
  Node* producer() const { return producer_; }
  // One entry per use: a node that reads the value twice appears twice.
  const std::vector<Node*>& users() const { return users_; }
  bool hasData() const { return data_ != nullptr; }
  // Non-null for a sharded source (see ShardLayout).
  const ShardLayout* shardLayout() const { return shard_layout_.get(); }
  // The type of the data: the whole flat buffer for a sharded source, else type().
  TensorType dataType() const;
  const Tensor& data() const;  // initial or constant value
  std::shared_ptr<const Tensor> dataPtr() const { return data_; }

  void setType(TensorType t) { type_ = std::move(t); }
  void setRole(Role r) { role_ = r; }
  void setData(std::shared_ptr<const Tensor> data) { data_ = std::move(data); }

 private:
  friend class Graph;
  friend class Node;
  Value(std::string name, TensorType type, Role role)
      : name_(std::move(name)), type_(std::move(type)), role_(role) {}
  void removeUser(Node* n);

  std::string name_;
  TensorType type_;
  Role role_;
  Node* producer_ = nullptr;
  std::vector<Node*> users_;
  std::shared_ptr<const Tensor> data_;
  std::shared_ptr<const ShardLayout> shard_layout_;
};

class Node {
 public:
  const std::string& op() const { return op_; }
  const std::string& name() const { return name_; }
  const OpSchema& schema() const { return *schema_; }
  Graph& graph() const { return *graph_; }

  const std::vector<Value*>& inputs() const { return inputs_; }
  const std::vector<Value*>& outputs() const { return outputs_; }
  size_t numInputs() const { return inputs_.size(); }
  size_t numOutputs() const { return outputs_.size(); }
  // Optional inputs may be absent (nullptr); hasInput says whether input i is present.
  bool hasInput(size_t i) const { return i < inputs_.size() && inputs_[i] != nullptr; }
  Value* input(size_t i) const { return inputs_.at(i); }
  Value* output(size_t i) const { return outputs_.at(i); }
  void setInput(size_t i, Value* v);
  void addInput(Value* v);

  // Attributes; reads fall back to the schema's default and fail if there is none.
  const AttributeMap& attrs() const { return attrs_; }
  bool hasAttr(const std::string& name) const { return attrs_.count(name) != 0; }
  const Attribute& attr(const std::string& name) const;
  int64_t i(const std::string& name) const;
  double f(const std::string& name) const;
  const std::string& s(const std::string& name) const;
  const std::vector<int64_t>& ints(const std::string& name) const;
  const std::vector<double>& floats(const std::string& name) const;
  const Tensor& t(const std::string& name) const;
  void setAttr(const std::string& name, Attribute value) { attrs_[name] = std::move(value); }
  void removeAttr(const std::string& name) { attrs_.erase(name); }

  Phase phase() const { return phase_; }
  void setPhase(Phase p) { phase_ = p; }
  // Runs on the host CPU rather than the device: optimizer offload
  // (passes/offload_optimizer.h). Its inputs and outputs live in host memory.
  bool onHost() const { return on_host_; }
  void setOnHost(bool on_host) { on_host_ = on_host; }

  // "node 'conv1' (Conv)": the prefix every diagnostic about a node starts with.
  std::string describe() const;

 private:
  friend class Graph;
  Node() = default;

  Graph* graph_ = nullptr;
  const OpSchema* schema_ = nullptr;
  std::string op_;
  std::string name_;
  std::vector<Value*> inputs_;
  std::vector<Value*> outputs_;
  AttributeMap attrs_;
  Phase phase_ = Phase::EveryMicroStep;
  bool on_host_ = false;
  std::list<std::unique_ptr<Node>>::iterator position_;
};

class Graph {
 public:
  using NodeList = std::list<std::unique_ptr<Node>>;

  explicit Graph(std::string name = "main") : name_(std::move(name)) {}
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  const std::string& name() const { return name_; }
  void setName(std::string n) { name_ = std::move(n); }

  // Sources: values defined without a node, in declaration order.
  Value* addSource(const std::string& name, TensorType type, Role role,
                   std::shared_ptr<const Tensor> data = nullptr);
  Value* addConstant(const std::string& name, Tensor data);
  // A sharded source of `layout` (type [k], data [N*k]; see ShardLayout).
  Value* addShardedSource(const std::string& name, DType dtype, Role role, ShardLayout layout,
                          std::shared_ptr<const Tensor> data = nullptr);
  const std::vector<Value*>& sources() const { return sources_; }
  std::vector<Value*> sourcesWithRole(Role role) const;
  std::vector<Value*> feeds() const;  // inputs and labels

  // Creates a node at the end (or before `before`). Output types are inferred by the
  // op's schema; names are fresh unless given. Throws ds::Error on a bad node.
  Node* addNode(const std::string& op, std::vector<Value*> inputs, AttributeMap attrs = {},
                std::vector<std::string> output_names = {}, const std::string& node_name = "",
                Node* before = nullptr);
  // Same, with the number of outputs when the names are left to the graph.
  Node* addNodeN(const std::string& op, std::vector<Value*> inputs, AttributeMap attrs,
                 size_t num_outputs, const std::string& node_name = "", Node* before = nullptr);
  // Appends an output to `node` (an op with optional trailing outputs, once its
  // attributes ask for it) and re-infers the node's types. Throws if inference fails.
  Value* addNodeOutput(Node* node, const std::string& name);
  // Creates a node whose output types are given, without running inference (parser).
  Node* addNodeTyped(const std::string& op, std::vector<Value*> inputs, AttributeMap attrs,
                     const std::vector<std::pair<std::string, TensorType>>& outputs,
                     const std::string& node_name);

  const NodeList& nodes() const { return nodes_; }
  // The node after `node` in program order, or nullptr at the end.
  Node* nextNode(const Node* node) const;
  size_t numNodes() const { return nodes_.size(); }
  // Removes a node whose outputs are unused (and not graph outputs).
  void eraseNode(Node* node);
  // Removes a source value that nothing uses.
  void eraseSource(Value* value);
  void replaceAllUsesWith(Value* from, Value* to);

  const std::vector<Value*>& outputs() const { return outputs_; }
  bool isOutput(const Value* v) const {
    return std::find(outputs_.begin(), outputs_.end(), v) != outputs_.end();
  }
  void addOutput(Value* v) { outputs_.push_back(v); }
  void setOutput(size_t i, Value* v) { outputs_.at(i) = v; }
  void clearOutputs() { outputs_.clear(); }

  // Nodes created while a PhaseScope is alive get its phase (the default phase is
  // EveryMicroStep); passes that append optimizer-step nodes open one.
  class PhaseScope {
   public:
    PhaseScope(Graph& g, Phase p) : g_(g), saved_(g.insertion_phase_) { g.insertion_phase_ = p; }
    ~PhaseScope() { g_.insertion_phase_ = saved_; }
    PhaseScope(const PhaseScope&) = delete;
    PhaseScope& operator=(const PhaseScope&) = delete;

   private:
    Graph& g_;
    Phase saved_;
  };

  // State updates: at the end of a step, `state` (a parameter, buffer or optimizer
  // state source) takes the value `next` computed by a node. Lowering stores `next`
  // in the state's own memory, so nothing may read `state` after `next` is produced.
  // A state may be updated more than once (a gradient accumulator is added to every
  // micro-step and reset by the optimizer step): the updates form a chain in node
  // order, each reading the state's memory as the previous one left it.
  struct StateUpdate {
    Value* state;
    Value* next;
  };
  void addStateUpdate(Value* state, Value* next);
  // Makes `replacement` (computed after `next`) the update of `state` instead.
  void replaceStateUpdate(Value* state, Value* next, Value* replacement);
  const std::vector<StateUpdate>& stateUpdates() const { return state_updates_; }

  Value* findValue(const std::string& name) const;
  Value* value(const std::string& name) const;  // throws if missing
  std::string uniqueName(const std::string& prefix);
  size_t numValues() const { return values_.size(); }

  // Re-runs shape inference on a node and stores the result in its outputs.
  void inferTypes(Node* node);

 private:
  Value* newValue(const std::string& name, TensorType type, Role role);
  Node* insertNode(const std::string& op, std::vector<Value*> inputs, AttributeMap attrs,
                   const std::string& node_name, Node* before);
  void eraseValue(Value* v);

  std::string name_;
  std::unordered_map<std::string, std::unique_ptr<Value>> values_;
  std::vector<Value*> sources_;
  std::vector<Value*> outputs_;
  std::vector<StateUpdate> state_updates_;
  Phase insertion_phase_ = Phase::EveryMicroStep;
  NodeList nodes_;
  std::unordered_map<std::string, int64_t> name_counters_;
};

}  // namespace ds
