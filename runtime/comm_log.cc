#include "runtime/comm_log.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <utility>

#include "ir/error.h"
#include "ir/plan_verifier.h"
#include "runtime/train_log.h"

namespace ds {
namespace {

// DeepSpeed's calc_bw_log: algorithm and bus bandwidth in Gbit/s of a `bytes`
// message moved in `ms` among `n` ranks (NCCL's tests' definitions; the gathers
// and scatters count n messages).
std::pair<double, double> bandwidth(const std::string& name, int64_t bytes, double ms, int64_t n) {
  if (ms <= 0) return {0, 0};
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
// each end (Python's round: halves to even, as nearbyint).
double trimMean(std::vector<double> data) {
  std::sort(data.begin(), data.end());
  const auto n = static_cast<int64_t>(data.size());
  const auto k = static_cast<int64_t>(std::nearbyint(static_cast<double>(n) * 0.1));
  if (n - 2 * k <= 0) return 0;
  return std::accumulate(data.begin() + k, data.end() - k, 0.0) / static_cast<double>(n - 2 * k);
}

}  // namespace

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
  std::snprintf(text, sizeof text, "%.2f", std::nearbyint(value * 100) / 100);
  std::string number = text;  // as Python prints the float: no trailing zeros but one
  while (number.back() == '0' && number[number.size() - 2] != '.') number.pop_back();
  return number + " " + kUnits[unit];
}

std::string deepSpeedCommName(const std::string& op) {
  if (op == "AllReduce") return "all_reduce";
  if (op == "AllGather") return "all_gather_into_tensor";
  if (op == "ReduceScatter") return "reduce_scatter_tensor";
  DS_CHECK(op == "Broadcast", "comms logger: no DeepSpeed name for collective ", op);
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
    : world_(std::max(1, plan.plan.world_size())),
      steps_(static_cast<size_t>(plan.plan.ranks(rank).steps_size())),
      options_(std::move(options)) {
  const planpb::RankPlan& steps = plan.plan.ranks(rank);
  for (int s = 0; s < steps.steps_size(); ++s) {
    const planpb::Step& step = steps.steps(s);
    if (!isCollectiveOp(step.op())) continue;
    const std::string name = deepSpeedCommName(step.op());
    const bool wanted =
        options_.prof_all || std::find(options_.prof_ops.begin(), options_.prof_ops.end(), name) !=
                                 options_.prof_ops.end();
    if (!wanted) continue;
    // DeepSpeed records the size of the op's `tensor` argument, its input: a
    // gather's shard, a reduce-scatter's whole buffer.
    DS_CHECK(step.inputs_size() > 0 && step.inputs(0) >= 0, "comms logger: ", step.op(), " @",
             step.node(), " has no input");
    logged_.push_back({static_cast<size_t>(s), name,
                       static_cast<int64_t>(plan.tensorType(step.inputs(0)).bytes()),
                       step.phase() == planpb::OPTIMIZER_STEP});
  }
}

std::vector<std::string> CommLog::record(std::span<const double> seconds, bool optimizer_step) {
  DS_CHECK(seconds.size() == steps_, "comms logger: ", seconds.size(), " step times for a plan of ",
           steps_, " steps");
  std::vector<std::string> lines;
  for (const Logged& l : logged_) {
    if (l.optimizer_phase && !optimizer_step) continue;  // did not run
    const double ms = 1e3 * seconds[l.step];
    const auto [algbw, busbw] = bandwidth(l.name, l.bytes, ms, world_);
    auto named = std::find_if(records_.begin(), records_.end(),
                              [&](const auto& r) { return r.first == l.name; });
    if (named == records_.end()) named = records_.insert(records_.end(), {l.name, {}});
    Record& r = named->second[l.bytes];
    r.latencies_ms.push_back(ms);
    r.algbw.push_back(algbw);
    r.busbw.push_back(busbw);
    if (options_.verbose) {
      char line[256];
      std::snprintf(line, sizeof line,
                    "%scomm op: %s | time (ms): %.2f | msg size: %s | algbw (Gbps): %.2f | "
                    "busbw (Gbps): %.2f",
                    kRank0Prefix, l.name.c_str(), ms, convertSize(l.bytes).c_str(), algbw, busbw);
      lines.push_back(line);
    }
  }
  return lines;
}

std::string CommLog::summary() const {
  char line[256];
  std::snprintf(line, sizeof line, "%-20s%-20s%-20s%-20s%-20s%-20s%-20s\n", "Comm. Op",
                "Message Size", "Count", "Total Latency(ms)", "Avg Latency(ms)", "tput_avg (Gbps)",
                "busbw_avg (Gbps)");
  std::string out = line;
  for (const auto& [name, sizes] : records_) {
    out += name + "\n";
    for (const auto& [bytes, r] : sizes) {
      std::snprintf(line, sizeof line, "%-20s%-20s%-20zu%-20.2f%-20.2f%-20.2f%-20.2f\n", "",
                    convertSize(bytes).c_str(), r.latencies_ms.size(),
                    std::accumulate(r.latencies_ms.begin(), r.latencies_ms.end(), 0.0),
                    trimMean(r.latencies_ms), trimMean(r.algbw), trimMean(r.busbw));
      out += line;
    }
  }
  return out;
}

}  // namespace ds
