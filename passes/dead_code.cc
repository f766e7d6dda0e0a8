#include "passes/dead_code.h"

#include <algorithm>

namespace ds {
namespace {

bool isLive(const Graph& g, const Value* v) {
  for (const Graph::StateUpdate& u : g.stateUpdates())
    if (u.next == v || u.state == v) return true;
  return !v->users().empty() || g.isOutput(v);
}

}  // namespace

bool eliminateDeadCode(Graph& graph) {
  bool changed = false;
  std::vector<Node*> order;
  for (const auto& n : graph.nodes()) order.push_back(n.get());
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    Node* n = *it;
    bool live = std::any_of(n->outputs().begin(), n->outputs().end(),
                            [&](const Value* v) { return isLive(graph, v); });
    if (live) continue;
    graph.eraseNode(n);
    changed = true;
  }
  std::vector<Value*> sources = graph.sources();
  for (Value* v : sources) {
    bool feed = v->role() == Role::Input || v->role() == Role::Label;
    if (feed || isLive(graph, v)) continue;
    graph.eraseSource(v);
    changed = true;
  }
  return changed;
}

}  // namespace ds
