// Casts around mixed precision's optimizer steps into the step (see fuse_optimizer_casts.h).
#include "passes/fuse_optimizer_casts.h"

#include <algorithm>
#include <string>
#include <vector>

#include "ir/optimizer_ops.h"

namespace ds {
namespace {

bool isSixteenBit(DType t) {
  return t == DType::F16 || t == DType::BF16;
}

bool isCastTo(const Node* n, DType to) {
  return n != nullptr && n->op() == "Cast" && n->output(0)->dtype() == to;
}

bool isGraphResult(const Graph& g, const Value* v) {
  if (std::find(g.outputs().begin(), g.outputs().end(), v) != g.outputs().end()) return true;
  return std::any_of(g.stateUpdates().begin(), g.stateUpdates().end(),
                     [&](const Graph::StateUpdate& u) { return u.next == v; });
}

// A ReduceSumSquare over every element (the gradient norm's), summing into the
// input's type.
bool isFullSumOfSquares(const Node* n) {
  return n->op() == "ReduceSumSquare" && n->ints("axes").empty() &&
         n->i("noop_with_empty_axes") == 0 && n->s("to").empty();
}

bool isOptimizerStep(const Node* n) {
  return ds::isOptimizerStep(n->op());
}

// Outputs a step updates: the parameter and its states (the rounded copy follows).
size_t updatedOutputs(const Node* step) {
  return 1 + optimizerStateInputs(*step).size();
}

// `wide` = Cast(16-bit gradient) read only by optimizer steps, as their gradient, and
// by full ReduceSumSquares: they read the 16-bit gradient instead.
bool readNarrowGradient(Graph& g, Value* wide) {
  Node* cast = wide->producer();
  if (!isCastTo(cast, DType::F32) || !isSixteenBit(cast->input(0)->dtype()) ||
      isGraphResult(g, wide))
    return false;
  const std::vector<Node*> users = wide->users();
  for (const Node* u : users) {
    const bool as_gradient = isOptimizerStep(u) && u->input(1) == wide &&
                             std::count(u->inputs().begin(), u->inputs().end(), wide) == 1;
    if (!as_gradient && !isFullSumOfSquares(u)) return false;
  }
  Value* narrow = cast->input(0);
  for (Node* u : users) {
    if (isOptimizerStep(u)) {
      u->setInput(1, narrow);
    } else {
      u->setInput(0, narrow);
      u->setAttr("to", std::string("f32"));
    }
    g.inferTypes(u);
  }
  return true;
}

// A Cast of the step's updated master to 16 bits: the step's last output instead.
bool roundInStep(Graph& g, Node* step) {
  if (step->numOutputs() != updatedOutputs(step) || step->input(0)->dtype() != DType::F32)
    return false;
  Value* next = step->output(0);
  Node* round = nullptr;
  for (Node* u : next->users())
    if (u->op() == "Cast" && isSixteenBit(u->output(0)->dtype())) round = u;
  if (round == nullptr) return false;
  const DType to = round->output(0)->dtype();
  const DType grad = step->input(1)->dtype();
  if (isSixteenBit(grad) && grad != to) return false;  // no kernel mixes two 16-bit types
  step->setAttr("round_to", std::string(dtypeName(to)));
  Value* rounded =
      g.addNodeOutput(step, g.uniqueName(step->name() + "/" + std::string(dtypeName(to))));
  rounded->setRole(round->output(0)->role());
  g.replaceAllUsesWith(round->output(0), rounded);
  return true;
}

}  // namespace

bool fuseOptimizerCasts(Graph& g) {
  std::vector<Node*> steps;
  for (const auto& n : g.nodes())
    if (isOptimizerStep(n.get()) && n->input(0)->dtype() == DType::F32) steps.push_back(n.get());
  bool changed = false;
  for (Node* step : steps) changed |= readNarrowGradient(g, step->input(1));
  for (Node* step : steps) changed |= roundInStep(g, step);
  return changed;
}

}  // namespace ds
