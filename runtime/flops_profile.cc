#include "runtime/flops_profile.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <vector>

#include "ir/error.h"
#include "runtime/cost_model.h"
#include "runtime/memory_estimate.h"
#include "runtime/wall_clock.h"

namespace ds {
namespace {

// "12.35 G" + unit, with DeepSpeed's prefixes (none, K, M, G, T).
std::string withPrefix(double v, const char* unit) {
  static constexpr std::pair<double, const char*> kPrefixes[] = {
      {1e12, "T"}, {1e9, "G"}, {1e6, "M"}, {1e3, "K"}};
  char text[64];
  for (auto [scale, prefix] : kPrefixes)
    if (std::fabs(v) >= scale) {
      std::snprintf(text, sizeof text, "%.2f %s%s", v / scale, prefix, unit);
      return text;
    }
  std::snprintf(text, sizeof text, "%.2f %s", v, unit);
  return text;
}

// Seconds as DeepSpeed's duration_to_string: s, ms or us.
std::string duration(double seconds) {
  char text[64];
  if (seconds >= 1)
    std::snprintf(text, sizeof text, "%.2f s", seconds);
  else if (seconds >= 1e-3)
    std::snprintf(text, sizeof text, "%.2f ms", seconds * 1e3);
  else
    std::snprintf(text, sizeof text, "%.2f us", seconds * 1e6);
  return text;
}

std::string rate(double flops, double seconds) {
  return flops > 0 && seconds > 0 ? withPrefix(flops / seconds, "FLOPS") : "-";
}

// "label:" padded to DeepSpeed's column, then the value.
std::string row(const std::string& label, const std::string& value) {
  std::string line = label + ":";
  line.resize(std::max<size_t>(line.size() + 2, 62), ' ');
  return line + value + "\n";
}

// Ops whose FLOPs are all multiply-accumulates (runtime/cost_model.h): two each.
bool isProduct(const std::string& op) {
  return op == "Conv" || op == "Gemm" || op == "MatMul" || op == "FusedAttention";
}

// FLOPs and MACs of one micro-step's forward and backward.
struct MicroStepFlops {
  double forward = 0, forward_macs = 0, backward = 0;
};

MicroStepFlops microStepFlops(const PlanFile& plan, int rank, const std::vector<StepPart>& parts) {
  MicroStepFlops f;
  const planpb::RankPlan& steps = plan.plan.ranks(rank);
  for (int s = 0; s < steps.steps_size(); ++s) {
    const planpb::Step& step = steps.steps(s);
    const double flops = stepFlops(plan, step);
    switch (parts[static_cast<size_t>(s)]) {
      case StepPart::Forward:
        f.forward += flops;
        if (isProduct(step.op())) f.forward_macs += flops / 2;
        break;
      case StepPart::Backward:
      case StepPart::BackwardReduce:
        f.backward += flops;
        break;
      case StepPart::OptimizerStep:
        break;
    }
  }
  return f;
}

// Per op: steps, FLOPs, seconds and FLOPS of one micro-step, by FLOPs.
std::string opTable(const PlanFile& plan, int rank, std::span<const double> seconds) {
  struct OpTotals {
    int steps = 0;
    double flops = 0, seconds = 0;
  };
  std::map<std::string, OpTotals> ops;
  const planpb::RankPlan& steps = plan.plan.ranks(rank);
  for (int s = 0; s < steps.steps_size(); ++s) {
    OpTotals& t = ops[steps.steps(s).op()];
    ++t.steps;
    t.flops += stepFlops(plan, steps.steps(s));
    t.seconds += seconds[static_cast<size_t>(s)];
  }
  std::vector<std::pair<std::string, OpTotals>> sorted(ops.begin(), ops.end());
  std::stable_sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) {
    return a.second.flops != b.second.flops ? a.second.flops > b.second.flops
                                            : a.second.seconds > b.second.seconds;
  });
  std::string out =
      "op                              steps        flops      latency           FLOPS\n";
  for (const auto& [op, t] : sorted) {
    char line[160];
    std::snprintf(line, sizeof line, "%-30s %6d %12s %12s %15s\n", op.c_str(), t.steps,
                  withPrefix(t.flops, "").c_str(), duration(t.seconds).c_str(),
                  rate(t.flops, t.seconds).c_str());
    out += line;
  }
  return out;
}

}  // namespace

