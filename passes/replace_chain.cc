#include "passes/replace_chain.h"

#include <algorithm>
#include <utility>

#include "ir/error.h"

namespace ds {

Node* replaceChain(Graph& graph, const std::vector<Node*>& chain, const std::string& op,
                   std::vector<Value*> inputs, AttributeMap attrs) {
  for (const Value* in : inputs)
    DS_CHECK(std::find(chain.begin(), chain.end(), in->producer()) == chain.end(), "fusing '",
             chain.front()->name(), "': input '", in->name(), "' is computed inside the chain");
  Node* last = chain.front();
  const std::string node_name = last->name(), out_name = last->output(0)->name();
  const Phase phase = last->phase();
  const Role role = last->output(0)->role();
  const bool on_host = last->onHost();
  Node* next = graph.nextNode(last);
  // Park the users on a placeholder so the chain (and the output's name) can go first.
  Value* parked = graph.addSource(graph.uniqueName(out_name + "_fusing"), last->output(0)->type(),
                                  Role::Constant);
  graph.replaceAllUsesWith(last->output(0), parked);
  for (Node* n : chain) graph.eraseNode(n);
  Node* fused = graph.addNode(op, std::move(inputs), std::move(attrs), {out_name}, node_name, next);
  fused->setPhase(phase);
  fused->setOnHost(on_host);
  fused->output(0)->setRole(role);
  graph.replaceAllUsesWith(parked, fused->output(0));
  graph.eraseSource(parked);
  return fused;
}

}  // namespace ds
