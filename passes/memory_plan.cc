#include "passes/memory_plan.h"

#include <algorithm>
#include <map>
#include <set>
#include <unordered_map>
#include <vector>

#include "ir/error.h"
#include "ir/op_registry.h"
#include "ir/plan_verifier.h"
#include "passes/offload_optimizer.h"

namespace ds {
namespace {

int64_t alignUp(int64_t v) {
  return (v + kArenaAlignment - 1) / kArenaAlignment * kArenaAlignment;
}

struct Buffer {
  std::vector<const Value*> values;  // more than one when in-place pairs share it
  int64_t bytes = 0;
  int64_t first = 0, last = 0;
};

bool isAsynchronous(const Node& n) {
  return isCollectiveOp(n.op()) || n.op() == "Copy";
}

// A collective (or offload's Copy) runs on a stream of its own and overlaps the
// compute steps after it until the first compute step that reads its result waits
// for it (lowering's events), so its inputs stay live until then: no compute step
// in between may reuse their bytes. Readers on other streams (a Copy of the
// result, a host step) order nothing on the compute stream, so they do not count;
// a result no compute step reads is waited for at the end of the run.
void extendCollectiveInputs(const Graph& g, const std::map<const Node*, int64_t>& index,
                            int64_t end, std::unordered_map<const Value*, Allocation>& live) {
  for (const auto& n : g.nodes()) {
    if (!isAsynchronous(*n)) continue;
    int64_t done = end;
    for (const Value* out : n->outputs())
      for (const Node* user : out->users())
        if (!isAsynchronous(*user) && !user->onHost()) done = std::min(done, index.at(user));
    for (const Value* in : n->inputs())
      if (auto it = live.find(in); it != live.end())
        it->second.last_step = std::max(it->second.last_step, done);
  }
}

bool relabels(const std::string& op);

// The values stored in a state's memory: each update's new value, and down a chain
// of relabelling steps their inputs, while an input has no other reader, has the
// same bytes and side, and is made after the state's last reader (so writing it
// over the state's old value clobbers nothing).
std::unordered_map<const Value*, const Value*> stateMemory(
    const Graph& g, const std::map<const Node*, int64_t>& index) {
  std::unordered_map<const Value*, const Value*> in_state;
  for (const Graph::StateUpdate& u : g.stateUpdates()) {
    in_state[u.next] = u.state;
    int64_t last_read = -1;
    for (const Node* user : u.state->users()) last_read = std::max(last_read, index.at(user));
    const Value* v = u.next;
    while (v->producer() && relabels(v->producer()->op())) {
      const Value* x = v->producer()->input(0);
      if (!x->producer() || x->users().size() != 1 || g.isOutput(x) ||
          x->type().bytes() != v->type().bytes() || isHostValue(x) != isHostValue(u.state) ||
          index.at(x->producer()) <= last_read || in_state.count(x))
        break;
      in_state[x] = u.state;
      v = x;
    }
  }
  return in_state;
}

// Step 1: lifetimes in node order.
std::unordered_map<const Value*, Allocation> lifetimes(
    const Graph& g, std::map<const Node*, int64_t>& index,
    const std::unordered_map<const Value*, const Value*>& in_state) {
  const auto step = static_cast<int64_t>(index.size());
  std::unordered_map<const Value*, Allocation> live;
  for (const auto& n : g.nodes()) {
    for (const Value* v : n->outputs()) {
      if (in_state.count(v)) continue;  // in its state's memory
      Allocation& a = live[v];
      a.bytes = static_cast<int64_t>(v->type().bytes());
      a.host = isHostValue(v);
      a.first_step = a.last_step = index[n.get()];
      for (const Node* user : v->users()) a.last_step = std::max(a.last_step, index[user]);
    }
  }
  for (const Value* out : g.outputs())
    if (auto it = live.find(out); it != live.end()) it->second.last_step = step;
  extendCollectiveInputs(g, index, step, live);
  return live;
}

// Ops whose output is their input's bytes under other dims (ir/ops/shape_ops.cc).
bool relabels(const std::string& op) {
  return op == "Reshape" || op == "Flatten" || op == "Squeeze" || op == "Unsqueeze";
}

// Step 2: an output joins its in-place input's buffer when the buffer dies here
// (no value in it is read later), or, for a relabelling op, always: the buffer then
// lives until its last value's last read, and nothing writes over it until then,
// since values are never written after they are made and an in-place step needs
// the whole buffer dead.
std::vector<Buffer> buffers(const Graph& g,
                            const std::unordered_map<const Value*, Allocation>& live,
                            const std::map<const Node*, int64_t>& index, int64_t* inplace) {
  std::vector<Buffer> out;
  std::unordered_map<const Value*, size_t> buffer_of;
  for (const auto& n : g.nodes()) {
    int in = n->schema().inplace_input;
    for (size_t o = 0; o < n->numOutputs(); ++o) {
      const Value* v = n->output(o);
      if (!live.count(v)) continue;  // stored in a state's memory
      const Allocation& a = live.at(v);
      bool reuse = o == 0 && in >= 0 && n->hasInput(static_cast<size_t>(in));
      const Value* src = reuse ? n->input(static_cast<size_t>(in)) : nullptr;
      // The same bytes: element-wise ops keep the shape, reshapes relabel it.
      reuse = reuse && buffer_of.count(src) && src->dtype() == v->dtype() &&
              src->type().numel() == v->type().numel() && live.at(src).host == a.host &&
              (relabels(n->op()) || out[buffer_of.at(src)].last == index.at(n.get())) &&
              std::count(n->inputs().begin(), n->inputs().end(), src) == 1;
      if (reuse) {
        Buffer& b = out[buffer_of[src]];
        b.values.push_back(v);
        b.last = std::max(b.last, a.last_step);
        buffer_of[v] = buffer_of[src];
        ++*inplace;
        continue;
      }
      buffer_of[v] = out.size();
      out.push_back({{v}, a.bytes, a.first_step, a.last_step});
    }
  }
  return out;
}

// Step 3: lowest offset that clears every placed buffer live at the same time.
int64_t place(const Buffer& b, const std::vector<std::pair<const Buffer*, int64_t>>& placed) {
  std::vector<std::pair<int64_t, int64_t>> busy;  // [offset, end) of conflicting buffers
  for (const auto& [other, offset] : placed)
    if (other->first <= b.last && b.first <= other->last)
      busy.emplace_back(offset, offset + alignUp(other->bytes));
  std::sort(busy.begin(), busy.end());
  int64_t offset = 0;
  for (const auto& [start, end] : busy) {
    if (offset + alignUp(b.bytes) <= start) break;
    offset = std::max(offset, end);
  }
  return offset;
}

}  // namespace

MemoryPlan planMemory(const Graph& g) {
  MemoryPlan plan;
  std::map<const Node*, int64_t> index;
  int64_t step = 0;
  for (const auto& n : g.nodes()) index[n.get()] = step++;
  plan.in_state = stateMemory(g, index);
  auto live = lifetimes(g, index, plan.in_state);
  std::vector<Buffer> bufs = buffers(g, live, index, &plan.inplace_count);
  std::vector<const Buffer*> order;
  for (const Buffer& b : bufs) order.push_back(&b);
  std::stable_sort(order.begin(), order.end(),
                   [](const Buffer* a, const Buffer* b) { return a->bytes > b->bytes; });
  std::vector<std::pair<const Buffer*, int64_t>> placed[2];  // device, host arenas
  for (const Buffer* b : order) {
    const bool host = live.at(b->values.front()).host;
    int64_t offset = place(*b, placed[host]);
    placed[host].emplace_back(b, offset);
    int64_t& arena = host ? plan.host_arena_bytes : plan.arena_bytes;
    arena = std::max(arena, offset + alignUp(b->bytes));
    for (const Value* v : b->values) {
      Allocation a = live.at(v);
      a.offset = offset;
      plan.allocations[v] = a;
    }
  }
  // Step 4: the peak of live device bytes over the schedule.
  std::vector<int64_t> at_step(index.size() + 1, 0);
  for (const Buffer& b : bufs)
    if (!live.at(b.values.front()).host)
      for (int64_t s = b.first; s <= b.last; ++s) at_step[static_cast<size_t>(s)] += b.bytes;
  for (int64_t bytes : at_step) plan.peak_live_bytes = std::max(plan.peak_live_bytes, bytes);
  return plan;
}

void checkMemoryPlan(const Graph& g, const MemoryPlan& plan) {
  std::vector<std::pair<const Value*, Allocation>> all(plan.allocations.begin(),
                                                       plan.allocations.end());
  // Values sharing a buffer through chains of in-place steps (the first of each).
  std::unordered_map<const Value*, const Value*> first_of;
  for (const auto& n : g.nodes()) {
    const int in = n->schema().inplace_input;
    for (const Value* v : n->outputs()) first_of[v] = v;
    if (in < 0 || !n->hasInput(static_cast<size_t>(in))) continue;
    const Value *src = n->input(static_cast<size_t>(in)), *out = n->output(0);
    auto a = plan.allocations.find(src), b = plan.allocations.find(out);
    if (a != plan.allocations.end() && b != plan.allocations.end() &&
        a->second.offset == b->second.offset && a->second.host == b->second.host &&
        first_of.count(src))
      first_of[out] = first_of[src];
  }
  auto inplacePair = [&](const Value* a, const Value* b) {
    return first_of.count(a) && first_of.count(b) && first_of[a] == first_of[b];
  };
  for (size_t i = 0; i < all.size(); ++i) {
    for (size_t j = i + 1; j < all.size(); ++j) {
      const auto& [va, a] = all[i];
      const auto& [vb, b] = all[j];
      bool same_time =
          a.first_step <= b.last_step && b.first_step <= a.last_step && a.host == b.host;
      bool same_bytes = a.offset < b.offset + b.bytes && b.offset < a.offset + a.bytes;
      DS_CHECK(!(same_time && same_bytes) || (a.offset == b.offset && inplacePair(va, vb)),
               "memory plan: '", va->name(), "' and '", vb->name(),
               "' are live together and overlap in the arena");
    }
  }
  DS_CHECK(plan.allocations.size() <= g.numValues(), "memory plan: more allocations than values");
}

}  // namespace ds
