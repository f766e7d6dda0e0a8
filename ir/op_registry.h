// The op registry: one schema per op (arity, attributes with defaults, and the
// dtype/shape rule). It is the single source of truth about an op's form;
// gradient rules, kernels and folding evaluators are keyed by the same name.
#pragma once

#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "ir/attribute.h"
#include "ir/error.h"
#include "ir/graph.h"

namespace ds {

inline constexpr int kVariadic = std::numeric_limits<int>::max();

struct AttrSpec {
  std::string name;
  AttrKind kind;
  std::optional<Attribute> default_value;  // nullopt: required
};

// What a shape rule sees: the node, its input types and any constant input data.
class InferContext {
 public:
  explicit InferContext(const Node& node);

  const Node& node() const { return node_; }
  size_t numInputs() const { return node_.numInputs(); }
  size_t numOutputs() const { return outputs_.size(); }
  bool hasInput(size_t i) const { return node_.hasInput(i); }
  const TensorType& input(size_t i) const;
  const Shape& shape(size_t i) const { return input(i).shape; }
  DType dtype(size_t i) const { return input(i).dtype; }
  int64_t rank(size_t i) const { return input(i).rank(); }
  // Data of a constant input, or nullptr when the input is computed at run time.
  const Tensor* constant(size_t i) const;

  void setOutput(size_t i, TensorType t) { outputs_.at(i) = std::move(t); }
  void setOutput(size_t i, DType dtype, Shape shape) { setOutput(i, {dtype, std::move(shape)}); }
  std::vector<TensorType>& outputs() { return outputs_; }

  // Throws an error naming the node, its op and its input types.
  template <typename... Parts>
  [[noreturn]] void fail(Parts&&... parts) const {
    throw makeError(node_.describe(), ": ", std::forward<Parts>(parts)..., " (inputs ",
                    inputTypesString(), ")");
  }
  // Normalises a possibly negative axis against `rank`, failing when out of range.
  int64_t axis(int64_t axis, int64_t rank) const;

 private:
  std::string inputTypesString() const;
  const Node& node_;
  std::vector<TensorType> outputs_;
};

using InferFn = std::function<void(InferContext&)>;

struct OpSchema {
  std::string name;
  int min_inputs = 1;
  int max_inputs = 1;
  int min_outputs = 1;
  int max_outputs = 1;
  std::vector<AttrSpec> attrs;
  InferFn infer;
  // Output 0 may overwrite this input when both have the same dtype and element
  // count (element-wise ops; reshapes, whose bytes are the same); -1: never. The
  // memory planner uses it to place the two in the same bytes.
  int inplace_input = -1;

  const AttrSpec* findAttr(const std::string& attr) const;
};

class OpRegistry {
 public:
  static const OpRegistry& instance();

  void add(OpSchema schema);
  const OpSchema* find(const std::string& op) const;
  const OpSchema& get(const std::string& op) const;  // throws for unknown ops
  std::vector<std::string> names() const;            // sorted
  size_t size() const { return schemas_.size(); }

 private:
  std::vector<OpSchema> schemas_;
};

// Checks a node against its schema (arity, attribute names and kinds) and runs its
// shape rule; throws ds::Error naming the node on any mismatch.
std::vector<TensorType> inferOutputTypes(const Node& node);

// The node's attributes with every schema default filled in: what a plan step carries.
AttributeMap attrsWithDefaults(const Node& node);

// Shape-rule building blocks shared by the op families.
Shape broadcastShapes(const InferContext& ctx, const Shape& a, const Shape& b);

}  // namespace ds
