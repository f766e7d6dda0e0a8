#include "passes/fold_transpose.h"

#include <cstdint>
#include <vector>

namespace ds {
namespace {

// True for a Transpose whose perm swaps the last two dims and keeps the others.
bool swapsLastTwoDims(const Node& node) {
  if (node.op() != "Transpose" || node.input(0)->rank() < 2) return false;
  const std::vector<int64_t>& perm = node.ints("perm");
  int64_t rank = static_cast<int64_t>(perm.size());
  for (int64_t d = 0; d < rank; ++d) {
    int64_t want = d < rank - 2 ? d : (d == rank - 2 ? rank - 1 : rank - 2);
    if (perm[static_cast<size_t>(d)] != want) return false;
  }
  return true;
}

}  // namespace

bool foldTransposeIntoMatMul(Graph& graph) {
  bool changed = false;
  for (const auto& owned : graph.nodes()) {
    Node* node = owned.get();
    if (node->op() != "MatMul") continue;
    for (size_t operand = 0; operand < 2; ++operand) {
      Node* producer = node->input(operand)->producer();
      if (producer == nullptr || !swapsLastTwoDims(*producer)) continue;
      const char* attr = operand == 0 ? "transA" : "transB";
      node->setAttr(attr, int64_t{node->i(attr) == 0});
      node->setInput(operand, producer->input(0));
      changed = true;
    }
  }
  return changed;
}

}  // namespace ds
