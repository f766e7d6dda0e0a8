#include "runtime/comm_log.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <utility>

#include "ir/error.h"
#include "ir/plan_verifier.h"

namespace ds {
namespace {

// DeepSpeed's convert_size: "1.5 MB", powers of 1024, rounded to 2 decimals.
std::string convertSize(int64_t bytes) {
  if (bytes == 0) return "0B";
  static constexpr const char* kUnits[] = {"B", "KB", "MB", "GB", "TB", "PB"};
  int unit = 0;
  double value = static_cast<double>(bytes);
  while (value >= 1024 && unit < 5) {
    value /= 1024;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof text, "%g %s", std::round(value * 100) / 100, kUnits[unit]);
  std::string out = text;
  // Python prints round()'s float with a decimal point: 1.0, not 1.
  const size_t space = out.find(' ');
  if (out.substr(0, space).find('.') == std::string::npos) out.insert(space, ".0");
  return out;
}

// DeepSpeed's calc_bw_log: algorithm and bus bandwidth in Gbit/s of `bytes` (the
// per-rank message) moved in `ms` among `n` ranks.
std::pair<double, double> bandwidth(const std::string& name, int64_t bytes, double ms, int64_t n) {
  double size = static_cast<double>(bytes), algbw = 0, busbw = 0;
  const double ranks = static_cast<double>(n);
  if (name == "all_gather_into_tensor" || name == "reduce_scatter_tensor") {
    size *= ranks;
    algbw = size / ms;
    busbw = algbw * (ranks - 1) / ranks;
  } else if (name == "all_reduce") {
    algbw = size * 2 / ms;
    busbw = size / ms * (2 * (ranks - 1) / ranks);
  } else {  // broadcast
    algbw = busbw = size / ms;
  }
  return {algbw * 8 / 1e6, busbw * 8 / 1e6};
}

// DeepSpeed's trim_mean(data, 0.1): the mean without round(10%) of the values at
// each end.
double trimMean(std::vector<double> data) {
  std::sort(data.begin(), data.end());
  const auto n = static_cast<int64_t>(data.size());
  const auto k = static_cast<int64_t>(std::nearbyint(static_cast<double>(n) * 0.1));
  if (n - 2 * k <= 0) return 0;
  return std::accumulate(data.begin() + k, data.end() - k, 0.0) / static_cast<double>(n - 2 * k);
}

std::string column(const std::string& text) {
  std::string out = text;
  out.resize(std::max<size_t>(out.size(), 20), ' ');
  return out;
}

std::string number(double v) {
  char text[32];
  std::snprintf(text, sizeof text, "%.2f", v);
  return column(text);
}

}  // namespace

std::string deepSpeedCommName(const std::string& op) {
  if (op == "AllReduce") return "all_reduce";
  if (op == "AllGather") return "all_gather_into_tensor";
  if (op == "ReduceScatter") return "reduce_scatter_tensor";
  return "broadcast";
}

CommLogOptions commLogOptions(const nlohmann::json& config) {
  CommLogOptions o;
  auto it = config.find("comms_logger");
  if (it == config.end() || !it->is_object()) return o;
  o.enabled = it->value("enabled", false);
  o.verbose = it->value("verbose", false);
  o.prof_all = it->value("prof_all", true);
  for (const nlohmann::json& op : it->value("prof_ops", nlohmann::json::array())) {
    DS_CHECK(op.is_string(), "comms_logger.prof_ops: expected op names, got ", op.dump());
    o.prof_ops.push_back(op.get<std::string>());
  }
  return o;
}

CommLog::CommLog(const PlanFile& plan, int rank, CommLogOptions options)
    : world_(std::max(1, plan.plan.world_size())), options_(std::move(options)) {
  const planpb::RankPlan& steps = plan.plan.ranks(rank);
  for (int s = 0; s < steps.steps_size(); ++s) {
    const planpb::Step& step = steps.steps(s);
    if (!isCollectiveOp(step.op())) continue;
    const std::string name = deepSpeedCommName(step.op());
    const bool wanted =
        options_.prof_all || std::find(options_.prof_ops.begin(), options_.prof_ops.end(), name) !=
                                 options_.prof_ops.end();
    if (!wanted) continue;
    // The per-rank message: ReduceScatter's output, the others' input.
    const int tensor = step.op() == "ReduceScatter" ? step.outputs(0) : step.inputs(0);
    logged_.push_back({static_cast<size_t>(s), name,
                       static_cast<int64_t>(plan.tensorType(tensor).bytes()),
                       step.phase() == planpb::OPTIMIZER_STEP});
  }
}

std::vector<std::string> CommLog::record(std::span<const double> seconds, bool optimizer_step) {
  std::vector<std::string> lines;
  for (const Logged& l : logged_) {
    if (l.optimizer_phase && !optimizer_step) continue;  // did not run
    const double ms = 1e3 * seconds[l.step];
    if (ms <= 0) continue;
    const auto [algbw, busbw] = bandwidth(l.name, l.bytes, ms, world_);
    Record& r = records_[l.name][l.bytes];
    r.latencies_ms.push_back(ms);
    r.algbw.push_back(algbw);
    r.busbw.push_back(busbw);
    if (options_.verbose) {
      char line[256];
      std::snprintf(line, sizeof line,
                    "[Rank 0] comm op: %s | time (ms): %.2f | msg size: %s | algbw (Gbps): %.2f | "
                    "busbw (Gbps): %.2f",
                    l.name.c_str(), ms, convertSize(l.bytes).c_str(), algbw, busbw);
      lines.push_back(line);
    }
  }
  return lines;
}

std::string CommLog::summary() const {
  if (records_.empty()) return "";
  std::string out = column("Comm. Op") + column("Message Size") + column("Count") +
                    column("Total Latency(ms)") + column("Avg Latency(ms)") +
                    column("tput_avg (Gbps)") + column("busbw_avg (Gbps)") + "\n";
  for (const auto& [name, sizes] : records_) {
    out += name + "\n";
    for (const auto& [bytes, r] : sizes)
      out += column("") + column(convertSize(bytes)) +
             column(std::to_string(r.latencies_ms.size())) +
             number(std::accumulate(r.latencies_ms.begin(), r.latencies_ms.end(), 0.0)) +
             number(trimMean(r.latencies_ms)) + number(trimMean(r.algbw)) +
             number(trimMean(r.busbw)) + "\n";
  }
  return out;
}

}  // namespace ds
