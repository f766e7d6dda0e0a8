// GELU fusion (see fuse_gelu.h). The matcher walks each candidate chain backwards
// from its last Mul, recording the nodes it would replace, consumers first; a
// failed alternative drops what it recorded.
#include "passes/fuse_gelu.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <numbers>
#include <string>
#include <vector>

#include "passes/replace_chain.h"

namespace ds {
namespace {

const double kInvSqrt2 = 1.0 / std::numbers::sqrt2;
const double kTanhScale = std::sqrt(2.0 / std::numbers::pi);  // √(2/π)
const double kTanhCubic = 0.044715;

// True for a compile-time constant whose elements all equal `want` within 1e-4
// relative, or `want` rounded to the constant's type (1/√2 in f16 or bf16 is
// 0.70703, 1.1e-4 off; the next 16-bit number is not accepted).
bool isConstantNear(const Value* v, double want) {
  if (v->role() != Role::Constant || !v->hasData()) return false;
  const Tensor& t = v->data();
  if (t.numel() == 0) return false;
  const double rounded = Tensor::fromDoubles(t.dtype(), {}, {want}).getDouble(0);
  for (int64_t i = 0; i < t.numel(); ++i) {
    const double c = t.getDouble(i);
    if (c != rounded && !(std::abs(c - want) <= 1e-4 * std::abs(want))) return false;
  }
  return true;
}

// The operand of binary node `n` beside a constant ≈ c (c second, or either side
// when `commutative`), or nullptr.
Value* besideConstant(const Node* n, double c, bool commutative) {
  if (isConstantNear(n->input(1), c)) return n->input(0);
  if (commutative && isConstantNear(n->input(0), c)) return n->input(1);
  return nullptr;
}

class ChainMatcher {
 public:
  explicit ChainMatcher(const Graph& graph) : graph_(graph) {}

  // Matches `last` as the final Mul of a GELU chain; on success fills x(),
  // approximate() and nodes().
  bool match(Node* last) {
    if (last->op() != "Mul") return false;
    for (size_t side = 0; side < 2; ++side) {
      nodes_ = {last};
      Node* inner = take(last->input(side), last, "Mul");
      if (inner == nullptr) continue;
      // The factors and the node that reads each one.
      std::array<Value*, 3> factor = {inner->input(0), inner->input(1), last->input(1 - side)};
      std::array<Node*, 3> reader = {inner, inner, last};
      for (size_t half = 0; half < 3; ++half) {
        if (!isConstantNear(factor[half], 0.5)) continue;
        size_t a = half == 0 ? 1 : 0, b = half == 2 ? 1 : 2;  // the other two
        if (matchProduct(last, factor[a], factor[b], reader[b]) ||
            matchProduct(last, factor[b], factor[a], reader[a]))
          return true;
      }
    }
    return false;
  }

  Value* x() const { return x_; }
  const std::string& approximate() const { return approximate_; }
  // The chain, each node before the nodes it reads (the order to erase them in).
  const std::vector<Node*>& nodes() const { return nodes_; }

 private:
  // x·t·½ with t = 1 + erf(...) or 1 + tanh(...) of this very x, of x's type.
  bool matchProduct(const Node* last, Value* x, Value* t, Node* t_reader) {
    size_t mark = nodes_.size();
    if (isFloat(x->dtype()) && last->output(0)->type() == x->type() &&
        matchOnePlus(t, t_reader) == x && samePlacement(last)) {
      x_ = x;
      return true;
    }
    nodes_.resize(mark);
    return false;
  }

  // t = 1 + erf(x/√2) or 1 + tanh(√(2/π)·(x + 0.044715·x³)): returns x, or nullptr.
  Value* matchOnePlus(Value* t, const Node* reader) {
    Node* add = take(t, reader, "Add");
    Value* f = add ? besideConstant(add, 1.0, true) : nullptr;
    if (f == nullptr) return nullptr;
    if (Node* erf = take(f, add, "Erf")) {
      approximate_ = "none";
      return matchErfArgument(erf);
    }
    if (Node* tanh = take(f, add, "Tanh")) {
      approximate_ = "tanh";
      return matchTanhArgument(tanh);
    }
    return nullptr;
  }

