#include "passes/recompute.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace ds {
namespace {

bool isTrainingBatchNorm(const Node* n) {
  return n->op() == "BatchNormalization" && n->hasAttr("training_mode") &&
         n->i("training_mode") != 0;
}

class Recompute {
 public:
  Recompute(Graph& g, const Node* last_forward) : g_(g) {
    size_t position = 0;
    bool in_forward = true;
    for (const auto& n : g.nodes()) {
      order_[n.get()] = position++;
      if (in_forward) forward_.push_back(n.get());
      in_forward = in_forward && n.get() != last_forward;
    }
    forward_end_ = order_.at(forward_.back());
    for (const Value* v : g.outputs()) pinned_.insert(v);
    // (BatchNorm's running statistics are bound to state updates later; a state
    // update made before this pass would be pinned the same way.)
    for (const Graph::StateUpdate& u : g.stateUpdates()) pinned_.insert(u.next);
    markActivations();
  }

  RecomputeResult run() {
    RecomputeResult result;
    size_t begin = 0;
    for (size_t end : checkpoints()) {
      const size_t copied = recomputeSegment(begin, end);
      result.copied_nodes += copied;
      result.segments += copied > 0;
      begin = end + 1;
    }
    return result;
  }

 private:
  // A node of the forward (copies are neither forward nor in order_).
  bool isForward(const Node* n) const {
    auto it = order_.find(n);
    return it != order_.end() && it->second <= forward_end_;
  }

  // Activations: forward values that depend on a feed (weights' casts do not).
  void markActivations() {
    for (Node* n : forward_) {
      bool depends = false;
      for (const Value* v : n->inputs())
        depends |= v && (v->producer() ? activation_.count(v) > 0
                                       : v->role() == Role::Input || v->role() == Role::Label);
      if (depends)
        for (const Value* v : n->outputs()) activation_.insert(v);
    }
  }

  bool readByBackward(const Value* v) const {
    for (const Node* user : v->users())
      if (!isForward(user)) return true;
    return false;
  }

  int64_t backwardBytes(const Node* n) const {
    int64_t bytes = 0;
    for (const Value* v : n->outputs())
      if (activation_.count(v) && readByBackward(v))
        bytes += static_cast<int64_t>(v->type().bytes());
    return bytes;
  }

  // Positions (in forward_) after which one activation alone is still read by later
  // forward nodes: the candidate cuts.
  std::vector<size_t> cuts() const {
    std::unordered_map<const Value*, size_t> last_read;
    for (size_t i = 0; i < forward_.size(); ++i)
      for (const Value* v : forward_[i]->inputs())
        if (v && activation_.count(v)) last_read[v] = i;
    std::unordered_set<const Value*> live;
    std::vector<size_t> out;
    for (size_t i = 0; i < forward_.size(); ++i) {
      for (const Value* v : forward_[i]->inputs())
        if (v && last_read.count(v) && last_read.at(v) == i) live.erase(v);
      for (const Value* v : forward_[i]->outputs())
        if (last_read.count(v) && last_read.at(v) > i) live.insert(v);
      if (live.size() == 1) out.push_back(i);
    }
    return out;
  }

  // About sqrt(cuts) checkpoints, each closing a segment holding an equal share of
  // the bytes backward reads; the segments they close are recomputed.
  std::vector<size_t> checkpoints() const {
    const std::vector<size_t> candidates = cuts();
    if (candidates.size() < 2) return {};
    int64_t total = 0;
    for (const Node* n : forward_) total += backwardBytes(n);
    const auto segments = static_cast<int64_t>(std::ceil(std::sqrt(double(candidates.size()))));
    const int64_t share = std::max<int64_t>(1, total / (segments + 1));
    std::vector<size_t> chosen;
    int64_t bytes = 0;
    size_t next = 0;
    for (size_t k = 0; k < candidates.size(); ++k) {
      const size_t cut = candidates[k];
      for (; next <= cut; ++next) bytes += backwardBytes(forward_[next]);
      // Of a run of consecutive cuts (a chain: Add then Relu, a pooling), the last:
      // the Relu stays fused with its Add, and a pooled checkpoint is smaller.
      const bool chain_goes_on = k + 1 < candidates.size() && candidates[k + 1] == cut + 1;
      if (bytes >= share && !chain_goes_on) {
        chosen.push_back(cut);
        bytes = 0;
      }
    }
    // The last segment is not recomputed: it must hold a share too, or the segment
    // before it (the logits, when only the loss scaling follows the last cut) would
    // be recomputed right where its backward starts, saving nothing.
    while (!chosen.empty()) {
      int64_t tail = 0;
      for (size_t i = chosen.back() + 1; i < forward_.size(); ++i)
        tail += backwardBytes(forward_[i]);
      if (tail >= share) break;
      chosen.pop_back();
    }
    return chosen;
  }

