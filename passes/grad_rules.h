// Gradient rules, one small function per op, keyed by op name like the op
// registry. A rule receives the forward node and the gradients of its outputs and
// emits IR that computes the gradients of its inputs; big ops get dedicated
// backward ops, everything else is written with forward ops.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "ir/graph.h"

namespace ds {

// What a rule sees and how it emits backward nodes (all outputs are gradients).
class GradContext {
 public:
  GradContext(Graph& graph, const Node& node, std::vector<Value*> output_grads);

  const Node& node() const { return node_; }
  Value* x(size_t i) const { return node_.input(i); }            // forward input i
  Value* y(size_t i = 0) const { return node_.output(i); }       // forward output i
  Value* dy(size_t i = 0) const { return output_grads_.at(i); }  // may be null
  // True when the autodiff pass wants the gradient of input i.
  bool wants(size_t i) const;
  void setWanted(std::vector<bool> wanted) { wanted_ = std::move(wanted); }

  // Emits one node; its outputs get the gradient role and names from the forward node.
  Value* emit(const std::string& op, std::vector<Value*> inputs, AttributeMap attrs = {});
  std::vector<Value*> emitN(const std::string& op, std::vector<Value*> inputs, AttributeMap attrs,
                            size_t num_outputs);
  Value* scalar(double v, DType dtype);  // a compile-time constant
  // Sums `g` over the axes along which a value of `shape` was broadcast to g's shape.
  Value* reduceToShape(Value* g, const Shape& shape);

 private:
  Graph& graph_;
  const Node& node_;
  std::vector<Value*> output_grads_;
  std::vector<bool> wanted_;
};

// Returns one gradient per forward input (nullptr where there is none or it is not wanted).
using GradRule = std::function<std::vector<Value*>(GradContext&)>;

const std::map<std::string, GradRule>& gradRules();

// The rule families gradRules() merges: element-wise and tensor ops written with
// forward ops (grad_rules.cc), and ops with dedicated backward ops (grad_rules_nn.cc).
std::map<std::string, GradRule> elementwiseAndTensorRules();
std::map<std::string, GradRule> nnGradRules();

}  // namespace ds
