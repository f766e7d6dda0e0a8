// DeepSpeed's console reports in dsrun (runtime/train_log.h): the steps_per_print
// progress and throughput lines, and wall_clock_breakdown's timers, whose parts
// come from the plan (runtime/wall_clock.h) and the executor's per-step times.
// Oracles: the plan's own roles and phases, sums worked out here, the metrics file
// dsrun writes, and DeepSpeed's formats.
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "frontend/ds_config.h"
#include "ir/graph.h"
#include "runtime/flops_profile.h"
#include "runtime/train_log.h"
#include "runtime/wall_clock.h"
#include "tests/training_fixtures.h"

namespace ds {
namespace {

// The MLP at micro-batch 4 on `ranks` ranks with 2 accumulation steps and `extra`
// config keys; returns the plan's path.
std::string compileMlp(const std::string& name, int zero, int ranks, const nlohmann::json& extra) {
  nlohmann::json config = {{"train_micro_batch_size_per_gpu", 4},
                           {"gradient_accumulation_steps", 2},
                           {"optimizer", {{"type", "AdamW"}, {"params", {{"lr", 0.01}}}}},
                           {"zero_optimization", {{"stage", zero}}}};
  if (extra.is_object()) config.update(extra);
  const std::string path = test::scratch(name + ".json");
  test::writeFile(path, config.dump());
  return test::compileText(
      test::mlpText(false), name,
      "--loss cross_entropy --gpus " + std::to_string(ranks) + " --config " + path);
}

bool makesGradient(const PlanFile& plan, const planpb::Step& step) {
  for (int t : step.outputs())
    if (t >= 0 && plan.plan.tensors(t).role() == static_cast<int>(Role::Gradient)) return true;
  return false;
}

// Forward is a prefix of the micro-step; backward starts with the first gradient;
// the gradients' reductions are apart, in either phase; the rest of the
// optimizer-step phase is the step part.
void expectPartsFollowThePlan(const PlanFile& plan) {
  const std::vector<StepPart> parts = stepParts(plan, 0);
  const planpb::RankPlan& rank = plan.plan.ranks(0);
  ASSERT_EQ(parts.size(), static_cast<size_t>(rank.steps_size()));
  int counts[4] = {0, 0, 0, 0};
  bool seen_backward = false;
  for (int s = 0; s < rank.steps_size(); ++s) {
    const planpb::Step& step = rank.steps(s);
    const StepPart part = parts[static_cast<size_t>(s)];
    ++counts[static_cast<int>(part)];
    SCOPED_TRACE(step.op() + " @" + step.node());
    const bool reduction = step.op() == "AllReduce" || step.op() == "ReduceScatter";
    // ZeRO names its reductions after their buckets; the gradient norm's is its own.
    const bool zero_bucket = step.node().starts_with("zero/bucket");
    EXPECT_EQ(part == StepPart::BackwardReduce, reduction && zero_bucket);
    if (part == StepPart::BackwardReduce) continue;
    EXPECT_EQ(part == StepPart::OptimizerStep, step.phase() == planpb::OPTIMIZER_STEP);
    EXPECT_TRUE(!makesGradient(plan, step) || part != StepPart::Forward);
    EXPECT_TRUE(part != StepPart::Forward || !seen_backward) << "forward after backward";
    seen_backward = seen_backward || part == StepPart::Backward;
  }
  for (int part = 0; part < 4; ++part) EXPECT_GT(counts[part], 0) << "part " << part;
}

TEST(WallClock, StepPartsFollowThePlansRolesAndPhases) {
  for (int zero : {0, 1, 2, 3})
    for (bool offload : {false, true})
      for (int64_t bucket : {500000000, 16}) {
        if (offload && zero == 0) continue;  // offload needs ZeRO
        const std::string name = "wall_parts_z" + std::to_string(zero) +
                                 (offload ? "_offload" : "") + "_b" + std::to_string(bucket);
        SCOPED_TRACE(name);
        // Clipping: the gradient norm's AllReduce is the step's. ZeRO-3 gathers
        // every parameter (none persists whole), in forward first. Buckets of 16
        // elements hold one gradient each, reduced without packing.
        nlohmann::json zero_options = {{"stage", zero},
                                       {"stage3_param_persistence_threshold", 0},
                                       {"reduce_bucket_size", bucket}};
        if (offload) zero_options["offload_optimizer"] = {{"device", "cpu"}};
        const PlanFile plan = readPlanFile(compileMlp(
            name, zero, 2, {{"gradient_clipping", 1.0}, {"zero_optimization", zero_options}}));
        expectPartsFollowThePlan(plan);
        if (zero == 3) {
          EXPECT_EQ(plan.plan.ranks(0).steps(0).op(), "AllGather");
          EXPECT_EQ(stepParts(plan, 0)[0], StepPart::Forward);
        }
      }
}

TEST(WallClock, PartTimesSumEachPartsSteps) {
  using enum StepPart;
  const std::vector<StepPart> parts = {Forward,  Forward,        Backward,     BackwardReduce,
                                       Backward, BackwardReduce, OptimizerStep};
  const std::vector<double> seconds = {1, 2, 4, 8, 16, 32, 64};
  const PartTimes t = partTimes(parts, seconds);
  EXPECT_EQ(t.forward, 3);
  EXPECT_EQ(t.backward, 60);
  EXPECT_EQ(t.backward_reduce, 40);
  EXPECT_EQ(t.backwardInner(), 20);
  EXPECT_EQ(t.step, 64);
  const std::vector<PartTimes> micro_steps = {t, t};
  EXPECT_EQ(sumOf(micro_steps).backward_reduce, 80);
  EXPECT_THROW(partTimes(parts, std::vector<double>(3, 1.0)), Error);
}

// The executor's last run: one time per step, none for the optimizer-step phase of
// a micro-step without it, and no more than the run took.
TEST(WallClock, TheCpuExecutorTimesEveryStepOfTheLastRun) {
  const PlanFile plan = readPlanFile(compileMlp("wall_cpu_exec", 0, 1, {}));
  ExecutorOptions options;
  options.profile = true;
  CpuExecutor exec(plan, options);
  EXPECT_TRUE(exec.lastRunSeconds().empty());
  for (const std::string& name : exec.feedNames()) exec.setFeed(name, Tensor(exec.feedType(name)));
  const planpb::RankPlan& rank = plan.plan.ranks(0);
  for (bool optimizer_step : {false, true}) {
    auto start = std::chrono::steady_clock::now();
    exec.run(optimizer_step);
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const std::vector<double> seconds = exec.lastRunSeconds();
    ASSERT_EQ(seconds.size(), static_cast<size_t>(rank.steps_size()));
    double total = 0, optimizer = 0;
    for (int s = 0; s < rank.steps_size(); ++s) {
      EXPECT_GE(seconds[static_cast<size_t>(s)], 0.0);
      total += seconds[static_cast<size_t>(s)];
      if (rank.steps(s).phase() == planpb::OPTIMIZER_STEP)
        optimizer += seconds[static_cast<size_t>(s)];
    }
    EXPECT_GT(total, 0.0);
    EXPECT_LE(total, wall);
    EXPECT_EQ(optimizer > 0.0, optimizer_step) << optimizer;
  }
  EXPECT_TRUE(CpuExecutor(plan, {}).lastRunSeconds().empty());
}

// Optimizer step `step` of a train batch of 8 that took `seconds`.
StepMetrics metricsAt(int64_t step, double seconds, int64_t skipped = 0) {
  StepMetrics m{};
  m.step = step;
  m.seconds = seconds;
  m.samples_per_s = 8 / seconds;
  m.skipped_steps = skipped;
  return m;
}

// The effective config of a compiled MLP plan with these keys.
nlohmann::json planConfigWith(const std::string& name, const nlohmann::json& extra) {
  return readPlanFile(compileMlp(name, 0, 1, extra)).config();
}

TEST(TrainLog, PrintsProgressEveryStepsPerPrintWithTheNextStepsLrAndMomentum) {
  // WarmupLR, linear over 4 steps from 0 to 0.01: step s runs at iteration s - 2,
  // at 0.01 (s - 2) / 4.
  const nlohmann::json config = planConfigWith("log_progress", {{"steps_per_print", 2},
                                                                {"scheduler",
                                                                 {{"type", "WarmupLR"},
                                                                  {"params",
                                                                   {{"warmup_min_lr", 0},
                                                                    {"warmup_max_lr", 0.01},
                                                                    {"warmup_num_steps", 4},
                                                                    {"warmup_type", "linear"}}}}}});
  TrainLog log(config);
  EXPECT_TRUE(log.lines(metricsAt(1, 100)).empty());
  EXPECT_EQ(
      log.lines(metricsAt(2, 100)),
      std::vector<std::string>{"[Rank 0] step=2, skipped=0, lr=[0.0025], mom=[(0.9, 0.999)]"});
  EXPECT_TRUE(log.lines(metricsAt(3, 100, 1)).empty());
  // One skipped step: step 5 runs at schedule step 4.
  std::vector<std::string> lines = log.lines(metricsAt(4, 100, 1));
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], "[Rank 0] step=4, skipped=1, lr=[0.005], mom=[(0.9, 0.999)]");
}

