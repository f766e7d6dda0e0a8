#include "passes/recompute.h"

#include <algorithm>
#include <cmath>
#include <set>
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
    bool in_forward = true;
    for (const auto& n : g.nodes()) {
      order_[n.get()] = order_.size();
      if (in_forward) forward_.push_back(n.get());
      in_forward = in_forward && n.get() != last_forward;
    }
    for (const Value* v : g.outputs()) pinned_.insert(v);
    for (const Graph::StateUpdate& u : g.stateUpdates()) pinned_.insert(u.next);
    markActivations();
  }

  size_t run() {
    const std::vector<size_t> ends = checkpoints();
    size_t begin = 0, copied = 0;
    for (size_t end : ends) {
      copied += recomputeSegment(begin, end);
      begin = end + 1;
    }
    return copied;
  }

 private:
  // A node of the forward (copies are neither forward nor in order_).
  bool isForward(const Node* n) const {
    auto it = order_.find(n);
    return it != order_.end() && it->second <= order_.at(forward_.back());
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
    std::set<const Value*> live;
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
    for (size_t cut : candidates) {
      for (; next <= cut; ++next) bytes += backwardBytes(forward_[next]);
      if (bytes >= share) {
        chosen.push_back(cut);
        bytes = 0;
      }
    }
    return chosen;
  }

  bool recomputable(const Node* n) const {
    if (n->op() == "Dropout") return false;  // its mask is drawn per node name
    for (const Value* v : n->outputs())
      if (pinned_.count(v)) return false;
    return true;
  }

  // Recomputes what backward reads of forward_[begin..end], but the checkpoint that
  // closes it (forward_[end]'s outputs, read by the next segment).
  size_t recomputeSegment(size_t begin, size_t end) {
    std::unordered_set<const Node*> segment(forward_.begin() + static_cast<long>(begin),
                                            forward_.begin() + static_cast<long>(end) + 1);
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
    const std::string name = "recompute/statistic_" + std::string(dtypeName(like->dtype())) + "_" +
                             std::to_string(like->type().numel()) + (value == 0 ? "_0" : "_1");
    if (Value* existing = g_.findValue(name)) return existing;
    std::vector<double> values(static_cast<size_t>(like->type().numel()), value);
    return g_.addConstant(name, Tensor::fromDoubles(like->dtype(), like->shape(), values));
  }

  Graph& g_;
  std::vector<Node*> forward_;
  std::unordered_map<const Node*, size_t> order_;
  std::unordered_set<const Value*> activation_, pinned_;
};

}  // namespace

size_t recomputeActivations(Graph& g, const Node* last_forward) {
  return Recompute(g, last_forward).run();
}

}  // namespace ds
