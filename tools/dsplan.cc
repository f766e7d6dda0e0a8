// dsplan: inspects a plan produced by dscompile without running it: per-rank
// memory, communication, the predicted step time and how much communication hides
// behind computation (runtime/simulator.h), as text, JSON, a Graphviz graph or a
// Chrome trace; --estimate prints DeepSpeed-style model-state memory estimates for
// every ZeRO stage. Bad input is one line on stderr, exit 2.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <fstream>
#include <iostream>

#include "ir/error.h"
#include "ir/plan.h"
#include "runtime/device_profile.h"
#include "runtime/memory_estimate.h"
#include "runtime/plan_views.h"
#include "runtime/simulator.h"
#include "tools/cli_main.h"

namespace {

struct Args {
  std::string plan;
  std::string format = "text";
  std::string output;
  std::string device = "h100";
  int rank = 0;
  bool estimate = false;
  int64_t world_size = 0;     // 0: the plan's
  int64_t gpus_per_node = 0;  // 0: the device's
  std::string precision = "auto";
};

void addFlags(CLI::App& app, Args& a) {
  app.add_option("plan", a.plan, "plan file written by dscompile -o")->required();
  app.add_option(
         "--format", a.format,
         "text (memory, communication, predicted step time, exposed communication), "
         "json (the same and every step's simulated start and end), dot (Graphviz graph "
         "of one rank's steps) or trace (Chrome trace JSON for Perfetto / chrome://tracing)")
      ->check(CLI::IsMember({"text", "json", "dot", "trace"}));
  app.add_option("-o,--output", a.output, "write the view to this file instead of stdout");
  app.add_option("--device", a.device, "device profile of the cost model (h100: H100 SXM)");
  app.add_option("--rank", a.rank, "the rank that text, json and dot show")->default_val(0);
  app.add_flag("--estimate", a.estimate,
               "print model-state memory per GPU and per node's host for ZeRO stages 0-3 and "
               "each offload choice, by DeepSpeed's estimators, from the plan's parameters");
  app.add_option("--world-size", a.world_size, "--estimate: GPUs in total (default: the plan's)");
  app.add_option("--gpus-per-node", a.gpus_per_node,
                 "--estimate: GPUs per node (default: the device profile's)");
  app.add_option("--precision", a.precision,
                 "--estimate: auto (the plan's config), fp32 or mixed (fp16/bf16)")
      ->check(CLI::IsMember({"auto", "fp32", "mixed"}));
}

std::string estimate(const Args& a, const ds::PlanFile& plan, const ds::DeviceProfile& device) {
  ds::EstimateSetup setup;
  setup.model = ds::modelSizeOf(plan);
  setup.world_size = a.world_size > 0 ? a.world_size : std::max(1, plan.plan.world_size());
  setup.gpus_per_node = a.gpus_per_node > 0 ? a.gpus_per_node : device.gpus_per_node;
  setup.mixed_precision =
      a.precision == "auto" ? ds::planIsMixedPrecision(plan) : a.precision == "mixed";
  return ds::formatEstimates(setup);
}

std::string view(const Args& a, const ds::PlanFile& plan, const ds::DeviceProfile& device) {
  DS_CHECK(plan.plan.ranks_size() > 0, a.plan, ": the plan has no ranks");
  DS_CHECK(a.rank >= 0 && a.rank < plan.plan.ranks_size(), "--rank ", a.rank, ": ", a.plan,
           " has ranks 0-", plan.plan.ranks_size() - 1);
  if (a.format == "dot") return ds::planDot(plan, a.rank);
  if (a.format == "trace") return ds::chromeTrace(plan, ds::simulateRanks(plan, device)).dump();
  const ds::Simulation sim = ds::simulate(plan, a.rank, device);
  if (a.format == "json") return ds::planJson(plan, sim, device).dump(2) + "\n";
  return ds::planText(plan, sim, device);
}

void write(const std::string& path, const std::string& text) {
  if (path.empty()) {
    std::cout << text;
    return;
  }
  std::ofstream out(path, std::ios::binary);
  DS_CHECK(out.good(), "-o ", path, ": cannot open for writing");
  out << text;
  out.close();
  DS_CHECK(out.good(), "-o ", path, ": write failed");
}

int run(const Args& a) {
  const ds::DeviceProfile device = ds::deviceProfile(a.device);
  const ds::PlanFile plan = ds::readPlanFile(a.plan);
  write(a.output, a.estimate ? estimate(a, plan, device) : view(a, plan, device));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dsplan: memory, communication, predicted step time and views of a plan"};
  Args args;
  addFlags(app, args);
  return ds::tools::runCli("dsplan", app, argc, argv, {}, [&] { return run(args); });
}