TEST(TrainLog, MomentumIsSgdsMomentumAdagradsZeroAndOneCyclesBeta) {
  auto progress = [](const nlohmann::json& config) {
    TrainLog log(config);
    return log.lines(metricsAt(1, 100)).at(0);
  };
  nlohmann::json sgd = planConfigWith(
      "log_sgd", {{"steps_per_print", 1},
                  {"optimizer", {{"type", "SGD"}, {"params", {{"lr", 0.1}, {"momentum", 0.8}}}}}});
  EXPECT_EQ(progress(sgd), "[Rank 0] step=1, skipped=0, lr=[0.1], mom=[0.8]");
  nlohmann::json adagrad =
      planConfigWith("log_adagrad", {{"steps_per_print", 1}, {"optimizer", {{"type", "Adagrad"}}}});
  EXPECT_EQ(progress(adagrad), "[Rank 0] step=1, skipped=0, lr=[0.01], mom=[0.0]");
  nlohmann::json one_cycle = planConfigWith("log_one_cycle", {{"steps_per_print", 1},
                                                              {"scheduler",
                                                               {{"type", "OneCycle"},
                                                                {"params",
                                                                 {{"cycle_min_lr", 0.001},
                                                                  {"cycle_max_lr", 0.01},
                                                                  {"cycle_first_step_size", 4},
                                                                  {"cycle_min_mom", 0.8},
                                                                  {"cycle_max_mom", 0.9}}}}}});
  // Step 2 runs at iteration 0, a quarter up the cycle's first half (OneCycle counts
  // batch 1 of 4): lr 0.001 + 0.009 / 4, momentum 0.9 - 0.1 / 4, and OneCycle's beta2.
  const std::string line = progress(one_cycle);
  EXPECT_TRUE(line.ends_with("mom=[(0.875, 0.99)]")) << line;
  const std::string lr = "lr=[";
  ASSERT_NE(line.find(lr), std::string::npos) << line;
  EXPECT_NEAR(std::stod(line.substr(line.find(lr) + lr.size())), 0.00325, 1e-15) << line;
}

