#include "passes/pack_attention.h"

#include <algorithm>
#include <optional>
#include <vector>

namespace ds {
namespace {

// Whether `user` is the only node that reads `v`, and `v` is no graph output.
bool onlyReadBy(const Graph& g, const Value* v, const Node* user) {
  return v->users().size() == 1 && v->users()[0] == user && !g.isOutput(v);
}

struct Match {
  Node* attention;
  Node* split;
  std::vector<Node*> reshapes;  // Q's, K's, V's
};

// The packed form of `attention`, if it has one.
std::optional<Match> match(const Graph& g, Node* attention) {
  if (attention->op() != "FusedAttention" || attention->numInputs() != 3) return std::nullopt;
  Match m{attention, nullptr, {}};
  for (size_t i = 0; i < 3; ++i) {
    Node* reshape = attention->input(i)->producer();
    if (reshape == nullptr || reshape->op() != "Reshape" ||
        !onlyReadBy(g, reshape->output(0), attention))
      return std::nullopt;
    Node* split = reshape->input(0)->producer();
    if (split == nullptr || split->op() != "Split" || split->numOutputs() != 3 ||
        split->output(i) != reshape->input(0) || !onlyReadBy(g, split->output(i), reshape) ||
        (m.split != nullptr && split != m.split))
      return std::nullopt;
    m.split = split;
    m.reshapes.push_back(reshape);
  }
  // X [B, T, 3·E] split in equal thirds along its last axis, each reshaped to
  // [B, T, H, D] with H·D = E.
  const Shape& x = m.split->input(0)->shape();
  const Shape& q = attention->input(0)->shape();
  const int64_t axis = m.split->i("axis");
  if (x.size() != 3 || (axis != 2 && axis != -1) || x[2] % 3 != 0) return std::nullopt;
  for (size_t i = 0; i < 3; ++i)
    if (m.split->output(i)->shape() != Shape{x[0], x[1], x[2] / 3} ||
        attention->input(i)->shape() != q)
      return std::nullopt;
  if (q[0] != x[0] || q[1] != x[1] || q[2] * q[3] != x[2] / 3) return std::nullopt;
  return m;
}

void pack(Graph& g, const Match& m) {
  const Shape& q = m.attention->input(0)->shape();
  const std::string& name = m.attention->name();
  Value* packed =
      g.addNode("Reshape", {m.split->input(0)}, {{"shape", Shape{q[0], q[1], 3, q[2], q[3]}}},
                {g.uniqueName(name + "/qkv")}, g.uniqueName(name + "/pack"), m.attention)
          ->output(0);
  Node* attention = g.addNode(
      "FusedAttention", {packed},
      {{"scale", m.attention->f("scale")}, {"causal", m.attention->i("causal")}},
      {g.uniqueName(m.attention->output(0)->name()), g.uniqueName(m.attention->output(1)->name())},
      name + "/packed", m.attention);
  for (size_t o = 0; o < 2; ++o) g.replaceAllUsesWith(m.attention->output(o), attention->output(o));
  g.eraseNode(m.attention);
  for (Node* reshape : m.reshapes) g.eraseNode(reshape);
  g.eraseNode(m.split);
}

}  // namespace

bool packAttention(Graph& graph) {
  std::vector<Match> matches;
  for (const auto& n : graph.nodes())
    if (auto m = match(graph, n.get())) matches.push_back(*m);
  for (const Match& m : matches) pack(graph, m);
  return !matches.empty();
}

}  // namespace ds