  // Not Dropout (its mask is drawn per node name), nor a node making a graph output
  // or state update, nor one reading weights larger than what it makes (an
  // embedding lookup): keeping its output costs less than keeping the weights (at
  // ZeRO-3, gathered) alive until backward for the copy.
  bool recomputable(const Node* n) const {
    if (n->op() == "Dropout") return false;
    int64_t made = 0, weights = 0;
    for (const Value* v : n->outputs()) {
      if (pinned_.count(v)) return false;
      made += static_cast<int64_t>(v->type().bytes());
    }
    for (const Value* v : n->inputs())
      if (v && !activation_.count(v)) weights = std::max<int64_t>(weights, v->type().bytes());
    return weights <= made;
  }

  // Recomputes what backward reads of the values forward_[begin, end) make; the
  // segment's checkpoint, the one activation the next segment reads, is made by
  // forward_[end] or earlier and kept.
  size_t recomputeSegment(size_t begin, size_t end) {
    std::unordered_set<const Node*> segment(forward_.begin() + static_cast<long>(begin),
                                            forward_.begin() + static_cast<long>(end));
    std::vector<Value*> saved;
    Node* first_reader = nullptr;
    for (size_t i = begin; i < end; ++i) {
      if (!recomputable(forward_[i])) continue;
      for (Value* v : forward_[i]->outputs()) {
        if (!activation_.count(v) || !readByBackward(v)) continue;
        saved.push_back(v);
        for (Node* user : v->users())
          if (!isForward(user) && (!first_reader || order_.at(user) < order_.at(first_reader)))
            first_reader = user;
      }
    }
    if (saved.empty()) return 0;
    // The segment's nodes the saved values depend on, in forward order.
    std::unordered_set<const Node*> needed;
    std::vector<const Value*> stack(saved.begin(), saved.end());
    while (!stack.empty()) {
      const Node* p = stack.back()->producer();
      stack.pop_back();
      if (!p || !segment.count(p) || !recomputable(p) || !needed.insert(p).second) continue;
      for (const Value* v : p->inputs())
        if (v && activation_.count(v)) stack.push_back(v);
    }
    std::unordered_map<const Value*, Value*> copy_of;
    size_t copied = 0;
    for (size_t i = begin; i < end; ++i) {
      Node* n = forward_[i];
      if (!needed.count(n)) continue;
      copyNode(n, first_reader, copy_of);
      ++copied;
    }
    for (Value* v : saved) {
      const std::vector<Node*> users = v->users();
      for (Node* user : users) {
        if (isForward(user) || !order_.count(user)) continue;  // forward, or a copy
        for (size_t k = 0; k < user->numInputs(); ++k)
          if (user->input(k) == v) user->setInput(k, copy_of.at(v));
      }
    }
    return copied;
  }

  void copyNode(Node* n, Node* before, std::unordered_map<const Value*, Value*>& copy_of) {
    std::vector<Value*> inputs;
    for (Value* v : n->inputs()) {
      auto it = v ? copy_of.find(v) : copy_of.end();
      inputs.push_back(it == copy_of.end() ? v : it->second);
    }
    size_t outputs = n->numOutputs();
    if (isTrainingBatchNorm(n)) {
      // Y from the batch's statistics; the running ones (already updated by the
      // original) are neither read nor updated again.
      outputs = 1;
      inputs[3] = statisticPlaceholder(n->input(3), 0.0);
      inputs[4] = statisticPlaceholder(n->input(4), 1.0);
    }
    Graph::PhaseScope phase(g_, n->phase());
    Node* copy = g_.addNodeN(n->op(), inputs, n->attrs(), outputs,
                             g_.uniqueName(n->name() + "/recompute"), before);
    for (size_t k = 0; k < outputs; ++k) {
      copy->output(k)->setRole(n->output(k)->role());
      copy_of[n->output(k)] = copy->output(k);
    }
  }

  // A constant standing in for a running statistic of `like`'s type (one per type
  // and value).
  Value* statisticPlaceholder(const Value* like, double value) {
    std::string shape;
    for (int64_t d : like->shape()) shape += "_" + std::to_string(d);
    const std::string name = "recompute/statistic_" + std::string(dtypeName(like->dtype())) +
                             shape + (value == 0 ? "_zeros" : "_ones");
    if (Value* existing = g_.findValue(name)) return existing;
    std::vector<double> values(static_cast<size_t>(like->type().numel()), value);
    return g_.addConstant(name, Tensor::fromDoubles(like->dtype(), like->shape(), values));
  }

  Graph& g_;
  std::vector<Node*> forward_;
  std::unordered_map<const Node*, size_t> order_;
  size_t forward_end_ = 0;  // order_ of the last forward node
  std::unordered_set<const Value*> activation_, pinned_;
};

}  // namespace

RecomputeResult recomputeActivations(Graph& g, const Node* last_forward) {
  return Recompute(g, last_forward).run();
}

}  // namespace ds