// The running average leaves out the run's first two steps and starts at the third.
TEST(TrainLog, ThroughputStartsAtTheThirdStepAndAveragesTheStepsAfterTheSecond) {
  nlohmann::json config = planConfigWith("log_throughput", {{"steps_per_print", 1}});
  ASSERT_EQ(config["train_batch_size"], 8);
  TrainLog log(config);
  auto throughput = [&](const StepMetrics& m) {
    std::vector<std::string> lines = log.lines(m);
    return lines.size() == 2 ? lines[1] : std::string();
  };
  // Resumed at step 10: the throughput timer counts this run's steps.
  EXPECT_EQ(throughput(metricsAt(11, 8)), "");
  EXPECT_EQ(throughput(metricsAt(12, 4)), "");
  EXPECT_EQ(throughput(metricsAt(13, 1)),
            "[Rank 0] epoch=0/micro_step=6/global_step=3, RunningAvgSamplesPerSec=8.0, "
            "CurrSamplesPerSec=8.0");
  // Steps of 1 s and 0.25 s: 16 samples in 1.25 s.
  EXPECT_EQ(throughput(metricsAt(14, 0.25)),
            "[Rank 0] epoch=0/micro_step=8/global_step=4, RunningAvgSamplesPerSec=12.8, "
            "CurrSamplesPerSec=32.0");
}

