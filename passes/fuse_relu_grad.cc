// ReluGrad into BatchNormalizationGrad (see fuse_relu_grad.h).
#include "passes/fuse_relu_grad.h"

#include <algorithm>

namespace ds {
namespace {

// Whether `v` is read by `reader` alone, once, and is no graph output or state update.
bool readOnlyBy(const Graph& g, const Value* v, const Node* reader) {
  if (v->users().size() != 1 || v->users()[0] != reader) return false;
  if (std::count(reader->inputs().begin(), reader->inputs().end(), v) != 1) return false;
  if (std::find(g.outputs().begin(), g.outputs().end(), v) != g.outputs().end()) return false;
  return std::none_of(g.stateUpdates().begin(), g.stateUpdates().end(),
                      [&](const Graph::StateUpdate& u) { return u.next == v; });
}

}  // namespace

bool fuseReluIntoBatchNormGrad(Graph& g) {
  bool changed = false;
  for (const auto& node : g.nodes()) {
    Node* bn = node.get();
    if (bn->op() != "BatchNormalizationGrad" || bn->hasInput(3)) continue;
    Value* dy = bn->input(0);
    Node* relu_grad = dy->producer();
    if (relu_grad == nullptr || relu_grad->op() != "ReluGrad" ||
        relu_grad->phase() != bn->phase() || !readOnlyBy(g, dy, bn))
      continue;
    Value* relu_dy = relu_grad->input(0);
    Value* relu_out = relu_grad->input(1);
    if (relu_dy->type() != dy->type() || relu_out->type() != dy->type()) continue;
    bn->setInput(0, relu_dy);
    bn->addInput(relu_out);
    g.inferTypes(bn);
    changed = true;
  }
  return changed;
}

}  // namespace ds
