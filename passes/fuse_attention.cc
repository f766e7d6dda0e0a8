#include "passes/fuse_attention.h"

#include <algorithm>
#include <optional>
#include <vector>

namespace ds {
namespace {

const std::vector<int64_t> kHeadSplit = {0, 2, 1, 3};  // [B, T, H, D] <-> [B, H, T, D]
const std::vector<int64_t> kKeysSplit = {0, 2, 3, 1};  // [B, T, H, D] -> [B, H, D, T]
constexpr double kMasked = -1e4;  // at most this is masked out: exp(-1e4) is 0 in f32

// The single node that reads `v`, when it is not also a graph output.
Node* soleUser(const Graph& g, const Value* v) {
  if (v->users().size() != 1 || g.isOutput(v)) return nullptr;
  return v->users()[0];
}

// X when `v` = Transpose(X){perm}, else null.
Value* transposedFrom(const Value* v, const std::vector<int64_t>& perm) {
  const Node* t = v->producer();
  if (t == nullptr || t->op() != "Transpose" || t->ints("perm") != perm) return nullptr;
  return t->input(0);
}

bool plainMatMul(const Node& m) {
  return m.op() == "MatMul" && m.i("transA") == 0 && m.i("transB") == 0 && m.f("alpha") == 1.0;
}

// Whether `mask` (an additive constant over [.., T, T]) is causal.
bool isCausal(const Value* mask, int64_t t) {
  if (mask->role() != Role::Constant || !mask->hasData()) return false;
  const Shape& s = mask->shape();
  if (s.size() < 2 || s[s.size() - 1] != t || s[s.size() - 2] != t || mask->type().numel() != t * t)
    return false;
  const Tensor& m = mask->data();
  for (int64_t i = 0; i < t; ++i)
    for (int64_t j = 0; j < t; ++j) {
      const double value = m.getDouble(i * t + j);
      if (j <= i ? value != 0.0 : !(value <= kMasked)) return false;
    }
  return true;
}

struct Match {
  Node *scores, *softmax, *context, *merge;
  Value *q, *k, *v;
  double scale;
  bool causal;
};

// The attention whose head-merging Transpose is `merge`, if it folds.
std::optional<Match> match(const Graph& g, Node* merge) {
  if (merge->op() != "Transpose" || merge->ints("perm") != kHeadSplit) return std::nullopt;
  Match m{};
  m.merge = merge;
  m.context = merge->input(0)->producer();
  if (m.context == nullptr || !plainMatMul(*m.context) ||
      soleUser(g, m.context->output(0)) != merge)
    return std::nullopt;
  m.softmax = m.context->input(0)->producer();
  if (m.softmax == nullptr || m.softmax->op() != "Softmax" ||
      soleUser(g, m.softmax->output(0)) != m.context)
    return std::nullopt;
  m.scores = m.softmax->input(0)->producer();
  if (m.scores == nullptr || m.scores->op() != "MatMul" || m.scores->i("transA") != 0 ||
      soleUser(g, m.scores->output(0)) != m.softmax || m.scores->f("alpha") <= 0)
    return std::nullopt;
  const int64_t rank = m.softmax->input(0)->rank(), axis = m.softmax->i("axis");
  if (rank != 4 || (axis != -1 && axis != 3)) return std::nullopt;
  m.q = transposedFrom(m.scores->input(0), kHeadSplit);
  m.k = transposedFrom(m.scores->input(1), m.scores->i("transB") != 0 ? kHeadSplit : kKeysSplit);
  m.v = transposedFrom(m.context->input(1), kHeadSplit);
  if (m.q == nullptr || m.k == nullptr || m.v == nullptr) return std::nullopt;
  if (m.q->dtype() != m.k->dtype() || m.q->dtype() != m.v->dtype()) return std::nullopt;
  m.scale = m.scores->f("alpha");
  m.causal = m.softmax->numInputs() > 1;
  if (m.causal &&
      (m.q->shape()[1] != m.k->shape()[1] || !isCausal(m.softmax->input(1), m.q->shape()[1])))
    return std::nullopt;
  return m;
}

void fuse(Graph& g, const Match& m) {
  const std::string& name = m.context->name();
  Node* attention = g.addNode(
      "FusedAttention", {m.q, m.k, m.v},
      {{"scale", m.scale}, {"causal", int64_t{m.causal ? 1 : 0}}},
      {g.uniqueName(m.merge->output(0)->name() + "/fused"), g.uniqueName(name + "/stats")},
      g.uniqueName(name + "/attention"), m.merge);
  g.replaceAllUsesWith(m.merge->output(0), attention->output(0));
  for (Node* n : {m.merge, m.context, m.softmax, m.scores}) g.eraseNode(n);
}

}  // namespace

bool fuseAttention(Graph& graph) {
  std::vector<Match> matches;
  for (const auto& n : graph.nodes())
    if (auto m = match(graph, n.get())) matches.push_back(*m);
  for (const Match& m : matches) fuse(graph, m);
  return !matches.empty();
}

}  // namespace ds
