// Which steps of a rank's plan are ordered before which across streams, and where a
// step would touch bytes another stream may still be using.
//
// Steps on one stream run in order; a step also starts after the steps that
// recorded the events it waits on (and everything before them on their streams).
// A run of the optimizer step issues every step; a micro-step run only the
// micro-step ones, skipping waits on events the others record. Lowering uses this
// to add the waits memory reuse needs (passes/lower_to_plan.cc), and the plan
// verifier to prove none is missing (ir/plan_verifier.h).
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "ir/plan.h"

namespace ds {

class StreamOrder {
 public:
  StreamOrder(const PlanFile& plan, const planpb::RankPlan& rank, bool optimizer_run);

  // Whether step i runs in this kind of run.
  bool runs(int i) const;
  // For each stream, the latest earlier step on it that is not ordered before step
  // i (with its waits so far) and conflicts with it: i writes bytes that step reads
  // or writes, or reads bytes it writes; -1 if none. Arena and persistent bytes
  // alike (feeds and constants are never written).
  std::vector<int> hazards(int i) const;
  // Step i, with its final waits, is next in the run (steps are committed in order).
  void commit(int i);

 private:
  // The bytes a tensor occupies: its storage region and [begin, end) in it.
  struct Bytes {
    planpb::Storage storage;
    int64_t begin, end;
    bool overlaps(const Bytes& o) const {
      return storage == o.storage && begin < o.end && o.begin < end;
    }
  };

  bool conflict(const planpb::Step& step, const planpb::Step& earlier) const;
  bool overlapsAny(int tensor, const google::protobuf::RepeatedField<int32_t>& others) const;
  std::vector<int> clockOf(int i) const;  // per stream, the last step done when i starts
  int recorder(int32_t event) const;      // the committed step recording it, or -1

  const planpb::RankPlan& rank_;
  bool optimizer_run_;
  std::vector<Bytes> bytes_;              // per tensor
  std::vector<std::vector<int>> clocks_;  // per committed step
  std::vector<int> last_on_;              // per stream, its latest committed step
  std::vector<std::vector<int>> on_stream_;
  std::vector<int> committed_;  // in order
  // event -> recording step; lowering may give a committed step an event later
  mutable std::unordered_map<int32_t, int> recorder_;
};

}  // namespace ds
