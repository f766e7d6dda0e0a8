#include "passes/rank_cost.h"

#include <algorithm>
#include <map>
#include <vector>

#include "ir/optimizer_ops.h"

namespace ds {
namespace {

int64_t bytesOf(const Value* v) {
  return v ? static_cast<int64_t>(v->type().bytes()) : 0;
}

bool isCollective(const std::string& op) {
  return op == "AllReduce" || op == "ReduceScatter" || op == "AllGather" || op == "Broadcast";
}

// An update node's master, gradient and optimizer states.
void addOptimizerStep(const Node& n, RankCost* cost) {
  const Value* param = n.input(0);
  if (param->role() == Role::OptimizerState) cost->optimizer_bytes += bytesOf(param);  // master
  // Gradients in the dtype they are reduced in: a 16-bit gradient the update reads
  // widened to f32 (mixed precision) counts as the 16-bit buffer.
  const Value* grad = n.input(1);
  while (grad->producer() && (grad->producer()->op() == "Cast" || grad->producer()->op() == "Copy"))
    grad = grad->producer()->input(0);  // through offload's copy too
  cost->gradient_bytes += bytesOf(grad);
  for (size_t i : optimizerStateInputs(n))
    if (n.input(i)->role() == Role::OptimizerState) cost->optimizer_bytes += bytesOf(n.input(i));
}

// The peak of communication buffers live at once: with overlap several buckets are
// in flight, each live from its producer until the first reader of the collective
// it feeds (passes/memory_plan.h keeps it so).
int64_t peakCommBufferBytes(const Graph& g) {
  std::map<const Node*, int64_t> index;
  for (const auto& n : g.nodes()) index[n.get()] = static_cast<int64_t>(index.size());
  const int64_t end = static_cast<int64_t>(index.size());
  std::vector<int64_t> live(index.size() + 1, 0);
  for (const auto& n : g.nodes())
    for (const Value* v : n->outputs()) {
      if (v->role() != Role::CommBuffer) continue;
      int64_t last = index.at(n.get());
      for (const Node* user : v->users()) {
        last = std::max(last, index.at(user));
        if (!isCollective(user->op())) continue;
        int64_t done = end;
        for (const Value* out : user->outputs())
          for (const Node* reader : out->users()) done = std::min(done, index.at(reader));
        last = std::max(last, done);
      }
      for (int64_t s = index.at(n.get()); s <= std::min(last, end); ++s)
        live[static_cast<size_t>(s)] += bytesOf(v);
    }
  return *std::max_element(live.begin(), live.end());
}

}  // namespace

RankCost rankCost(const Graph& g, int64_t accumulation) {
  RankCost cost;
  cost.comm_buffer_bytes = peakCommBufferBytes(g);
  for (const Value* v : g.sources()) {
    if (v->role() == Role::Parameter) cost.parameter_bytes += bytesOf(v);
    if (v->role() == Role::Buffer) cost.buffer_bytes += bytesOf(v);
  }
  for (const auto& n : g.nodes()) {
    if (isOptimizerStep(n->op())) addOptimizerStep(*n, &cost);
    if (!isCollective(n->op())) continue;
    CommVolume& volume = cost.comm[n->op()];
    const int64_t calls = n->phase() == Phase::EveryMicroStep ? accumulation : 1;
    const Value* buffer = n->op() == "AllGather" ? n->output(0) : n->input(0);
    volume.calls_per_step += calls;
    volume.bytes_per_step += calls * bytesOf(buffer);
  }
  return cost;
}

}  // namespace ds
