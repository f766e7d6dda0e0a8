// dscompile: ONNX model + DeepSpeed config -> compiled training graph (and, as
// later stages land, a per-rank plan). Bad input is one line on stderr, exit 2.
#include <CLI/CLI.hpp>

#include <iostream>
#include <optional>

#include "frontend/compile.h"
#include "frontend/summary.h"
#include "ir/error.h"
#include "ir/text.h"
#include "passes/pipeline.h"
#include "runtime/device_profile.h"
#include "runtime/plan_views.h"
#include "runtime/simulator.h"
#include "tools/cli_main.h"

namespace {

struct Args {
  ds::CompileOptions compile;
  std::string output;
  std::vector<std::string> dumps;
  std::string format = "text";  // of --dump summary
};

void addFlags(CLI::App& app, Args& a) {
  app.add_option("model", a.compile.model_path, "ONNX model to compile")->required();
  app.add_option("--config", a.compile.config_path,
                 "DeepSpeed JSON config (comments allowed). Batch arithmetic: "
                 "train_batch_size = micro-batch x gradient_accumulation_steps x ranks; any two "
                 "determine the third, all three must agree. Absent or \"auto\": the micro-batch "
                 "is --batch, else derived from the other two, else the model's static batch; "
                 "gradient_accumulation_steps is derived, else 1; train_batch_size is derived. "
                 "Scheduler \"auto\": warmup_max_lr = optimizer lr, warmup_min_lr = 0, "
                 "warmup_num_steps = 1000 (see docs/training.md)");
  app.add_option("--zero", a.compile.zero_stage,
                 "ZeRO stage 0-3 (overrides zero_optimization.stage)");
  app.add_option("--gpus,--world-size", a.compile.world_size, "number of ranks (data parallel)")
      ->default_val(1);
  app.add_option("--batch", a.compile.micro_batch,
                 "micro-batch per rank (overrides train_micro_batch_size_per_gpu); binds the "
                 "model's symbolic batch axis");
  app.add_option("-o,--output", a.output, "write the plan file (run it with dsrun)");
  app.add_option("--dump", a.dumps, "print 'summary', 'ir' and/or 'plan' to stdout")
      ->check(CLI::IsMember({"summary", "ir", "plan"}));
  app.add_option("--format", a.format,
                 "--dump summary as text (the summary, the predicted step time and exposed "
                 "communication on an H100), json, dot (Graphviz, rank 0's steps) or trace "
                 "(Chrome trace JSON); see dsplan and docs/cost_model.md")
      ->check(CLI::IsMember({"text", "json", "dot", "trace"}));
  app.add_option("--loss", a.compile.loss,
                 "make a training plan with this loss: cross_entropy (adds a label input), mse, "
                 "or output (the model's own scalar loss, see --loss-output)")
      ->check(CLI::IsMember({"cross_entropy", "mse", "output"}));
  app.add_option("--label", a.compile.label, "name of the label input the loss adds")
      ->default_val("label");
  app.add_option("--loss-output", a.compile.loss_output,
                 "the model output holding the loss (--loss output) or the logits");
  app.add_flag("--freeze-bn", a.compile.freeze_bn,
               "train with BatchNormalization in inference form (running statistics)");
  app.add_flag("--checkpoint-activations", a.compile.checkpoint_activations,
               "activation checkpointing: backward recomputes the activations it reads from "
               "about sqrt(n) kept checkpoints instead of keeping them all from forward "
               "(less memory, a second forward); see docs/training.md");
  app.add_option("--dump-after", a.compile.dump_after,
                 "print the IR after the named pass (or 'all') to stderr");
  std::string optional;
  for (const ds::PassInfo& p : ds::allPasses())
    if (p.optional) optional += std::string(optional.empty() ? "" : ", ") + p.name;
  app.add_option("--disable-pass", a.compile.disabled_passes,
                 "skip this optimisation pass (repeatable), to isolate its effect: " + optional);
}

// What --dump summary adds to the compiler's summary (text: the predicted step
// time and exposed communication of rank 0), or prints instead of it.
std::string summaryViews(const ds::PlanFile& plan, const std::string& format) {
  const ds::DeviceProfile device = ds::h100Sxm();
  if (format == "dot") return ds::planDot(plan, 0);
  if (format == "trace") return ds::chromeTrace(plan, ds::simulateRanks(plan, device)).dump();
  const ds::Simulation sim = ds::simulate(plan, 0, device);
  if (format == "json") return ds::planJson(plan, sim, device).dump(2) + "\n";
  return ds::predictionLines(sim, device);
}

int run(const Args& a) {
  ds::CompileOptions options = a.compile;
  options.dump = &std::cerr;
  ds::Compilation c = ds::compile(options);
  for (const std::string& w : c.config.warnings) std::cerr << "dscompile: warning: " << w << "\n";
  for (const std::string& n : c.notes) std::cerr << "dscompile: note: " << n << "\n";
  auto wants = [&](const char* what) {
    return std::find(a.dumps.begin(), a.dumps.end(), what) != a.dumps.end();
  };
  if (wants("ir")) std::cout << ds::printGraph(*c.graph);
  std::optional<ds::PlanFile> plan;  // built once, for the summary and/or the plan
  auto built = [&]() -> const ds::PlanFile& {
    if (!plan) plan = ds::buildPlan(c, a.compile.model_path);
    return *plan;
  };
  if (wants("summary") || (a.dumps.empty() && a.output.empty())) {
    if (a.format == "text") std::cout << ds::formatSummary(c, a.compile.model_path);
    std::cout << summaryViews(built(), a.format);
  }
  if (wants("plan")) std::cout << ds::printPlan(built());
  if (!a.output.empty()) ds::writePlanFile(a.output, built());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dscompile: compile an ONNX model and a DeepSpeed config into a training plan"};
  Args args;
  addFlags(app, args);
  return ds::tools::runCli("dscompile", app, argc, argv, {}, [&] { return run(args); });
}
