#include "passes/seed_dropout.h"

namespace ds {

bool seedDropout(Graph& graph, Value* step) {
  bool changed = false;
  for (const auto& n : graph.nodes()) {
    if (n->op() != "Dropout" || n->hasInput(1)) continue;
    if (n->i("training_mode") == 0 || n->f("ratio") == 0.0) continue;
    n->addInput(step);
    changed = true;
  }
  return changed;
}

}  // namespace ds