  // Erf's input is Div(x, √2) or Mul(x, 1/√2).
  Value* matchErfArgument(const Node* erf) {
    Value* scaled = erf->input(0);
    if (Node* div = take(scaled, erf, "Div"))
      return besideConstant(div, std::numbers::sqrt2, false);
    if (Node* mul = take(scaled, erf, "Mul")) return besideConstant(mul, kInvSqrt2, true);
    return nullptr;
  }

  // Tanh's input is √(2/π)·(x + 0.044715·x³).
  Value* matchTanhArgument(const Node* tanh) {
    Node* scale = take(tanh->input(0), tanh, "Mul");
    Value* sum = scale ? besideConstant(scale, kTanhScale, true) : nullptr;
    Node* add = sum ? take(sum, scale, "Add") : nullptr;
    if (add == nullptr) return nullptr;
    for (size_t side = 0; side < 2; ++side) {
      size_t mark = nodes_.size();
      Value* x = add->input(side);
      Node* mul = take(add->input(1 - side), add, "Mul");
      Value* cube = mul ? besideConstant(mul, kTanhCubic, true) : nullptr;
      if (cube && isCube(cube, mul, x)) return x;
      nodes_.resize(mark);
    }
    return nullptr;
  }

  // cube = Pow(x, 3), Mul(x, Mul(x, x)) or Mul(Mul(x, x), x).
  bool isCube(Value* cube, const Node* reader, const Value* x) {
    if (Node* pow = take(cube, reader, "Pow"))
      return pow->input(0) == x && isConstantNear(pow->input(1), 3);
    Node* mul = take(cube, reader, "Mul");
    if (mul == nullptr) return false;
    for (size_t side = 0; side < 2; ++side) {
      if (mul->input(side) != x) continue;
      size_t mark = nodes_.size();
      Node* square = take(mul->input(1 - side), mul, "Mul");
      if (square && square->input(0) == x && square->input(1) == x) return true;
      nodes_.resize(mark);
    }
    return false;
  }

  // The node computing `v` if it is an `op` and `v` is read by `reader` alone
  // (once, and not as a graph output or state update); it joins the chain.
  Node* take(const Value* v, const Node* reader, const char* op) {
    Node* producer = v->producer();
    if (producer == nullptr || producer->op() != op || producer->numOutputs() != 1) return nullptr;
    if (v->users().size() != 1 || v->users()[0] != reader) return nullptr;
    const auto& outputs = graph_.outputs();
    if (std::find(outputs.begin(), outputs.end(), v) != outputs.end()) return nullptr;
    for (const Graph::StateUpdate& u : graph_.stateUpdates())
      if (u.next == v) return nullptr;
    nodes_.push_back(producer);
    return producer;
  }

  // The whole chain runs in the same phase and place as its last node.
  bool samePlacement(const Node* last) const {
    return std::all_of(nodes_.begin(), nodes_.end(), [&](const Node* n) {
      return n->phase() == last->phase() && n->onHost() == last->onHost();
    });
  }

  const Graph& graph_;
  Value* x_ = nullptr;
  std::string approximate_;
  std::vector<Node*> nodes_;
};

}  // namespace

bool fuseGelu(Graph& graph) {
  bool changed = false;
  for (auto it = graph.nodes().begin(); it != graph.nodes().end();) {
    Node* node = (it++)->get();  // advance first: fusing erases the node
    ChainMatcher chain(graph);
    if (!chain.match(node)) continue;
    replaceChain(graph, chain.nodes(), "Gelu", {chain.x()}, {{"approximate", chain.approximate()}});
    changed = true;
  }
  return changed;
}

}  // namespace ds
