// Layer-norm fusion (see fuse_layer_norm.h): the matcher walks back from the
// chain's last node, recording the nodes it would replace, consumers first.
#include "passes/fuse_layer_norm.h"

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "passes/replace_chain.h"

namespace ds {
namespace {

// The one-element compile-time constant `v` holds, if it is one.
std::optional<double> scalarConstant(const Value* v) {
  if (v->role() != Role::Constant || !v->hasData() || v->data().numel() != 1) return std::nullopt;
  return v->data().getDouble(0);
}

class LayerNormMatcher {
 public:
  explicit LayerNormMatcher(const Graph& graph) : graph_(graph) {}

  // Matches `last` as the chain's last node; on success fills the accessors below.
  bool match(Node* last) {
    nodes_.clear();
    bias_ = nullptr;
    if (last->op() == "Add") {  // the bias: the Add's other operand
      for (size_t side = 0; side < 2 && !bias_; ++side) {
        Node* mul = producer(last->input(side), last, "Mul");
        if (mul && matchScaled(mul)) bias_ = last->input(1 - side);
      }
      if (!bias_) return false;
      nodes_.insert(nodes_.begin(), last);
      return fits(last);
    }
    return last->op() == "Mul" && matchScaled(last) && fits(last);
  }

  std::vector<Value*> inputs() const {
    std::vector<Value*> in = {x_, scale_};
    if (bias_) in.push_back(bias_);
    return in;
  }
  AttributeMap attrs() const { return {{"axis", axis_}, {"epsilon", epsilon_}}; }
  const std::vector<Node*>& nodes() const { return nodes_; }

 private:
  // The node producing `v` if it is `op` and `reader` alone reads `v` (once or,
  // for Mul(d, d), twice), else nullptr.
  Node* producer(const Value* v, const Node* reader, const std::string& op) const {
    Node* p = v->producer();
    if (p == nullptr || p->op() != op || graph_.isOutput(v)) return nullptr;
    for (const Node* user : v->users())
      if (user != reader) return nullptr;
    return p;
  }

  // mul = Mul(n, scale) in either order, n the normalised x.
  bool matchScaled(Node* mul) {
    for (size_t side = 0; side < 2; ++side) {
      Node* div = producer(mul->input(side), mul, "Div");
      std::vector<Node*> normalised;
      if (div && matchNormalised(div, &normalised)) {
        scale_ = mul->input(1 - side);
        nodes_ = {mul};
        nodes_.insert(nodes_.end(), normalised.begin(), normalised.end());
        return true;
      }
    }
    return false;
  }

  // div = Div(d, Sqrt(Add(ReduceMean(d²), epsilon))), d = Sub(x, ReduceMean(x)).
  bool matchNormalised(Node* div, std::vector<Node*>* chain) {
    Node* sqrt = producer(div->input(1), div, "Sqrt");
    Node* add = sqrt ? producer(sqrt->input(0), sqrt, "Add") : nullptr;
    if (!add) return false;
    Node* variance = nullptr;
    for (size_t side = 0; side < 2 && !variance; ++side) {
      const std::optional<double> eps = scalarConstant(add->input(1 - side));
      if (!eps || *eps < 0) continue;
      variance = producer(add->input(side), add, "ReduceMean");
      epsilon_ = *eps;
    }
    if (!variance || variance->i("keepdims") == 0) return false;
    Node* square = squareOf(variance->input(0), variance);
    if (!square) return false;
    Value* d = div->input(0);
    Node* sub = d->producer();
    if (!sub || sub->op() != "Sub" || graph_.isOutput(d)) return false;
    for (const Node* user : d->users())
      if (user != div && user != square) return false;
    if (square->input(0) != d) return false;
    x_ = sub->input(0);
    Node* mean = producer(sub->input(1), sub, "ReduceMean");
    if (!mean || mean->input(0) != x_ || mean->i("keepdims") == 0 ||
        !trailingAxes(mean->ints("axes")) || normalisedAxes(variance->ints("axes")) != axes_)
      return false;
    *chain = {div, sqrt, add, variance, square, sub, mean};
    return true;
  }

  // Pow(d, 2) or Mul(d, d) that only `reader` reads.
  Node* squareOf(const Value* v, const Node* reader) const {
    if (Node* pow = producer(v, reader, "Pow"))
      return scalarConstant(pow->input(1)) == 2.0 ? pow : nullptr;
    Node* mul = producer(v, reader, "Mul");
    return mul && mul->input(0) == mul->input(1) ? mul : nullptr;
  }

  // `axes` of x as non-negative, sorted.
  std::vector<int64_t> normalisedAxes(std::vector<int64_t> axes) const {
    const auto rank = static_cast<int64_t>(x_->rank());
    for (int64_t& a : axes) a = a < 0 ? a + rank : a;
    std::sort(axes.begin(), axes.end());
    return axes;
  }

  // Whether `axes` are x's last k axes, each once; sets axes_ and axis_ (the first).
  bool trailingAxes(const std::vector<int64_t>& axes) {
    axes_ = normalisedAxes(axes);
    const auto rank = static_cast<int64_t>(x_->rank());
    if (axes_.empty() || axes_.front() < 0) return false;
    for (size_t i = 0; i < axes_.size(); ++i)
      if (axes_[i] != rank - static_cast<int64_t>(axes_.size() - i)) return false;
    axis_ = axes_.front();
    return true;
  }

  // Types: every value of the chain x's float dtype and shape, scale and bias of
  // x's normalised shape and computed outside the chain (Mul(n, n) is no scale).
  bool fits(const Node* last) const {
    for (const Value* p : {scale_, bias_})
      if (p && std::find(nodes_.begin(), nodes_.end(), p->producer()) != nodes_.end()) return false;
    const TensorType& t = x_->type();
    if (!isFloat(t.dtype) || last->output(0)->type() != t) return false;
    const Shape normalised(t.shape.begin() + axis_, t.shape.end());
    for (const Value* p : {scale_, bias_})
      if (p && p->type() != TensorType{t.dtype, normalised}) return false;
    for (const Node* n : nodes_)
      if (n->output(0)->dtype() != t.dtype) return false;
    return true;
  }

  const Graph& graph_;
  Value *x_ = nullptr, *scale_ = nullptr, *bias_ = nullptr;
  int64_t axis_ = -1;
  std::vector<int64_t> axes_;  // normalised, sorted
  double epsilon_ = 0;
  std::vector<Node*> nodes_;
};

}  // namespace

bool fuseLayerNorm(Graph& graph) {
  bool changed = false;
  // Chains with a bias first: their Mul would otherwise match alone, leaving the Add.
  for (const char* last_op : {"Add", "Mul"})
    for (auto it = graph.nodes().begin(); it != graph.nodes().end();) {
      Node* node = (it++)->get();  // advance first: fusing erases the node
      if (node->op() != last_op) continue;
      LayerNormMatcher chain(graph);
      if (!chain.match(node)) continue;
      replaceChain(graph, chain.nodes(), "LayerNormalization", chain.inputs(), chain.attrs());
      changed = true;
    }
  return changed;
}

}  // namespace ds
