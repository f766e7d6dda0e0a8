#include "runtime/plan_views.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>
#include <sstream>

#include "ir/error.h"

namespace ds {
namespace {

using nlohmann::json;

std::string fixed(double v, int digits) {
  char buf[48];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, v);
  return buf;
}

double percent(double part, double whole) {
  return whole > 0 ? 100.0 * part / whole : 0.0;
}

std::string streamName(const PlanFile& plan, int stream) {
  return stream < plan.plan.streams_size() ? plan.plan.streams(stream)
                                           : "stream " + std::to_string(stream);
}

std::string memoryLine(const PlanFile& plan) {
  const planpb::RankCost& c = plan.plan.rank_cost();
  const auto states = c.parameter_bytes() + c.gradient_bytes() + c.optimizer_bytes();
  return "memory        per rank: params " + formatBytes(double(c.parameter_bytes())) + ", grads " +
         formatBytes(double(c.gradient_bytes())) + ", optimizer " +
         formatBytes(double(c.optimizer_bytes())) + ", model states " +
         formatBytes(double(states)) + "; buffers " + formatBytes(double(c.buffer_bytes())) +
         "; comm buffers in flight " + formatBytes(double(c.comm_buffer_bytes())) + "; arena " +
         formatBytes(double(plan.plan.arena_bytes())) + ", persistent " +
         formatBytes(double(plan.plan.persistent_bytes())) +
         (c.host_bytes() > 0 ? "; host (offload) " + formatBytes(double(c.host_bytes()))
                             : std::string()) +
         "\n";
}

std::string commLines(const PlanFile& plan, const Simulation& sim) {
  const auto totals = collectiveTotals(plan, sim);
  if (totals.empty()) return "comm          per rank per optimizer step: none\n";
  std::string out = "comm          per rank per optimizer step:\n";
  for (const auto& [op, t] : totals)
    out += "                " + op + " " + std::to_string(t.calls) + " calls, " +
           formatBytes(double(t.bytes)) + ", " + formatSeconds(t.seconds) + "\n";
  return out;
}

std::string streamLines(const PlanFile& plan, const Simulation& sim) {
  std::string out;
  for (size_t s = 0; s < sim.stream_busy_seconds.size(); ++s)
    out += std::string(s == 0 ? "streams       " : "              ") +
           streamName(plan, static_cast<int>(s)) + " busy " +
           formatSeconds(sim.stream_busy_seconds[s]) + " (" +
           fixed(percent(sim.stream_busy_seconds[s], sim.step_seconds), 1) + "% of the step)\n";
  return out;
}

json deviceJson(const DeviceProfile& d) {
  return {{"name", d.name},
          {"fp16_flops", d.fp16_flops},
          {"tf32_flops", d.tf32_flops},
          {"fp32_flops", d.fp32_flops},
          {"fp64_flops", d.fp64_flops},
          {"hbm_bytes_per_s", d.hbm_bytes_per_s},
          {"launch_seconds", d.launch_seconds},
          {"nvlink_bytes_per_s", d.nvlink_bytes_per_s},
          {"nvlink_latency_seconds", d.nvlink_latency_seconds},
          {"network_bytes_per_s", d.network_bytes_per_s},
          {"network_latency_seconds", d.network_latency_seconds},
          {"gpus_per_node", d.gpus_per_node}};
}

json memoryJson(const PlanFile& plan) {
  const planpb::RankCost& c = plan.plan.rank_cost();
  json comm = json::array();
  for (const planpb::CommVolume& v : c.comm())
    comm.push_back({{"op", v.op()},
                    {"calls_per_step", v.calls_per_step()},
                    {"bytes_per_step", v.bytes_per_step()}});
  return {{"parameter_bytes", c.parameter_bytes()},
          {"gradient_bytes", c.gradient_bytes()},
          {"optimizer_bytes", c.optimizer_bytes()},
          {"buffer_bytes", c.buffer_bytes()},
          {"comm_buffer_bytes", c.comm_buffer_bytes()},
          {"model_state_bytes", c.parameter_bytes() + c.gradient_bytes() + c.optimizer_bytes()},
          {"comm", comm},
          {"arena_bytes", plan.plan.arena_bytes()},
          {"persistent_bytes", plan.plan.persistent_bytes()},
          {"peak_live_bytes", plan.plan.peak_live_bytes()}};
}

json timelineJson(const PlanFile& plan, const Simulation& sim) {
  const planpb::RankPlan& rank = plan.plan.ranks(sim.rank);
  json steps = json::array();
  for (const SimulatedStep& s : sim.timeline) {
    const planpb::Step& step = rank.steps(s.step);
    const StepCost& cost = sim.costs[static_cast<size_t>(s.step)];
    steps.push_back({{"step", s.step},
                     {"node", step.node()},
                     {"op", step.op()},
                     {"stream", step.stream()},
                     {"micro_step", s.micro_step},
                     {"start_seconds", s.start},
                     {"end_seconds", s.end},
                     {"flops", cost.flops},
                     {"bytes", cost.bytes}});
  }
  return steps;
}

json simulationJson(const PlanFile& plan, const Simulation& sim) {
  json streams = json::array();
  for (size_t s = 0; s < sim.stream_busy_seconds.size(); ++s)
    streams.push_back({{"name", streamName(plan, static_cast<int>(s))},
                       {"busy_seconds", sim.stream_busy_seconds[s]}});
  json collectives = json::array();
  for (const auto& [op, t] : collectiveTotals(plan, sim))
    collectives.push_back(
        {{"op", op}, {"calls", t.calls}, {"bytes", t.bytes}, {"seconds", t.seconds}});
  return {{"rank", sim.rank},
          {"training", sim.training},
          {"accumulation", sim.accumulation},
          {"step_seconds", sim.step_seconds},
          {"compute_seconds", sim.compute_seconds},
          {"collective_seconds", sim.collective_seconds},
          {"exposed_comm_seconds", sim.exposed_comm_seconds},
          {"overlapped_comm_seconds", sim.overlappedCommSeconds()},
          {"streams", streams},
          {"collectives", collectives},
          {"timeline", timelineJson(plan, sim)}};
}

// A Graphviz double-quoted string: backslashes and quotes escaped, newlines as
// Graphviz's centred line breaks.
std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

constexpr const char* kComputeFill = "#dbe9f6";
constexpr const char* kCollectiveFill = "#f6b26b";
constexpr const char* kOptimizerFill = "#d9ead3";
const char* streamColor(int stream) {
  static const char* palette[] = {"#1f4e79", "#c00000", "#548235", "#7030a0", "#bf8f00"};
  return palette[stream % 5];
}

const char* fillOf(const planpb::Step& step) {
  if (isCollectiveOp(step.op())) return kCollectiveFill;
  return step.phase() == planpb::OPTIMIZER_STEP ? kOptimizerFill : kComputeFill;
}

void dotLegend(const PlanFile& plan, std::ostringstream& os) {
  os << "  subgraph cluster_legend {\n    label=\"legend\"; fontname=\"Helvetica\";\n";
  os << "    legend_compute [label=\"compute step\", fillcolor=\"" << kComputeFill << "\"];\n";
  os << "    legend_collective [label=\"collective\", fillcolor=\"" << kCollectiveFill << "\"];\n";
  os << "    legend_optimizer [label=\"optimizer step (once per optimizer step)\", fillcolor=\""
     << kOptimizerFill << "\"];\n";
  for (int s = 0; s < std::max(1, plan.plan.streams_size()); ++s)
    os << "    legend_stream" << s << " [label=" << quoted("stream " + streamName(plan, s))
       << ", fillcolor=white, color=\"" << streamColor(s) << "\", penwidth=2.5];\n";
  os << "    legend_a [label=\"writer\", fillcolor=white]; legend_b [label=\"reader\", "
        "fillcolor=white]; legend_c [label=\"waiter\", fillcolor=white];\n";
  os << "    legend_a -> legend_b [label=\"data\"]; legend_a -> legend_c [label=\"event\", "
        "style=dashed];\n  }\n";
}

// Edges into step i: from the latest earlier writer of each tensor it reads, and
// from the latest earlier recorder of each event it waits on.
void dotEdges(const planpb::RankPlan& rank, std::ostringstream& os) {
  std::map<int, int> writer, recorder;
  for (int i = 0; i < rank.steps_size(); ++i) {
    const planpb::Step& step = rank.steps(i);
    std::set<int> from;
    for (int t : step.inputs()) {
      auto it = writer.find(t);
      if (t >= 0 && it != writer.end()) from.insert(it->second);
    }
    for (int f : from) os << "  s" << f << " -> s" << i << ";\n";
    for (int e : step.wait_events()) {
      auto it = recorder.find(e);
      if (it != recorder.end())
        os << "  s" << it->second << " -> s" << i << " [style=dashed, label=\"event " << e
           << "\"];\n";
    }
    for (int t : step.outputs()) writer[t] = i;
    if (step.record_event() >= 0) recorder[step.record_event()] = i;
  }
}

json metadataEvent(const char* name, int pid, int tid, const std::string& value) {
  json e = {{"ph", "M"}, {"name", name}, {"pid", pid}, {"args", {{"name", value}}}};
  if (tid >= 0) e["tid"] = tid;
  return e;
}

void addRankEvents(const PlanFile& plan, const Simulation& sim, json* events) {
  const int pid = sim.rank;
  events->push_back(metadataEvent("process_name", pid, -1, "rank " + std::to_string(pid)));
  for (int s = 0; s < std::max(1, plan.plan.streams_size()); ++s)
    events->push_back(metadataEvent("thread_name", pid, s, streamName(plan, s)));
  const planpb::RankPlan& rank = plan.plan.ranks(sim.rank);
  for (const SimulatedStep& s : sim.timeline) {
    const planpb::Step& step = rank.steps(s.step);
    const StepCost& cost = sim.costs[static_cast<size_t>(s.step)];
    events->push_back({{"name", step.op()},
                       {"cat", isCollectiveOp(step.op()) ? "collective" : "compute"},
                       {"ph", "X"},
                       {"ts", s.start * 1e6},
                       {"dur", (s.end - s.start) * 1e6},
                       {"pid", pid},
                       {"tid", step.stream()},
                       {"args",
                        {{"node", step.node()},
                         {"micro_step", s.micro_step},
                         {"flops", cost.flops},
                         {"bytes", cost.bytes}}}});
  }
}

}  // namespace

