#include "passes/offload_params.h"

#include <string>
#include <vector>

#include "passes/offload_optimizer.h"

namespace ds {
namespace {

bool isCopyTo(const Node* n, const char* side) {
  return n && n->op() == "Copy" && n->s("to") == side;
}

// A Copy of `v` to `to`, before `before`. A copy up feeds a gather: a communication
// buffer in flight (passes/rank_cost.h counts it so); a copy down keeps v's role.
Value* addCopy(Graph& g, Value* v, const char* to, Node* before, Phase phase) {
  Graph::PhaseScope scope(g, phase);
  Node* copy =
      g.addNode("Copy", {v}, {{"to", std::string(to)}}, {g.uniqueName(v->name() + "/" + to)},
                g.uniqueName(v->name() + "/to_" + to), before);
  copy->setOnHost(false);  // issued by the device's copy engine
  copy->output(0)->setRole(std::string(to) == "device" ? Role::CommBuffer : v->role());
  return copy->output(0);
}

// Each device reader of `shard` takes it through its own Copy up, right before it;
// host readers (an f32 shard's offloaded step) read it where it now is.
void copyUpPerReader(Graph& g, Value* shard) {
  const std::vector<Node*> readers = shard->users();
  for (Node* reader : readers) {
    if (isCopyTo(reader, "host")) {
      g.replaceAllUsesWith(reader->output(0), shard);
      continue;
    }
    if (reader->onHost() || isCopyTo(reader, "device")) continue;
    for (size_t i = 0; i < reader->numInputs(); ++i)
      if (reader->input(i) == shard)
        reader->setInput(i, addCopy(g, shard, "device", reader, reader->phase()));
  }
}

// The shard's updates arrive on the host: a host value as it is (the Copy up that
// offload-optimizer placed for a device shard then has no reader left), a device
// value through a Copy down right after it is made.
void updateOnTheHost(Graph& g, Value* shard) {
  const std::vector<Graph::StateUpdate> updates = g.stateUpdates();
  for (const Graph::StateUpdate& u : updates) {
    if (u.state != shard) continue;
    Node* producer = u.next->producer();
    if (isCopyTo(producer, "device") && isHostValue(producer->input(0))) {
      g.replaceStateUpdate(shard, u.next, producer->input(0));
    } else if (!isHostValue(u.next)) {
      Value* down = addCopy(g, u.next, "host", g.nextNode(producer), producer->phase());
      g.replaceStateUpdate(shard, u.next, down);
    }
  }
}

}  // namespace

void offloadParams(Graph& g) {
  for (Value* v : g.sourcesWithRole(Role::Parameter)) {
    if (!v->shardLayout()) continue;  // a whole parameter (persistent at stage 3)
    copyUpPerReader(g, v);
    updateOnTheHost(g, v);
  }
}

}  // namespace ds