FlopsProfilerOptions flopsProfilerOptions(const nlohmann::json& config) {
  FlopsProfilerOptions o;
  auto it = config.find("flops_profiler");
  if (it == config.end() || !it->is_object()) return o;
  o.enabled = it->value("enabled", false);
  o.profile_step = it->value("profile_step", int64_t{1});
  if (auto file = it->find("output_file"); file != it->end() && !file->is_null()) {
    DS_CHECK(file->is_string(), "flops_profiler.output_file: must be a file name or null");
    o.output_file = file->get<std::string>();
  }
  return o;
}

std::string flopsProfileReport(const PlanFile& plan, int rank, const StepMetrics& m,
                               std::span<const double> last_micro_step) {
  const nlohmann::json config = plan.config();
  const std::vector<StepPart> parts = stepParts(plan, rank);
  DS_CHECK(last_micro_step.size() == parts.size() && !m.micro_step_times.empty(),
           "the flops profiler needs the step's per-step times");
  const double accumulation = static_cast<double>(m.micro_step_times.size());
  const MicroStepFlops micro = microStepFlops(plan, rank, parts);
  const double forward = micro.forward * accumulation, backward = micro.backward * accumulation;
  const PartTimes t = sumOf(m.micro_step_times);
  const double iteration = t.forward + t.backward + t.step;
  const int64_t world = std::max(1, plan.plan.world_size());
  const double params = static_cast<double>(modelSizeOf(plan).params);

  std::string out =
      "\n-------------------------- DeepSpeed Flops Profiler --------------------------\n";
  out += "Profile Summary at step " + std::to_string(m.step) + ":\n";
  out +=
      "Notations:\n"
      "data parallel size (dp_size), model parallel size(mp_size),\n"
      "number of parameters (params), number of multiply-accumulate operations(MACs),\n"
      "number of floating-point operations (flops), floating-point operations per second "
      "(FLOPS),\n"
      "fwd latency (forward propagation latency), bwd latency (backward propagation "
      "latency),\n"
      "step (weights update latency), iter latency (sum of fwd, bwd and step latency)\n\n";
  out += row("world size", std::to_string(world));
  out += row("data parallel size", std::to_string(world));
  out += row("model parallel size", "1");
  out += row("batch size per GPU",
             std::to_string(config.value("train_micro_batch_size_per_gpu", int64_t{0})));
  out += row("params per GPU", withPrefix(params, ""));
  out += row("params of model = params per GPU * mp_size", withPrefix(params, ""));
  out += row("fwd MACs per GPU", withPrefix(micro.forward_macs * accumulation, "MACs"));
  out += row("fwd flops per GPU", withPrefix(forward, ""));
  out += row("fwd flops of model = fwd flops per GPU * mp_size", withPrefix(forward, ""));
  out += row("fwd latency", duration(t.forward));
  out += row("fwd FLOPS per GPU = fwd flops per GPU / fwd latency", rate(forward, t.forward));
  out += row("bwd flops per GPU (the plan's, recomputation included)", withPrefix(backward, ""));
  out += row("bwd latency", duration(t.backward));
  out += row("bwd FLOPS per GPU = bwd flops per GPU / bwd latency", rate(backward, t.backward));
  out += row("fwd+bwd FLOPS per GPU = (fwd+bwd flops per GPU) / (fwd+bwd latency)",
             rate(forward + backward, t.forward + t.backward));
  out += row("step latency", duration(t.step));
  out += row("iter latency", duration(iteration));
  out += row("FLOPS per GPU = (fwd+bwd flops per GPU) / iter latency",
             rate(forward + backward, iteration));
  char samples[64];
  std::snprintf(samples, sizeof samples, "%.2f",
                iteration > 0
                    ? static_cast<double>(config.value("train_batch_size", int64_t{0})) / iteration
                    : 0.0);
  out += row("samples/second", samples);
  out +=
      "\n----------------------------- Aggregated Profile per GPU "
      "-----------------------------\n";
  out += "Per op, the step's last micro-step:\n";
  out += opTable(plan, rank, last_micro_step);
  out += "------------------------------------------------------------------------------\n";
  return out;
}

}  // namespace ds