TEST(TrainLog, WallClockBreakdownLogsEachMicroStepThenTheStep) {
  TrainLog log(planConfigWith("log_wall", {{"wall_clock_breakdown", true}}));
  StepMetrics m = metricsAt(1, 100);
  m.micro_step_times = {{0.001, 0.004, 0.001, 0}, {0.002, 0.00525, 0.002, 0.0005}};
  EXPECT_EQ(log.lines(m), (std::vector<std::string>{
                              "[Rank 0] time (ms) | fwd_microstep: 1.00 | bwd_microstep: 4.00 | "
                              "bwd_inner_microstep: 3.00 | bwd_allreduce_microstep: 1.00 | "
                              "step_microstep: 0.00",
                              "[Rank 0] time (ms) | fwd_microstep: 2.00 | bwd_microstep: 5.25 | "
                              "bwd_inner_microstep: 3.25 | bwd_allreduce_microstep: 2.00 | "
                              "step_microstep: 0.50",
                              "[Rank 0] time (ms) | fwd: 3.00 | bwd: 9.25 | bwd_inner: 6.25 | "
                              "bwd_allreduce: 3.00 | step: 0.50"}));
  // Without the key: no timers, and no progress (DeepSpeed's steps_per_print default).
  TrainLog quiet(planConfigWith("log_quiet", {}));
  EXPECT_TRUE(quiet.lines(m).empty());
}

// The numbers in "[Rank 0] time (ms) | fwd: 1.00 | ..." by name.
std::map<std::string, double> timers(const std::string& line) {
  std::map<std::string, double> out;
  static const std::regex field(R"(\| (\w+): ([0-9.]+))");
  for (std::sregex_iterator it(line.begin(), line.end(), field), end; it != end; ++it)
    out[(*it)[1]] = std::stod((*it)[2]);
  return out;
}

std::vector<std::string> linesWith(const std::string& output, const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(output);
  for (std::string line; std::getline(in, line);)
    if (line.find(text) != std::string::npos) out.push_back(line);
  return out;
}

// A Hugging Face config's "auto" total_num_steps is the run's --steps: dsrun is the
// trainer that fills it, as the HF trainer fills it with max_steps. Same lrs as a
// plan compiled with the number, and the decay reaches the minimum at the last step.
TEST(TrainLog, DsrunFillsAutoTotalStepsFromSteps) {
  auto schedule = [](const nlohmann::json& total) {
    return nlohmann::json{
        {"scheduler",
         {{"type", "WarmupDecayLR"},
          {"params",
           {{"warmup_num_steps", 2}, {"warmup_max_lr", "auto"}, {"total_num_steps", total}}}}}};
  };
  const std::string automatic = compileMlp("auto_total", 0, 1, schedule("auto"));
  const std::string given = compileMlp("given_total", 0, 1, schedule(6));
  test::TrainedRun a = test::trainPlan(automatic, "auto_total", 6, 0.3);
  test::TrainedRun b = test::trainPlan(given, "given_total", 6, 0.3);
  ASSERT_EQ(a.metrics.size(), 6u) << a.output;
  ASSERT_EQ(b.metrics.size(), 6u) << b.output;
  for (size_t i = 0; i < 6; ++i)
    EXPECT_EQ(a.metrics[i]["lr"].get<double>(), b.metrics[i]["lr"].get<double>()) << i;
  EXPECT_GT(a.metrics[2]["lr"].get<double>(), a.metrics[5]["lr"].get<double>());
  // Trained for 12 steps instead, the same plan decays over 12.
  test::TrainedRun longer = test::trainPlan(automatic, "auto_total_12", 12, 0.3);
  ASSERT_EQ(longer.metrics.size(), 12u) << longer.output;
  EXPECT_GT(longer.metrics[5]["lr"].get<double>(), a.metrics[5]["lr"].get<double>());
}

