#include "passes/fold_softmax_mask.h"

#include <algorithm>
#include <limits>
#include <optional>
#include <vector>

#include "ir/ops/shape_helpers.h"

namespace ds {
namespace {

bool isConstant(const Value* v) {
  return v->role() == Role::Constant && v->hasData();
}

// Whether adding a Where's `fill` (mask: fill where filled, else 0) gives the
// softmax that filling does. x + fill is fill when fill is -inf or f32's lowest
// (|x| < 1e31 rounds away); for another fill of at most -1e4, when every row keeps
// a score: exp(x + fill - max) and exp(fill - max) are both 0 then, but a row of
// fills alone would be uniform filled and softmax(x) added.
bool fillIsAdditive(double fill, const Tensor& mask) {
  if (fill <= std::numeric_limits<float>::lowest()) return true;
  if (!(fill <= -1e4)) return false;
  const int64_t n = mask.shape().empty() ? 1 : mask.shape().back();
  for (int64_t row = 0; row < mask.numel() / n; ++row) {
    bool keeps = false;
    for (int64_t j = 0; j < n && !keeps; ++j) keeps = mask.getDouble(row * n + j) == 0.0;
    if (!keeps) return false;
  }
  return true;
}

// The additive mask equal to what `masking` does to `scores`: an Add's constant
// operand, or a Where's fill (f where the condition selects it, else 0).
std::optional<Tensor> maskOf(const Node& masking, const Value* scores) {
  if (masking.op() == "Add") {
    const Value* other = masking.input(masking.input(0) == scores ? 1 : 0);
    if (!isConstant(other)) return std::nullopt;
    return other->data();
  }
  if (masking.op() != "Where" || masking.input(0) == scores) return std::nullopt;
  const bool fill_when_true = masking.input(2) == scores;  // Where(c, fill, scores)
  const Value* cond = masking.input(0);
  const Value* fill = masking.input(fill_when_true ? 1 : 2);
  if (!isConstant(cond) || !isConstant(fill) || fill->type().numel() != 1) return std::nullopt;
  const double value = fill->data().getDouble(0);
  Tensor mask({scores->dtype(), cond->shape()});
  for (int64_t i = 0; i < mask.numel(); ++i)
    mask.setDouble(i, (cond->data().getInt(i) != 0) == fill_when_true ? value : 0.0);
  if (!fillIsAdditive(value, mask)) return std::nullopt;
  return mask;
}

// The unmasked scores of a masking node: the operand of the output's shape.
const Value* scoresOf(const Node& masking) {
  const Value* out = masking.output(0);
  if (masking.op() == "Add") {
    for (size_t i = 0; i < 2; ++i)
      if (masking.input(i)->shape() == out->shape() && !isConstant(masking.input(i)))
        return masking.input(i);
    return nullptr;
  }
  if (masking.op() == "Where") {
    for (size_t i = 1; i < 3; ++i)
      if (masking.input(i)->shape() == out->shape() && !isConstant(masking.input(i)))
        return masking.input(i);
  }
  return nullptr;
}

struct Fold {
  Node* softmax;
  Node* masking;
  Value* scores;
  Tensor mask;
};

std::optional<Fold> foldable(const Graph& g, Node* softmax) {
  if (softmax->op() != "Softmax" || softmax->numInputs() != 1) return std::nullopt;
  Value* in = softmax->input(0);
  const std::vector<Value*>& outputs = g.outputs();  // the masked scores are kept
  if (std::find(outputs.begin(), outputs.end(), in) != outputs.end()) return std::nullopt;
  const int64_t rank = in->rank(), axis = softmax->i("axis");
  if (rank == 0 || (axis != -1 && axis != rank - 1)) return std::nullopt;
  Node* masking = in->producer();
  if (masking == nullptr || in->users().size() != 1) return std::nullopt;
  const Value* scores = scoresOf(*masking);
  if (scores == nullptr || scores->dtype() != in->dtype()) return std::nullopt;
  std::optional<Tensor> mask = maskOf(*masking, scores);
  if (!mask || softmaxMaskRows(in->shape(), mask->shape()) == 0) return std::nullopt;
  return Fold{softmax, masking, const_cast<Value*>(scores), mask->castTo(in->dtype())};
}

}  // namespace

bool foldMaskIntoSoftmax(Graph& graph) {
  std::vector<Fold> folds;
  for (const auto& n : graph.nodes())
    if (auto f = foldable(graph, n.get())) folds.push_back(std::move(*f));
  for (Fold& f : folds) {  // the Softmax keeps its name and its output's
    Value* mask = graph.addConstant(graph.uniqueName(f.masking->name() + "/mask"), f.mask);
    f.softmax->setInput(0, f.scores);
    f.softmax->addInput(mask);
    graph.eraseNode(f.masking);
  }
  return !folds.empty();
}

}  // namespace ds
