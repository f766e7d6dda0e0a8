#include "passes/offload_optimizer.h"

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "ir/error.h"
#include "ir/plan_verifier.h"

namespace ds {
namespace {

// Host-resident during the pass: optimizer state, and what host nodes and host
// copies produce.
bool offloaded(const Value* v) {
  if (!v->producer()) return v->role() == Role::OptimizerState;
  const Node* p = v->producer();
  return p->op() == "Copy" ? p->s("to") == "host" : p->onHost();
}

class Offload {
 public:
  explicit Offload(Graph& g) : g_(g) {}

  void run() {
    std::set<const Value*> updated_on_host;  // states whose new value a host node makes
    for (const Graph::StateUpdate& u : g_.stateUpdates())
      if (offloaded(u.state)) updated_on_host.insert(u.next);
    std::vector<Node*> nodes;
    for (const auto& n : g_.nodes()) nodes.push_back(n.get());
    for (Node* n : nodes) {
      if (isCollectiveOp(n->op())) continue;
      bool host = false;
      for (const Value* v : n->inputs()) host |= v && offloaded(v);
      for (const Value* v : n->outputs()) host |= updated_on_host.count(v) > 0;
      if (host) n->setOnHost(true);
    }
    for (auto it = nodes.rbegin(); it != nodes.rend(); ++it) {
      if (unpacksForTheDevice(**it, updated_on_host)) (*it)->setOnHost(false);
      if (widensForTheHost(**it)) (*it)->setOnHost(true);
    }
    for (Node* n : nodes) copyInputs(n);
    deviceStateUpdates();
  }

  // A device Cast to a wider dtype read only by host nodes (a 16-bit gradient summed
  // into an f32 accumulator on the host) runs on the host instead, so the narrow
  // value crosses PCIe (users are decided first: nodes are visited in reverse order).
  bool widensForTheHost(const Node& n) const {
    if (n.onHost() || n.op() != "Cast" || n.output(0)->users().empty() ||
        dtypeSize(n.output(0)->dtype()) <= dtypeSize(n.input(0)->dtype()))
      return false;
    if (std::find(g_.outputs().begin(), g_.outputs().end(), n.output(0)) != g_.outputs().end())
      return false;
    for (const Node* user : n.output(0)->users())
      if (!user->onHost()) return false;
    return true;
  }

  // A host node that only rearranges bytes (a bucket's unpacking) for device readers
  // alone runs on the device instead: its input goes up in one Copy, not each piece
  // in its own (users are decided first: nodes are visited in reverse order).
  bool unpacksForTheDevice(const Node& n, const std::set<const Value*>& updated_on_host) const {
    static const std::set<std::string> movers = {"Split",   "Reshape",   "Flatten",
                                                 "Squeeze", "Unsqueeze", "Identity"};
    if (!n.onHost() || !movers.count(n.op())) return false;
    for (const Value* v : n.outputs()) {
      if (updated_on_host.count(v) ||
          std::find(g_.outputs().begin(), g_.outputs().end(), v) != g_.outputs().end())
        return false;
      for (const Node* user : v->users())
        if (user->onHost()) return false;
    }
    return true;
  }

 private:
  // Every input on the other side of the node's placement arrives through a Copy.
  void copyInputs(Node* n) {
    if (n->op() == "Copy") return;
    for (size_t i = 0; i < n->numInputs(); ++i) {
      Value* v = n->input(i);
      if (v && offloaded(v) != n->onHost()) n->setInput(i, copied(v, n->onHost(), n));
    }
  }

  // A device state (a parameter) updated with a value made on the host.
  void deviceStateUpdates() {
    std::vector<Graph::StateUpdate> updates = g_.stateUpdates();
    for (const Graph::StateUpdate& u : updates) {
      if (offloaded(u.state) || !offloaded(u.next)) continue;
      Graph::PhaseScope phase(g_, u.next->producer()->phase());
      Node* copy = g_.addNode("Copy", {u.next}, {{"to", std::string("device")}},
                              {u.next->name() + "/device"}, u.next->name() + "/to_device");
      g_.replaceStateUpdate(u.state, u.next, copy->output(0));
    }
  }

  // A device value goes down to the host as soon as it is made, in its producer's
  // phase: copies run on the copy stream, so a gradient shard's overlaps the rest of
  // backward. A value goes up right before its first device reader.
  Value* copied(Value* v, bool to_host, Node* before) {
    auto key = std::make_pair(v, to_host);
    if (auto it = copies_.find(key); it != copies_.end()) return it->second;
    if (to_host && v->producer() && !v->producer()->onHost()) {
      before = g_.nextNode(v->producer());
      Graph::PhaseScope phase(g_, v->producer()->phase());
      return copies_[key] = addCopy(v, to_host, before);
    }
    Graph::PhaseScope phase(g_, before->phase());
    return copies_[key] = addCopy(v, to_host, before);
  }

  Value* addCopy(Value* v, bool to_host, Node* before) {
    const std::string to = to_host ? "host" : "device";
    Node* copy = g_.addNode("Copy", {v}, {{"to", to}}, {g_.uniqueName(v->name() + "/" + to)},
                            g_.uniqueName(v->name() + "/to_" + to), before);
    copy->setOnHost(false);  // copies are issued by the device's copy engine
    copy->output(0)->setRole(v->role() == Role::Gradient ? Role::Gradient : Role::Activation);
    return copy->output(0);
  }

  Graph& g_;
  std::map<std::pair<Value*, bool>, Value*> copies_;
};

}  // namespace

bool isHostValue(const Value* v) {
  if (v->producer()) return offloaded(v);
  // A source: host when host nodes use it, or when it reaches the device only
  // through copies (an offloaded parameter shard, passes/offload_params.h).
  bool only_copied_up = !v->users().empty();
  for (const Node* user : v->users()) {
    if (user->onHost()) return true;
    only_copied_up &= user->op() == "Copy" && user->s("to") == "device";
  }
  return only_copied_up;
}

void offloadOptimizer(Graph& g) {
  Offload(g).run();
}

}  // namespace ds