// dsrun on two ranks with ZeRO-2: the progress lines at the steps_per_print steps
// with the lr the metrics file says the next step used; two micro-step timer
// lines and one step line per step, the step's the micro-steps' sums; the csv
// monitor's elapsed-time events at the step's samples.
TEST(TrainLog, DsrunPrintsDeepSpeedsLinesAndMonitorsTheTimes) {
  const std::string dir = test::freshDir("train_log_csv");
  const std::string plan =
      compileMlp("train_log_dsrun", 2, 2,
                 {{"steps_per_print", 2},
                  {"wall_clock_breakdown", true},
                  {"scheduler", {{"type", "WarmupLR"}, {"params", {{"warmup_num_steps", 10}}}}},
                  {"csv_monitor", {{"enabled", true}, {"output_path", dir}}}});
  test::TrainedRun run = test::trainPlan(plan, "train_log_dsrun", 5, 0.3);
  ASSERT_EQ(run.metrics.size(), 5u);
  const std::vector<std::string> progress = linesWith(run.output, "] step=");
  ASSERT_EQ(progress.size(), 2u) << run.output;
  for (size_t i = 0; i < 2; ++i) {
    const size_t step = 2 * i + 2;
    const std::string prefix = "[Rank 0] step=" + std::to_string(step) + ", skipped=0, lr=[";
    ASSERT_TRUE(progress[i].starts_with(prefix)) << progress[i];
    EXPECT_EQ(std::stod(progress[i].substr(prefix.size())),
              run.metrics[step]["lr"].get<double>());  // step + 1's, 0-based
  }
  EXPECT_EQ(linesWith(run.output, "RunningAvgSamplesPerSec=").size(), 1u) << run.output;

  const std::vector<std::string> micro = linesWith(run.output, "fwd_microstep:");
  const std::vector<std::string> steps = linesWith(run.output, "| fwd:");
  ASSERT_EQ(micro.size(), 10u) << run.output;
  ASSERT_EQ(steps.size(), 5u) << run.output;
  const std::string events = dir + "/DeepSpeedJobName/Train_Samples_elapsed_time_ms_";
  for (size_t s = 0; s < 5; ++s) {
    auto a = timers(micro[2 * s]), b = timers(micro[2 * s + 1]), total = timers(steps[s]);
    EXPECT_EQ(a["step_microstep"], 0.0);
    for (const char* name : {"fwd", "bwd", "bwd_inner", "bwd_allreduce", "step"}) {
      const std::string micro_name = std::string(name) + "_microstep";
      EXPECT_NEAR(total[name], a[micro_name] + b[micro_name], 0.011) << steps[s];
    }
    EXPECT_NEAR(total["bwd"], total["bwd_inner"] + total["bwd_allreduce"], 0.011);
  }
  for (auto [event, name] : {std::pair{"forward", "fwd"},
                             {"backward", "bwd"},
                             {"backward_inner", "bwd_inner"},
                             {"backward_allreduce", "bwd_allreduce"},
                             {"step", "step"}}) {
    std::ifstream in(events + event + ".csv");
    std::string header, row;
    ASSERT_TRUE(std::getline(in, header)) << event;
    EXPECT_EQ(header, std::string("step,elapsed_time_ms_") + event);
    for (size_t s = 0; s < 5; ++s) {
      ASSERT_TRUE(std::getline(in, row)) << event;
      const size_t comma = row.find(',');
      EXPECT_EQ(std::stoll(row.substr(0, comma)), static_cast<int64_t>(16 * (s + 1)));
      const double ms = std::stod(row.substr(comma + 1));
      EXPECT_NEAR(ms, timers(steps[s])[name], 0.0051) << event;
      // Every part ran steps: the ReduceScatter, the update (unrounded times).
      EXPECT_GT(ms, 0.0) << event;
    }
  }
}

