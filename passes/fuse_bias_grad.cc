// A linear layer's weight and bias gradients as one WeightBiasGrad (see
// fuse_bias_grad.h).
#include "passes/fuse_bias_grad.h"

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace ds {
namespace {

// Whether `v` is a graph output or a state update's next value: those keep their nodes.
bool isKept(const Graph& g, const Value* v) {
  return g.isOutput(v) ||
         std::any_of(g.stateUpdates().begin(), g.stateUpdates().end(),
                     [&](const Graph::StateUpdate& u) { return u.next == v || u.state == v; });
}

// Whether `sum` is ReduceSum(dY) over every axis but the last, in dY's type.
bool sumsLeadingAxes(const Node* sum) {
  if (sum->op() != "ReduceSum" || sum->numInputs() != 1) return false;
  const Value* dy = sum->input(0);
  const int64_t rank = dy->rank();
  if (rank < 2 || !isFloat(dy->dtype()) || sum->output(0)->dtype() != dy->dtype()) return false;
  std::vector<int64_t> axes = sum->ints("axes");
  for (int64_t& a : axes) a = a < 0 ? a + rank : a;
  std::sort(axes.begin(), axes.end());
  std::vector<int64_t> leading(static_cast<size_t>(rank - 1));
  for (int64_t a = 0; a + 1 < rank; ++a) leading[static_cast<size_t>(a)] = a;
  return axes == leading;
}

// Whether `v` is dY's rows: dY itself when 2-D, or a reshape of it to [rows, last dim].
bool isRowsOf(const Value* v, const Value* dy) {
  if (v == dy) return dy->rank() == 2;
  const Node* reshape = v->producer();
  return reshape != nullptr && reshape->op() == "Reshape" && reshape->input(0) == dy &&
         v->rank() == 2 && v->shape()[1] == dy->shape().back();
}

// Whether `product` is Aᵀ·B and nothing more: a MatMul, or a Gemm without C (the
// gradient rules' weight gradients of MatMul and of Gemm layers).
bool isWeightGradProduct(const Node* product) {
  const bool matmul = product->op() == "MatMul", gemm = product->op() == "Gemm";
  return (matmul || (gemm && product->numInputs() == 2)) && product->i("transA") == 1 &&
         product->i("transB") == 0 && product->f("alpha") == 1.0;
}

struct Match {
  Node* sum;      // ReduceSum(dY)
  Node* product;  // MatMul or Gemm {transA = 1}(A, B), dY's rows as A or B
  int64_t bias_input;
};

// The weight-gradient product over the rows of `sum`'s dY, if there is one.
std::optional<Match> match(const Graph& g, Node* sum) {
  if (!sumsLeadingAxes(sum) || isKept(g, sum->output(0))) return std::nullopt;
  Value* dy = sum->input(0);
  std::vector<Value*> rows = {dy};
  for (Node* user : dy->users())
    if (user->op() == "Reshape" && isRowsOf(user->output(0), dy)) rows.push_back(user->output(0));
  for (Value* r : rows)
    for (Node* product : r->users()) {
      if (!isWeightGradProduct(product) || product->input(0)->rank() != 2 ||
          product->input(1)->rank() != 2 || product->phase() != sum->phase() || product->onHost() ||
          sum->onHost() || isKept(g, product->output(0)))
        continue;
      const bool a = isRowsOf(product->input(0), dy), b = isRowsOf(product->input(1), dy);
      if (a != b) return Match{sum, product, a ? 0 : 1};
    }
  return std::nullopt;
}

// Each node's place in program order (recomputed per fusion: a GPT has a few dozen,
// over a few thousand nodes).
std::map<const Node*, size_t> positions(const Graph& g) {
  std::map<const Node*, size_t> at;
  for (const auto& n : g.nodes()) at.emplace(n.get(), at.size());
  return at;
}

// An operand of the fused node: a value computed before its place, or a reshape of
// one to make there.
struct Operand {
  Value* value = nullptr;     // the product's operand
  Value* reshaped = nullptr;  // null: `value` itself; else reshape this to value's shape
};

// `v` where it is computed before position `pos`, else the value its Reshape reads
// where that one is; nullopt when neither is.
std::optional<Operand> operandBefore(Value* v, size_t pos,
                                     const std::map<const Node*, size_t>& at) {
  auto before = [&](const Value* x) {
    return x->producer() == nullptr || at.at(x->producer()) < pos;
  };
  if (before(v)) return Operand{v, nullptr};
  const Node* reshape = v->producer();
  if (reshape->op() == "Reshape" && before(reshape->input(0))) return Operand{v, reshape->input(0)};
  return std::nullopt;
}

// Where the fused node can go, at the earlier of the two nodes or else the later:
// the node it goes at, its operands there, and the reshapes of the earlier one's
// result it must move after itself. At the later place (after activation
// checkpointing, the bias sum comes before the product's recomputed input), the
// earlier one's result may be read in between only by reshapes whose own readers
// all come after it (the sum's reshape to the bias's shape).
struct Place {
  Node* at;
  std::vector<Operand> operands;
  std::vector<Node*> moved;  // Reshape readers, remade after the fused node
};

std::optional<Place> place(const Graph& g, const Match& m) {
  const auto at = positions(g);
  const bool sum_first = at.at(m.sum) < at.at(m.product);
  Node* first = sum_first ? m.sum : m.product;
  Node* second = sum_first ? m.product : m.sum;
  for (Node* candidate : {first, second}) {
    const size_t pos = at.at(candidate);
    Place p{candidate, {}, {}};
    bool movable = true;
    for (Node* reader : first->output(0)->users()) {
      if (at.at(reader) > pos) continue;
      const bool reshape_read_later =
          reader->op() == "Reshape" && !isKept(g, reader->output(0)) &&
          std::all_of(reader->output(0)->users().begin(), reader->output(0)->users().end(),
                      [&](const Node* r) { return at.at(r) > pos; });
      movable &= reshape_read_later;
      p.moved.push_back(reader);
    }
    if (!movable) continue;
    for (size_t i = 0; i < 2; ++i)
      if (std::optional<Operand> o = operandBefore(m.product->input(i), pos, at))
        p.operands.push_back(*o);
    if (p.operands.size() == 2) return p;
  }
  return std::nullopt;
}

// Moves `v`'s readers onto a placeholder source, so that its node can be erased and
// the fused node's output take its name.
Value* park(Graph& g, Value* v) {
  Value* parked = g.addSource(g.uniqueName(v->name() + "_fusing"), v->type(), Role::Constant);
  g.replaceAllUsesWith(v, parked);
  return parked;
}

void unpark(Graph& g, Value* parked, Value* v) {
  g.replaceAllUsesWith(parked, v);
  g.eraseSource(parked);
}

// A reshape moved after the fused node: what it was, to make again.
struct MovedReshape {
  std::string name, output;
  AttributeMap attrs;
  Role role;
  Value* parked;
};

MovedReshape takeOut(Graph& g, Node* reshape) {
  MovedReshape r{reshape->name(), reshape->output(0)->name(), reshape->attrs(),
                 reshape->output(0)->role(), park(g, reshape->output(0))};
  g.eraseNode(reshape);
  return r;
}

// Whether `reshape` means the same whatever its input's shape: no 0 in its shape
// (ONNX: copy that input dim) unless allowzero.
bool reshapesAnyInput(const Node* reshape) {
  const std::vector<int64_t>& shape = reshape->ints("shape");
  return reshape->i("allowzero") != 0 || std::count(shape.begin(), shape.end(), 0) == 0;
}

void putBack(Graph& g, const MovedReshape& r, Value* input, Node* before) {
  Value* out = g.addNode("Reshape", {input}, r.attrs, {r.output}, r.name, before)->output(0);
  out->setRole(r.role);
  unpark(g, r.parked, out);
}

bool fuse(Graph& g, const Match& m) {
  const std::optional<Place> p = place(g, m);
  if (!p) return false;
  Node* next = g.nextNode(p->at);
  while (next == m.sum || next == m.product) next = g.nextNode(next);
  const bool sum_moved = p->at == m.product;  // moved readers read the earlier result
  const bool moved_read_any =
      std::all_of(p->moved.begin(), p->moved.end(), [](Node* r) { return reshapesAnyInput(r); });
  std::vector<MovedReshape> moved;
  for (Node* reshape : p->moved) moved.push_back(takeOut(g, reshape));
  const std::string name = m.product->name(), y_name = m.product->output(0)->name(),
                    db_name = m.sum->output(0)->name();
  const Role y_role = m.product->output(0)->role(), db_role = m.sum->output(0)->role();
  const TensorType db_type = m.sum->output(0)->type();
  Graph::PhaseScope scope(g, m.product->phase());
  Value* parked_y = park(g, m.product->output(0));
  Value* parked_db = park(g, m.sum->output(0));
  g.eraseNode(m.product);
  g.eraseNode(m.sum);
  std::vector<Value*> inputs;
  for (const Operand& o : p->operands) {
    if (o.reshaped == nullptr) {
      inputs.push_back(o.value);
      continue;
    }
    Value* rows = g.addNode("Reshape", {o.reshaped}, {{"shape", o.value->shape()}}, {},
                            g.uniqueName(name + "/rows"), next)
                      ->output(0);
    rows->setRole(o.value->role());
    inputs.push_back(rows);
  }
  // The sum's result in its own shape, unless only reshapes read it (the bias's
  // gradient: ReduceSum's [1, 1, n] reshaped to [n]), which then read the flat one.
  const std::vector<Node*> readers = parked_db->users();
  const bool only_reshapes =
      (!readers.empty() || (sum_moved && !moved.empty())) && (!sum_moved || moved_read_any) &&
      std::all_of(readers.begin(), readers.end(),
                  [](Node* r) { return r->op() == "Reshape" && reshapesAnyInput(r); });
  const bool flat = db_type.shape.size() == 1 || only_reshapes;
  Node* fused = g.addNode("WeightBiasGrad", inputs, {{"bias_input", m.bias_input}},
                          {y_name, flat ? db_name : g.uniqueName(db_name + "/flat")}, name, next);
  Value* db = fused->output(1);
  if (!flat)
    db = g.addNode("Reshape", {db}, {{"shape", db_type.shape}}, {db_name},
                   g.uniqueName(name + "/bias"), next)
             ->output(0);
  fused->output(0)->setRole(y_role);
  fused->output(1)->setRole(db_role);
  db->setRole(db_role);
  unpark(g, parked_y, fused->output(0));
  unpark(g, parked_db, db);
  for (const MovedReshape& r : moved) putBack(g, r, sum_moved ? db : fused->output(0), next);
  return true;
}

}  // namespace

bool fuseBiasGrad(Graph& g) {
  std::vector<Match> matches;
  std::set<const Node*> fused_products;  // a product fuses with one sum at most
  for (const auto& node : g.nodes())
    if (std::optional<Match> m = match(g, node.get());
        m && fused_products.insert(m->product).second)
      matches.push_back(*m);
  bool changed = false;
  for (const Match& m : matches) changed = fuse(g, m) || changed;
  return changed;
}

}  // namespace ds
