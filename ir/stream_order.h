// Which steps of a rank's plan are ordered before which across streams, and where a
// step would write bytes another stream may still be using.
//
// Steps on one stream run in order; a step also starts after the steps that
// recorded the events it waits on (and everything before them on their streams).
// A run of the optimizer step issues every step; a micro-step run only the
// micro-step ones, skipping waits on events the others record. Lowering uses this
// to add the waits memory reuse needs (passes/lower_to_plan.cc), and the plan
// verifier to prove none is missing (ir/plan_verifier.h).
#pragma once

#include <map>
#include <vector>

#include "ir/plan.h"

namespace ds {

class StreamOrder {
 public:
  StreamOrder(const PlanFile& plan, const planpb::RankPlan& rank, bool optimizer_run);

  // Whether step i runs in this kind of run.
  bool runs(int i) const;
  // For each stream, the latest earlier step on it that is not ordered before step
  // i (with its waits so far) and reads or writes bytes step i writes; -1 if none.
  // Arena and persistent bytes alike; feeds and constants are never written.
  std::vector<int> hazards(int i) const;
  // Step i, with its final waits, is next in the run (steps are committed in order).
  void commit(int i);

 private:
  std::vector<int> clockOf(int i) const;  // per stream, the last step done when i starts
  int recorder(int32_t event) const;      // the step of this run recording it, or -1

  const PlanFile& plan_;
  const planpb::RankPlan& rank_;
  bool optimizer_run_;
  std::vector<std::vector<int>> clocks_;  // per committed step
  std::vector<int> last_on_;              // per stream, its latest committed step
  std::vector<std::vector<int>> on_stream_;
};

}  // namespace ds
