// The cross-entropy loss over pad-products' padded logits (see fuse_loss_padding.h).
#include "passes/fuse_loss_padding.h"

#include <string>
#include <vector>

namespace ds {
namespace {

// The width a Slice keeps of its input's last axis, counting from 0 with step 1;
// 0 if it is not such a slice.
int64_t leadingWidth(const Node& slice) {
  if (slice.op() != "Slice" || slice.numInputs() != 1) return 0;
  const int64_t rank = slice.input(0)->rank();
  const std::vector<int64_t>& axes = slice.ints("axes");
  const std::vector<int64_t>& steps = slice.ints("steps");
  if (axes.size() != 1 || (axes[0] != rank - 1 && axes[0] != -1)) return 0;
  if (slice.ints("starts") != std::vector<int64_t>{0}) return 0;
  if (!steps.empty() && steps != std::vector<int64_t>{1}) return 0;
  const int64_t width = slice.output(0)->shape().back();
  return width < slice.input(0)->shape().back() ? width : 0;
}

bool readsPaddedScores(Graph& g, Node* loss) {
  if (loss->hasInput(2) || loss->numOutputs() != 1 || loss->i("classes") != 0) return false;
  Value* scores = loss->input(0);
  if (scores->rank() != 2) return false;
  Node* reshape = nullptr;
  Node* slice = scores->producer();
  if (slice && slice->op() == "Reshape") {
    reshape = slice;
    slice = reshape->input(0)->producer();
  }
  if (!slice) return false;
  const int64_t width = leadingWidth(*slice);
  if (width == 0 || scores->shape()[1] != width) return false;
  Value* padded = slice->input(0);
  if (reshape || padded->rank() != 2) {
    const int64_t padded_width = padded->shape().back();
    Shape rows_by_width = {padded->type().numel() / padded_width, padded_width};
    if (rows_by_width[0] != scores->shape()[0]) return false;
    padded = g.addNode("Reshape", {padded}, {{"shape", rows_by_width}},
                       {g.uniqueName(scores->name() + "/padded")}, "", loss)
                 ->output(0);
  }
  loss->setInput(0, padded);
  loss->setAttr("classes", width);
  g.inferTypes(loss);
  return true;
}

}  // namespace

bool fuseLossPadding(Graph& g) {
  std::vector<Node*> losses;
  for (const auto& n : g.nodes())
    if (n->op() == "SoftmaxCrossEntropyLoss") losses.push_back(n.get());
  bool changed = false;
  for (Node* loss : losses) changed |= readsPaddedScores(g, loss);
  return changed;
}

}  // namespace ds
