#include "ir/verifier.h"

#include <algorithm>
#include <map>
#include <unordered_set>

#include "ir/error.h"
#include "ir/op_registry.h"

namespace ds {
namespace {

void verifySources(const Graph& g, std::unordered_set<const Value*>& defined) {
  for (const Value* v : g.sources()) {
    DS_CHECK(v->producer() == nullptr, "verifier: source '", v->name(), "' has a producer");
    DS_CHECK(isSourceRole(v->role()), "verifier: source '", v->name(), "' has role ",
             roleName(v->role()));
    if (v->hasData())
      DS_CHECK(v->data().type() == v->dataType(), "verifier: source '", v->name(), "' holds data ",
               v->data().type().toString(), " but is typed ", v->dataType().toString());
    DS_CHECK(defined.insert(v).second, "verifier: source '", v->name(), "' listed twice");
  }
}

void verifyUses(const Graph& g) {
  std::map<const Value*, std::map<const Node*, int>> uses;
  for (const auto& n : g.nodes())
    for (const Value* v : n->inputs())
      if (v) uses[v][n.get()]++;
  auto check = [&](const Value* v) {
    std::map<const Node*, int> listed;
    for (const Node* u : v->users()) listed[u]++;
    DS_CHECK(listed == uses[v], "verifier: user list of '", v->name(), "' does not match its uses");
  };
  for (const Value* v : g.sources()) check(v);
  for (const auto& n : g.nodes())
    for (const Value* v : n->outputs()) check(v);
}

void verifyTypes(const Node& n) {
  std::vector<TensorType> inferred = inferOutputTypes(n);
  for (size_t i = 0; i < n.numOutputs(); ++i)
    DS_CHECK(inferred[i] == n.output(i)->type(), "verifier: ", n.describe(), " output '",
             n.output(i)->name(), "' is typed ", n.output(i)->type().toString(),
             " but its shape rule gives ", inferred[i].toString());
}

// A state's memory receives its next value when that value is produced, so no node
// after the producer may read the state (the producer itself may: it updates in place).
// Several updates of one state form a chain in node order: each may be read only up
// to the node that computes the following one.
void verifyStateUpdates(const Graph& g) {
  std::map<const Node*, size_t> order;
  for (const auto& n : g.nodes()) order.emplace(n.get(), order.size());
  std::map<const Value*, std::vector<const Value*>> chains;  // state -> nexts in node order
  for (const Graph::StateUpdate& u : g.stateUpdates()) {
    const Node* producer = u.next->producer();
    DS_CHECK(producer && order.count(producer), "verifier: update of '", u.state->name(),
             "' names '", u.next->name(), "', which no node of the graph computes");
    chains[u.state].push_back(u.next);
  }
  for (auto& [state, nexts] : chains) {
    std::sort(nexts.begin(), nexts.end(), [&](const Value* a, const Value* b) {
      return order.at(a->producer()) < order.at(b->producer());
    });
    const Value* current = state;
    for (const Value* next : nexts) {
      const Node* producer = next->producer();
      for (const Node* reader : current->users())
        DS_CHECK(order.at(reader) <= order.at(producer), "verifier: ", reader->describe(),
                 " reads '", current->name(), "' after ", producer->describe(),
                 " has overwritten it");
      DS_CHECK(current == state || current->producer() != producer,
               "verifier: ", producer->describe(), " updates '", state->name(), "' twice");
      current = next;
    }
  }
}

// The optimizer-step nodes run only after the last micro-step, so a micro-step node
// must not read what they compute (persistent state is read as a source instead).
void verifyPhases(const Graph& g) {
  for (const auto& n : g.nodes()) {
    if (n->phase() != Phase::EveryMicroStep) continue;
    for (const Value* v : n->inputs())
      DS_CHECK(!v || !v->producer() || v->producer()->phase() == Phase::EveryMicroStep,
               "verifier: ", n->describe(), " runs every micro-step but reads '", v->name(),
               "', which the optimizer step computes");
  }
}

}  // namespace

void verifyGraph(const Graph& g) {
  std::unordered_set<const Value*> defined;
  verifySources(g, defined);
  for (const auto& node : g.nodes()) {
    const Node& n = *node;
    for (size_t i = 0; i < n.numInputs(); ++i) {
      const Value* v = n.input(i);
      if (!v) continue;
      DS_CHECK(defined.count(v), "verifier: ", n.describe(), " uses '", v->name(),
               "' before it is defined");
    }
    for (const Value* v : n.outputs()) {
      DS_CHECK(v->producer() == &n, "verifier: '", v->name(), "' does not name ", n.describe(),
               " as its producer");
      DS_CHECK(!isSourceRole(v->role()), "verifier: ", n.describe(), " output '", v->name(),
               "' has source role ", roleName(v->role()));
      DS_CHECK(defined.insert(v).second, "verifier: '", v->name(), "' is defined twice");
    }
    verifyTypes(n);
  }
  verifyUses(g);
  verifyStateUpdates(g);
  verifyPhases(g);
  for (const Value* v : g.outputs())
    DS_CHECK(defined.count(v), "verifier: graph output '", v->name(), "' is not defined");
}

}  // namespace ds
