#include "ir/stream_order.h"

#include <algorithm>

namespace ds {
namespace {

// The bytes a tensor occupies: its storage region and [begin, end) in it.
struct Bytes {
  planpb::Storage storage;
  int64_t begin, end;
  bool overlaps(const Bytes& o) const {
    return storage == o.storage && begin < o.end && o.begin < end;
  }
};

Bytes bytesOf(const PlanFile& plan, int tensor) {
  const planpb::TensorInfo& t = plan.plan.tensors(tensor);
  return {t.storage(), t.offset(),
          t.offset() + static_cast<int64_t>(plan.tensorType(tensor).bytes())};
}

// Whether `writer` writes bytes `user` reads or writes.
bool clobbers(const PlanFile& plan, const planpb::Step& writer, const planpb::Step& user) {
  for (int w : writer.outputs()) {
    const Bytes written = bytesOf(plan, w);
    for (const auto* list : {&user.inputs(), &user.outputs()})
      for (int u : *list)
        if (u >= 0 && written.overlaps(bytesOf(plan, u))) return true;
  }
  return false;
}

}  // namespace

StreamOrder::StreamOrder(const PlanFile& plan, const planpb::RankPlan& rank, bool optimizer_run)
    : plan_(plan),
      rank_(rank),
      optimizer_run_(optimizer_run),
      last_on_(static_cast<size_t>(plan.plan.streams_size()), -1),
      on_stream_(static_cast<size_t>(plan.plan.streams_size())) {}

bool StreamOrder::runs(int i) const {
  return optimizer_run_ || rank_.steps(i).phase() != planpb::OPTIMIZER_STEP;
}

int StreamOrder::recorder(int32_t event) const {
  for (size_t s = 0; s < on_stream_.size(); ++s)
    for (int j : on_stream_[s])
      if (rank_.steps(j).record_event() == event) return j;
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

std::vector<int> StreamOrder::hazards(int i) const {
  const std::vector<int> clock = clockOf(i);
  const auto s = static_cast<size_t>(rank_.steps(i).stream());
  std::vector<int> out(on_stream_.size(), -1);
  for (size_t other = 0; other < on_stream_.size(); ++other) {
    if (other == s) continue;
    const std::vector<int>& steps = on_stream_[other];
    for (auto it = steps.rbegin(); it != steps.rend() && *it > clock[other]; ++it)
      if (clobbers(plan_, rank_.steps(i), rank_.steps(*it))) {
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
}

}  // namespace ds