std::map<std::string, CollectiveTotals> collectiveTotals(const PlanFile& plan,
                                                         const Simulation& sim) {
  std::map<std::string, CollectiveTotals> totals;
  const planpb::RankPlan& rank = plan.plan.ranks(sim.rank);
  for (const SimulatedStep& s : sim.timeline) {
    const planpb::Step& step = rank.steps(s.step);
    if (!isCollectiveOp(step.op())) continue;
    CollectiveTotals& t = totals[step.op()];
    t.calls += 1;
    t.bytes += sim.costs[static_cast<size_t>(s.step)].comm_bytes;
    t.seconds += s.end - s.start;
  }
  return totals;
}

std::string formatSeconds(double seconds) {
  if (seconds >= 1) return fixed(seconds, 2) + " s";
  if (seconds >= 1e-3) return fixed(seconds * 1e3, 2) + " ms";
  return fixed(seconds * 1e6, 1) + " us";
}

std::string formatBytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  return u == 0 ? fixed(bytes, 0) + " B" : fixed(bytes, 2) + " " + units[u];
}

std::string predictionLines(const Simulation& sim, const DeviceProfile& device) {
  const std::string per =
      sim.training ? "per optimizer step of " + std::to_string(sim.accumulation) + " micro-step(s)"
                   : "per forward pass";
  std::string out = "predicted     step time " + formatSeconds(sim.step_seconds) + " " + per +
                    " on " + device.name + " (roofline and ring model, docs/cost_model.md)\n";
  if (sim.collective_seconds == 0) return out + "exposed comm  none (no collectives)\n";
  return out + "exposed comm  " + formatSeconds(sim.exposed_comm_seconds) + " of " +
         formatSeconds(sim.collective_seconds) + " in collectives (overlap " +
         fixed(percent(sim.overlappedCommSeconds(), sim.collective_seconds), 1) + "%)\n";
}

