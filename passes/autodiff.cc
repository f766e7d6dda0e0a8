#include "passes/autodiff.h"

#include <set>

#include "ir/error.h"
#include "passes/grad_rules.h"

namespace ds {
namespace {

std::set<const Value*> dependsOnWrt(const Graph& g, const std::vector<Value*>& wrt) {
  std::set<const Value*> marked(wrt.begin(), wrt.end());
  for (const auto& n : g.nodes()) {
    bool any = false;
    for (const Value* v : n->inputs()) any |= v && marked.count(v);
    if (any)
      for (const Value* v : n->outputs()) marked.insert(v);
  }
  return marked;
}

std::set<const Value*> lossDependsOn(const Graph& g, const Value* loss) {
  std::set<const Value*> marked{loss};
  for (auto it = g.nodes().rbegin(); it != g.nodes().rend(); ++it) {
    const Node& n = **it;
    bool any = false;
    for (const Value* v : n.outputs()) any |= marked.count(v) > 0;
    if (any)
      for (const Value* v : n.inputs())
        if (v) marked.insert(v);
  }
  return marked;
}

// `base` itself when free, else base_0, base_1, ...
std::string freshName(Graph& g, const std::string& base) {
  return g.findValue(base) ? g.uniqueName(base) : base;
}

class Accumulator {
 public:
  explicit Accumulator(Graph& g) : g_(g) {}
  void add(Value* v, Value* grad) {
    auto [it, fresh] = grads_.emplace(v, grad);
    if (fresh) return;
    Node* sum = g_.addNode("Add", {it->second, grad}, {}, {g_.uniqueName(v->name() + "_grad_sum")});
    sum->output(0)->setRole(Role::Gradient);
    it->second = sum->output(0);
  }
  Value* get(const Value* v) const {
    auto it = grads_.find(v);
    return it == grads_.end() ? nullptr : it->second;
  }

 private:
  Graph& g_;
  std::map<const Value*, Value*> grads_;
};

}  // namespace

std::map<Value*, Value*> buildGradients(Graph& g, Value* loss, const std::vector<Value*>& wrt) {
  DS_CHECK(loss->rank() == 0 || loss->type().numel() == 1, "autodiff: loss '", loss->name(),
           "' must be a scalar, is ", loss->type().toString());
  DS_CHECK(isFloat(loss->dtype()), "autodiff: loss '", loss->name(), "' must be a float");
  std::set<const Value*> from_wrt = dependsOnWrt(g, wrt);
  std::set<const Value*> to_loss = lossDependsOn(g, loss);
  std::vector<Node*> forward;
  for (const auto& n : g.nodes()) forward.push_back(n.get());

  Accumulator acc(g);
  Tensor one({loss->dtype(), loss->shape()});
  one.setDouble(0, 1.0);
  acc.add(loss, g.addConstant(freshName(g, loss->name() + "_grad_seed"), one));
  const auto& rules = gradRules();
  for (auto it = forward.rbegin(); it != forward.rend(); ++it) {
    Node* n = *it;
    std::vector<Value*> dys;
    bool has_dy = false;
    for (Value* v : n->outputs()) {
      dys.push_back(acc.get(v));
      has_dy |= dys.back() != nullptr;
    }
    std::vector<bool> wanted(n->numInputs());
    bool any_wanted = false;
    for (size_t i = 0; i < n->numInputs(); ++i) {
      const Value* v = n->input(i);
      wanted[i] = v && from_wrt.count(v) && to_loss.count(v) && isFloat(v->dtype());
      any_wanted |= wanted[i];
    }
    if (!has_dy || !any_wanted) continue;
    auto rule = rules.find(n->op());
    DS_CHECK(rule != rules.end(), "autodiff: no gradient rule for ", n->describe());
    GradContext ctx(g, *n, dys);
    ctx.setWanted(wanted);
    std::vector<Value*> dxs = rule->second(ctx);
    for (size_t i = 0; i < dxs.size() && i < n->numInputs(); ++i)
      if (dxs[i] && wanted[i]) acc.add(n->input(i), dxs[i]);
  }
  std::map<Value*, Value*> out;
  for (Value* w : wrt) {
    Value* grad = acc.get(w);
    if (!grad) {  // the loss does not depend on w
      grad = g.addConstant(freshName(g, w->name() + "_grad"), Tensor(w->type()));
    } else {
      Node* named = g.addNode("Identity", {grad}, {}, {freshName(g, w->name() + "_grad")});
      grad = named->output(0);
      grad->setRole(Role::Gradient);
    }
    out[w] = grad;
  }
  return out;
}

}  // namespace ds