TEST(TrainLog, DsrunPrintsNothingMoreWithoutTheKeys) {
  const std::string plan = compileMlp("train_log_quiet", 0, 1, {});
  test::TrainedRun run = test::trainPlan(plan, "train_log_quiet", 3, 0.3);
  ASSERT_EQ(run.metrics.size(), 3u);
  EXPECT_TRUE(linesWith(run.output, "[Rank 0]").empty()) << run.output;
}

// The value after "label:" in a profile.
std::string profileValue(const std::string& report, const std::string& label) {
  const size_t at = report.find("\n" + label + ":");
  if (at == std::string::npos) return "";
  const size_t start = report.find_first_not_of(' ', at + label.size() + 2);
  return report.substr(start, report.find('\n', start) - start);
}

// The MLP's products: x[4,8] by w1[8,16], then [4,16] by w2[16,4] per micro-batch of
// 4, twice per step: 2 x (512 + 256) multiply-accumulates; 212 parameters.
TEST(FlopsProfiler, CountsTheForwardProductsAndRatesThemByTheStepsTimes) {
  const PlanFile plan = readPlanFile(compileMlp("flops_report", 2, 2, {}));
  StepMetrics m = metricsAt(5, 1);
  m.micro_step_times = {{0.001, 0.002, 0.0005, 0}, {0.001, 0.002, 0.0005, 0.004}};
  const std::vector<double> seconds(static_cast<size_t>(plan.plan.ranks(0).steps_size()), 1e-3);
  const std::string report = flopsProfileReport(plan, 0, m, seconds);
  EXPECT_NE(report.find("Profile Summary at step 5:"), std::string::npos) << report;
  EXPECT_EQ(profileValue(report, "world size"), "2");
  EXPECT_EQ(profileValue(report, "batch size per GPU"), "4");
  EXPECT_EQ(profileValue(report, "params per GPU"), "212.00 ");
  EXPECT_EQ(profileValue(report, "fwd MACs per GPU"), "1.54 KMACs");
  EXPECT_EQ(profileValue(report, "fwd latency"), "2.00 ms");
  EXPECT_EQ(profileValue(report, "bwd latency"), "4.00 ms");
  EXPECT_EQ(profileValue(report, "step latency"), "4.00 ms");
  EXPECT_EQ(profileValue(report, "iter latency"), "10.00 ms");
  // 16 samples per step in 10 ms.
  EXPECT_EQ(profileValue(report, "samples/second"), "1600.00");
  // The forward's FLOPs at least its products' (plus bias, Relu, loss), over 2 ms.
  const double forward = std::stod(profileValue(report, "fwd flops per GPU"));
  EXPECT_GE(forward, 3.072);
  EXPECT_LT(forward, 4.0);  // K
  // K FLOPs over 2 ms: forward / 2 MFLOPS.
  const std::string rate =
      profileValue(report, "fwd FLOPS per GPU = fwd flops per GPU / fwd latency");
  EXPECT_TRUE(rate.ends_with(" MFLOPS")) << rate;
  EXPECT_NEAR(std::stod(rate), forward / 2, 0.0051) << rate;
  // The table: a row per op of the step's last micro-step.
  EXPECT_NE(report.find("\nMatMul "), std::string::npos) << report;
}