std::string planText(const PlanFile& plan, const Simulation& sim, const DeviceProfile& device) {
  const planpb::Plan& p = plan.plan;
  std::string streams;
  for (const std::string& s : p.streams()) streams += (streams.empty() ? "" : ", ") + s;
  std::string out = "plan          " + p.model() + " (" + p.producer() + "), " +
                    std::to_string(p.world_size()) + " rank(s), " +
                    std::to_string(p.ranks(sim.rank).steps_size()) +
                    " steps per rank, streams: " + streams + "\n";
  out += memoryLine(plan);
  out += commLines(plan, sim);
  out += streamLines(plan, sim);
  return out + predictionLines(sim, device);
}

json planJson(const PlanFile& plan, const Simulation& sim, const DeviceProfile& device) {
  const planpb::Plan& p = plan.plan;
  json header = {{"model", p.model()},
                 {"producer", p.producer()},
                 {"format_version", p.format_version()},
                 {"world_size", p.world_size()},
                 {"streams", std::vector<std::string>(p.streams().begin(), p.streams().end())},
                 {"steps_per_rank", p.ranks_size() ? p.ranks(0).steps_size() : 0},
                 {"tensors", p.tensors_size()}};
  return {{"plan", header},
          {"memory", memoryJson(plan)},
          {"device", deviceJson(device)},
          {"simulation", simulationJson(plan, sim)}};
}

std::string planDot(const PlanFile& plan, int rank) {
  DS_CHECK(rank >= 0 && rank < plan.plan.ranks_size(), "rank ", rank, " is not in the plan (",
           plan.plan.ranks_size(), " ranks)");
  const planpb::RankPlan& steps = plan.plan.ranks(rank);
  std::ostringstream os;
  os << "digraph " << quoted("rank " + std::to_string(rank)) << " {\n";
  os << "  rankdir=TB;\n  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\", "
        "fontsize=10, penwidth=1.5];\n  edge [color=\"#595959\", fontsize=8];\n";
  dotLegend(plan, os);
  for (int i = 0; i < steps.steps_size(); ++i) {
    const planpb::Step& step = steps.steps(i);
    os << "  s" << i << " [label=" << quoted(step.op() + "\n" + step.node()) << ", fillcolor=\""
       << fillOf(step) << "\", color=\"" << streamColor(step.stream()) << "\"];\n";
  }
  dotEdges(steps, os);
  os << "}\n";
  return os.str();
}

json chromeTrace(const PlanFile& plan, const std::vector<Simulation>& ranks) {
  json events = json::array();
  for (const Simulation& sim : ranks) addRankEvents(plan, sim, &events);
  return {{"traceEvents", events}, {"displayTimeUnit", "ms"}};
}

std::vector<Simulation> simulateRanks(const PlanFile& plan, const DeviceProfile& device) {
  std::vector<Simulation> out;
  for (int r = 0; r < plan.plan.ranks_size(); ++r) out.push_back(simulate(plan, r, device));
  return out;
}

}  // namespace ds
