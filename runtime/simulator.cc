#include "runtime/simulator.h"

#include <algorithm>
#include <map>
#include <utility>

#include <nlohmann/json.hpp>

#include "ir/error.h"

namespace ds {
namespace {

using Interval = std::pair<double, double>;

// The measure of a union of intervals.
double unionLength(std::vector<Interval> intervals) {
  std::sort(intervals.begin(), intervals.end());
  double total = 0, begin = 0, end = -1;
  for (const auto& [s, e] : intervals) {
    if (s > end) {
      total += std::max(0.0, end - begin);
      begin = s;
    }
    end = std::max(end, e);
  }
  return total + std::max(0.0, end - begin);
}

// The measure of the time `a` covers and `b` does not: |a u b| - |b|.
double uncoveredLength(const std::vector<Interval>& a, const std::vector<Interval>& b) {
  std::vector<Interval> both = a;
  both.insert(both.end(), b.begin(), b.end());
  return unionLength(std::move(both)) - unionLength(b);
}

class Player {
 public:
  Player(const planpb::RankPlan& rank, int num_streams, std::vector<StepCost> costs)
      : rank_(rank), stream_free_(static_cast<size_t>(num_streams), 0), costs_(std::move(costs)) {}

  // Issues the steps of `phase` once, as micro-step `micro_step`.
  void issue(planpb::Phase phase, int micro_step, std::vector<SimulatedStep>* timeline) {
    for (int i = 0; i < rank_.steps_size(); ++i) {
      const planpb::Step& step = rank_.steps(i);
      if (step.phase() != phase) continue;
      double& stream_free = stream_free_.at(static_cast<size_t>(step.stream()));
      double start = stream_free;
      for (int e : step.wait_events()) {
        auto it = event_done_.find(e);
        if (it != event_done_.end()) start = std::max(start, it->second);
      }
      const double end = start + costs_[static_cast<size_t>(i)].seconds;
      stream_free = end;
      if (step.record_event() >= 0) event_done_[step.record_event()] = end;
      timeline->push_back({i, micro_step, start, end});
    }
  }

 private:
  const planpb::RankPlan& rank_;
  std::vector<double> stream_free_;
  std::map<int, double> event_done_;  // event -> end of its latest recording step
  std::vector<StepCost> costs_;
};

void checkStreams(const planpb::RankPlan& rank, int num_streams) {
  for (const planpb::Step& step : rank.steps())
    DS_CHECK(step.stream() >= 0 && step.stream() < num_streams, "step '", step.node(),
             "' runs on stream ", step.stream(), ", but the plan has ", num_streams, " streams");
}

// Busy time per stream and the overlap figures, from the timeline.
void summarize(const PlanFile& plan, Simulation* sim) {
  const planpb::RankPlan& rank = plan.plan.ranks(sim->rank);
  std::vector<Interval> compute, comm;
  for (const SimulatedStep& s : sim->timeline) {
    const planpb::Step& step = rank.steps(s.step);
    sim->stream_busy_seconds[static_cast<size_t>(step.stream())] += s.end - s.start;
    sim->step_seconds = std::max(sim->step_seconds, s.end);
    (isCollectiveOp(step.op()) ? comm : compute).push_back({s.start, s.end});
  }
  sim->compute_seconds = unionLength(compute);
  sim->collective_seconds = unionLength(comm);
  // Rounding in the interval sums must not show as exposure beyond the collectives.
  sim->exposed_comm_seconds =
      std::clamp(uncoveredLength(comm, compute), 0.0, sim->collective_seconds);
}

}  // namespace

int64_t accumulationSteps(const PlanFile& plan) {
  const nlohmann::json config = plan.config();
  const nlohmann::json& g = config.value("gradient_accumulation_steps", nlohmann::json(1));
  return g.is_number_integer() ? std::max<int64_t>(1, g.get<int64_t>()) : 1;
}

Simulation simulate(const PlanFile& plan, int rank, const DeviceProfile& device) {
  DS_CHECK(rank >= 0 && rank < plan.plan.ranks_size(), "rank ", rank, " is not in the plan (",
           plan.plan.ranks_size(), " ranks)");
  const planpb::RankPlan& steps = plan.plan.ranks(rank);
  const int num_streams = std::max(1, plan.plan.streams_size());
  checkStreams(steps, num_streams);
  Simulation sim;
  sim.rank = rank;
  sim.accumulation = accumulationSteps(plan);
  sim.stream_busy_seconds.assign(static_cast<size_t>(num_streams), 0);
  for (const planpb::Step& step : steps.steps()) {
    sim.costs.push_back(stepCost(plan, step, device));
    sim.training |= step.phase() == planpb::OPTIMIZER_STEP;
  }
  Player player(steps, num_streams, sim.costs);
  const int micro_steps = static_cast<int>(sim.accumulation);
  for (int g = 0; g < micro_steps; ++g) player.issue(planpb::EVERY_MICRO_STEP, g, &sim.timeline);
  player.issue(planpb::OPTIMIZER_STEP, micro_steps, &sim.timeline);
  summarize(plan, &sim);
  return sim;
}

}  // namespace ds