// dsrun profiles the step after profile_step steps, as DeepSpeed does, into stdout
// or output_file (its directory made); the timers come with it, as DeepSpeed turns
// wall_clock_breakdown on for the profiler.
TEST(FlopsProfiler, DsrunProfilesTheStepDeepSpeedProfiles) {
  const std::string dir = test::freshDir("flops_profile_dir");
  const std::string file = dir + "/profiles/step.txt";
  for (bool to_file : {false, true}) {
    nlohmann::json profiler = {{"enabled", true}, {"profile_step", 2}};
    if (to_file) profiler["output_file"] = file;
    const std::string plan = compileMlp("flops_dsrun", 0, 1, {{"flops_profiler", profiler}});
    test::TrainedRun run = test::trainPlan(plan, "flops_dsrun", 4, 0.3);
    ASSERT_EQ(run.metrics.size(), 4u);
    EXPECT_EQ(linesWith(run.output, "| fwd:").size(), 4u) << run.output;
    EXPECT_EQ(linesWith(run.output, "| fwd_microstep:").size(), 8u) << run.output;
    const std::string report = to_file ? test::readBytes(file) : run.output;
    EXPECT_EQ(linesWith(report, "Profile Summary at step").size(), 1u) << report;
    EXPECT_NE(report.find("Profile Summary at step 3:"), std::string::npos) << report;
    EXPECT_EQ(linesWith(run.output, "Profile Summary").size(), to_file ? 0u : 1u) << run.output;
  }
}

// A run resumed past the profiled step leaves the earlier profile alone.
TEST(FlopsProfiler, AResumedRunKeepsTheProfileOfTheRunBefore) {
  const std::string file = test::freshDir("flops_resume") + "/profile.txt";
  const std::string plan = compileMlp(
      "flops_resume", 0, 1, {{"flops_profiler", {{"enabled", true}, {"output_file", file}}}});
  const std::string checkpoint = test::freshDir("flops_resume_checkpoint");
  const std::string feeds = test::writeFeedData(plan, "flops_resume", 32, 0.3);
  ASSERT_EQ(test::tool("dsrun", plan + feeds + " --steps 3 --save " + checkpoint).exit_code, 0);
  const std::string profile = test::readBytes(file);
  EXPECT_NE(profile.find("Profile Summary at step 2:"), std::string::npos) << profile;
  const test::CommandResult r =
      test::tool("dsrun", plan + feeds + " --steps 5 --resume " + checkpoint);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(test::readBytes(file), profile);
}

// An output_file that cannot be written fails before training, naming the key.
TEST(FlopsProfiler, AnUnwritableOutputFileIsAOneLineErrorBeforeTraining) {
  const std::string blocker = test::scratch("flops_blocker");
  test::writeFile(blocker, "a file, not a directory");
  const std::string plan = compileMlp(
      "flops_unwritable", 0, 1,
      {{"flops_profiler", {{"enabled", true}, {"output_file", blocker + "/sub/profile.txt"}}}});
  const std::string metrics = test::scratch("flops_unwritable.jsonl");
  std::filesystem::remove(metrics);
  test::expectOneLineError(
      test::tool("dsrun", plan + test::writeFeedData(plan, "flops_unwritable", 32, 0.3) +
                              " --steps 3 --metrics " + metrics),
      "flops_profiler.output_file: cannot write " + blocker + "/sub/profile.txt");
  EXPECT_FALSE(std::filesystem::exists(metrics) && std::filesystem::file_size(metrics) > 0);
}

TEST(FlopsProfiler, ModuleTablesWarnAndTheRecomputeFactorIsInherent) {
  DsConfig quiet = parseDsConfig(
      R"({"flops_profiler": {"enabled": true, "recompute_fwd_factor": 1.0, "module_depth": -1,
          "top_modules": 1, "detailed": false, "output_file": null}})",
      "cfg.json");
  EXPECT_TRUE(quiet.warnings.empty()) << quiet.warnings.front();
  DsConfig deep =
      parseDsConfig(R"({"flops_profiler": {"enabled": true, "module_depth": 2}})", "cfg.json");
  EXPECT_EQ(deep.warnings,
            std::vector<std::string>{"flops_profiler.module_depth: not implemented by dscompile, "
                                     "ignored; the profile's table is per op, not per module"});
}

}  // namespace
}  // namespace ds
