#include "passes/fold_scale.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <utility>
#include <vector>

namespace ds {
namespace {

// The value of `v` when it is a finite, nonzero one-element constant.
std::optional<double> scalarConstant(const Value* v) {
  if (v->role() != Role::Constant || !v->hasData() || v->type().numel() != 1) return std::nullopt;
  const double x = v->data().getDouble(0);
  if (!std::isfinite(x) || x == 0.0) return std::nullopt;
  return x;
}

// For Mul(MatMul, c), Mul(c, MatMul) or Div(MatMul, c): the MatMul and the factor
// (1/c for Div); the product must not broadcast past the MatMul's shape, and must
// not be a graph output (whose name the model's users and --loss-output know).
std::optional<std::pair<Node*, double>> scaledMatMul(const Graph& g, const Node& n) {
  if (n.op() != "Mul" && n.op() != "Div") return std::nullopt;
  const std::vector<Value*>& outputs = g.outputs();  // a model output keeps its name
  if (std::find(outputs.begin(), outputs.end(), n.output(0)) != outputs.end()) return std::nullopt;
  for (size_t side = 0; side < 2; ++side) {
    if (n.op() == "Div" && side == 1) break;
    Node* mm = n.input(side)->producer();
    const Value* c = n.input(1 - side);
    // The MatMul's own output must go: no other reader, not a graph output, and a
    // float (an integer Div truncates; alpha would not).
    if (mm == nullptr || mm->op() != "MatMul" || mm->output(0)->users().size() != 1 ||
        !isFloat(mm->output(0)->dtype()) ||
        std::find(outputs.begin(), outputs.end(), mm->output(0)) != outputs.end())
      continue;
    if (c->rank() > mm->output(0)->rank()) continue;
    const std::optional<double> x = scalarConstant(c);
    if (!x) continue;
    return std::make_pair(mm, n.op() == "Div" ? 1.0 / *x : *x);
  }
  return std::nullopt;
}

}  // namespace

bool foldScaleIntoMatMul(Graph& graph) {
  std::vector<Node*> scales;
  for (const auto& n : graph.nodes())
    if (scaledMatMul(graph, *n)) scales.push_back(n.get());
  for (Node* n : scales) {
    auto [mm, factor] = *scaledMatMul(graph, *n);
    mm->setAttr("alpha", mm->f("alpha") * factor);
    graph.replaceAllUsesWith(n->output(0), mm->output(0));
    graph.eraseNode(n);
  }
  return !scales.empty();
}

}  // namespace ds
