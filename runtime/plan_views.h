// Views of a compiled plan for people and tools: a text report, a JSON document,
// a Graphviz graph of one rank's steps and a Chrome trace of the simulated
// optimizer step (runtime/simulator.h). dsplan prints them; dscompile --dump
// summary --format ... prints them for the plan it builds. Every view reads only
// the plan and the simulation, so the same plan always gives the same output.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ir/plan.h"
#include "runtime/device_profile.h"
#include "runtime/simulator.h"

namespace ds {

// Per collective op of a simulation: executions, bytes (full buffers) and time.
struct CollectiveTotals {
  int64_t calls = 0;
  int64_t bytes = 0;
  double seconds = 0;
};
std::map<std::string, CollectiveTotals> collectiveTotals(const PlanFile& plan,
                                                         const Simulation& sim);

// "12.34 ms", "56.7 us", "1.20 s".
std::string formatSeconds(double seconds);
// "1.50 MiB".
std::string formatBytes(double bytes);

// The two lines dscompile appends to its summary: predicted step time, exposed
// communication and overlap.
std::string predictionLines(const Simulation& sim, const DeviceProfile& device);

// dsplan's report: the plan, per-rank memory, communication per step, the
// predicted step time, exposed communication and overlap.
std::string planText(const PlanFile& plan, const Simulation& sim, const DeviceProfile& device);

// The header, per-rank memory (planpb::RankCost, arena and persistent bytes) and
// the simulation with every step's start and end.
nlohmann::json planJson(const PlanFile& plan, const Simulation& sim, const DeviceProfile& device);

// Graphviz: rank `rank`'s steps as nodes, an edge where a step reads a tensor an
// earlier step wrote (dashed: an event), fill by kind (compute, collective,
// optimizer step), border by stream, with a legend. Renders with `dot -Tsvg`.
std::string planDot(const PlanFile& plan, int rank);

// Chrome trace ("traceEvents", opened by Perfetto and chrome://tracing): one
// process per rank ("rank R"), one thread per stream named after it, a complete
// event ("ph": "X", microseconds) per executed step.
nlohmann::json chromeTrace(const PlanFile& plan, const std::vector<Simulation>& ranks);

// Every rank of the plan, simulated.
std::vector<Simulation> simulateRanks(const PlanFile& plan, const DeviceProfile& device);

}  // namespace ds
