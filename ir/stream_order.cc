#include "ir/stream_order.h"

#include <algorithm>

namespace ds {

StreamOrder::StreamOrder(const PlanFile& plan, const planpb::RankPlan& rank, bool optimizer_run)
    : rank_(rank),
      optimizer_run_(optimizer_run),
      last_on_(static_cast<size_t>(plan.plan.streams_size()), -1),
      on_stream_(static_cast<size_t>(plan.plan.streams_size())) {
  bytes_.reserve(static_cast<size_t>(plan.plan.tensors_size()));
  for (int t = 0; t < plan.plan.tensors_size(); ++t) {
    const planpb::TensorInfo& info = plan.plan.tensors(t);
    bytes_.push_back({info.storage(), info.offset(),
                      info.offset() + static_cast<int64_t>(plan.tensorType(t).bytes())});
  }
}

bool StreamOrder::runs(int i) const {
  return optimizer_run_ || rank_.steps(i).phase() != planpb::OPTIMIZER_STEP;
}

int StreamOrder::recorder(int32_t event) const {
  if (auto it = recorder_.find(event); it != recorder_.end()) return it->second;
  for (int j : committed_)  // an event lowering gave a committed step afterwards
    if (rank_.steps(j).record_event() == event) return recorder_[event] = j;
  return -1;
}

std::vector<int> StreamOrder::clockOf(int i) const {
  const auto s = static_cast<size_t>(rank_.steps(i).stream());
  std::vector<int> clock = last_on_[s] >= 0 ? clocks_[static_cast<size_t>(last_on_[s])]
                                            : std::vector<int>(last_on_.size(), -1);
  for (int32_t e : rank_.steps(i).wait_events())
    if (const int j = recorder(e); j >= 0)
      for (size_t k = 0; k < clock.size(); ++k)
        clock[k] = std::max(clock[k], clocks_[static_cast<size_t>(j)][k]);
  clock[s] = i;
  return clock;
}

bool StreamOrder::overlapsAny(int tensor,
                              const google::protobuf::RepeatedField<int32_t>& others) const {
  if (tensor < 0) return false;
  const Bytes& b = bytes_[static_cast<size_t>(tensor)];
  for (int o : others)
    if (o >= 0 && b.overlaps(bytes_[static_cast<size_t>(o)])) return true;
  return false;
}

// `step` writes what `earlier` reads or writes, or reads what it writes.
bool StreamOrder::conflict(const planpb::Step& step, const planpb::Step& earlier) const {
  for (int w : step.outputs())
    if (overlapsAny(w, earlier.inputs()) || overlapsAny(w, earlier.outputs())) return true;
  for (int r : step.inputs())
    if (overlapsAny(r, earlier.outputs())) return true;
  return false;
}

std::vector<int> StreamOrder::hazards(int i) const {
  const std::vector<int> clock = clockOf(i);
  const auto s = static_cast<size_t>(rank_.steps(i).stream());
  std::vector<int> out(on_stream_.size(), -1);
  for (size_t other = 0; other < on_stream_.size(); ++other) {
    if (other == s) continue;
    const std::vector<int>& steps = on_stream_[other];
    for (auto it = steps.rbegin(); it != steps.rend() && *it > clock[other]; ++it)
      if (conflict(rank_.steps(i), rank_.steps(*it))) {
        out[other] = *it;
        break;
      }
  }
  return out;
}

void StreamOrder::commit(int i) {
  if (clocks_.size() <= static_cast<size_t>(i)) clocks_.resize(static_cast<size_t>(i) + 1);
  clocks_[static_cast<size_t>(i)] = clockOf(i);
  const auto s = static_cast<size_t>(rank_.steps(i).stream());
  on_stream_[s].push_back(i);
  last_on_[s] = i;
  committed_.push_back(i);
  if (rank_.steps(i).record_event() >= 0) recorder_[rank_.steps(i).record_event()] = i;
}

}  // namespace ds
