// DeepSpeed's comms_logger in dsrun (runtime/comm_log.h): which collectives are
// logged under which name and message size, DeepSpeed's bandwidth arithmetic
// (worked out here from the plan's tensor sizes), its summary table and verbose
// lines, and dsrun's summary after training on two ranks.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "frontend/ds_config.h"
#include "ir/plan_verifier.h"
#include "runtime/comm_log.h"
#include "tests/training_fixtures.h"

namespace ds {
namespace {

// The MLP on 2 ranks with ZeRO-2, 2 accumulation steps and clipping: per micro-step
// a ReduceScatter; per optimizer step the norm's AllReduce and the AllGather.
std::string compileZero2(const std::string& name, const nlohmann::json& comms_logger) {
  const nlohmann::json config = {{"train_micro_batch_size_per_gpu", 4},
                                 {"gradient_accumulation_steps", 2},
                                 {"gradient_clipping", 1.0},
                                 {"optimizer", {{"type", "AdamW"}, {"params", {{"lr", 0.01}}}}},
                                 {"zero_optimization", {{"stage", 2}}},
                                 {"comms_logger", comms_logger}};
  const std::string path = test::scratch(name + ".json");
  test::writeFile(path, config.dump());
  return test::compileText(test::mlpText(false), name,
                           "--loss cross_entropy --gpus 2 --config " + path);
}

std::vector<std::string> linesOf(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// The whitespace-separated fields of a summary row.
std::vector<std::string> fields(const std::string& line) {
  std::vector<std::string> out;
  std::istringstream in(line);
  for (std::string f; in >> f;) out.push_back(f);
  return out;
}

TEST(CommLog, SummarisesEachCollectiveWithDeepSpeedsBandwidths) {
  const PlanFile plan = readPlanFile(compileZero2("comm_log_unit", {{"enabled", true}}));
  const planpb::RankPlan& rank = plan.plan.ranks(0);
  CommLog log(plan, 0, commLogOptions(plan.config()));
  // Every step took 2 ms; three optimizer steps of two micro-steps.
  const std::vector<double> seconds(static_cast<size_t>(rank.steps_size()), 0.002);
  for (int step = 0; step < 3; ++step) {
    EXPECT_TRUE(log.record(seconds, false).empty());  // not verbose
    log.record(seconds, true);
  }
  // What each op should show, from the plan: count and per-rank bytes.
  struct Expected {
    int64_t count = 0, bytes = 0;
  };
  std::map<std::string, Expected> expected;
  for (const planpb::Step& step : rank.steps()) {
    if (!isCollectiveOp(step.op())) continue;
    // DeepSpeed records its `tensor` argument: the input (a reduce-scatter's whole
    // buffer, a gather's shard).
    Expected& e = expected[deepSpeedCommName(step.op())];
    e.bytes = static_cast<int64_t>(plan.tensorType(step.inputs(0)).bytes());
    e.count += step.phase() == planpb::OPTIMIZER_STEP ? 3 : 6;
  }
  ASSERT_EQ(expected.size(), 3u);
  const std::vector<std::string> lines = linesOf(log.summary());
  ASSERT_EQ(lines.size(), 7u) << log.summary();
  // In the order first logged: the micro-step's reduce-scatter, then the norm's
  // all-reduce and the gather of the updated parameters.
  EXPECT_EQ(lines[1], "reduce_scatter_tensor");
  EXPECT_EQ(lines[3], "all_reduce");
  EXPECT_EQ(lines[5], "all_gather_into_tensor");
  EXPECT_EQ(fields(lines[0]),
            (std::vector<std::string>{"Comm.", "Op", "Message", "Size", "Count", "Total",
                                      "Latency(ms)", "Avg", "Latency(ms)", "tput_avg", "(Gbps)",
                                      "busbw_avg", "(Gbps)"}));
  for (size_t i = 1; i < lines.size(); i += 2) {
    const std::string name = lines[i];
    ASSERT_TRUE(expected.count(name)) << name;
    const Expected& e = expected[name];
    const std::vector<std::string> row = fields(lines[i + 1]);
    ASSERT_EQ(row.size(), 7u) << lines[i + 1];
    // DeepSpeed's message size: bytes in B or KB, two decimals.
    const double shown = std::stod(row[0]) * (row[1] == "KB" ? 1024 : 1);
    EXPECT_NEAR(shown, static_cast<double>(e.bytes), 0.006 * 1024) << lines[i + 1];
    EXPECT_EQ(std::stoll(row[2]), e.count) << name;
    EXPECT_DOUBLE_EQ(std::stod(row[3]), 2.0 * static_cast<double>(e.count)) << name;
    EXPECT_DOUBLE_EQ(std::stod(row[4]), 2.0) << name;
    // Gbit/s of the message over 2 ms. all_reduce counts it twice (algbw) and its
    // bus 2 (n - 1) / n times; for the others DeepSpeed counts n messages, the bus
    // (n - 1) / n of them: at n = 2, both twice and once.
    const double per_ms = static_cast<double>(e.bytes) / 2.0 * 8 / 1e6;
    EXPECT_NEAR(std::stod(row[5]), 2 * per_ms, 0.006) << name;
    EXPECT_NEAR(std::stod(row[6]), per_ms, 0.006) << name;
  }
}

// Means leave out round(10%) at each end, as DeepSpeed's trim_mean: of latencies
// 1, 2, ..., 9 and 100 ms, the mean of 2 to 9.
TEST(CommLog, MeansAreTrimmedOfTheOutliers) {
  const PlanFile plan = readPlanFile(compileZero2("comm_log_trim", {{"enabled", true}}));
  CommLog log(plan, 0, commLogOptions(plan.config()));
  for (double ms : {100.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0})
    log.record(std::vector<double>(static_cast<size_t>(plan.plan.ranks(0).steps_size()), ms / 1e3),
               true);
  const std::vector<std::string> lines = linesOf(log.summary());
  ASSERT_GE(lines.size(), 3u);
  const std::vector<std::string> row = fields(lines[2]);
  ASSERT_EQ(row.size(), 7u);
  EXPECT_EQ(row[2], "10");
  EXPECT_DOUBLE_EQ(std::stod(row[3]), 145.0);
  EXPECT_DOUBLE_EQ(std::stod(row[4]), 5.5);
  EXPECT_THROW(log.record(std::vector<double>(3, 0.001), true), Error);  // not this plan's
}

TEST(CommLog, SizesPrintAsDeepSpeedsConvertSize) {
  EXPECT_EQ(convertSize(0), "0B");
  EXPECT_EQ(convertSize(4), "4.0 B");
  EXPECT_EQ(convertSize(1536), "1.5 KB");
  EXPECT_EQ(convertSize(1152), "1.12 KB");  // 1.125: Python rounds halves to even
  EXPECT_EQ(convertSize(1664), "1.62 KB");
  EXPECT_EQ(convertSize(538642), "526.02 KB");
  EXPECT_EQ(convertSize(int64_t{3} << 20), "3.0 MB");
  EXPECT_EQ(convertSize(int64_t{5} << 30), "5.0 GB");
}

TEST(CommLog, VerboseLinesAndProfOpsAsDeepSpeed) {
  const PlanFile plan = readPlanFile(compileZero2(
      "comm_log_verbose",
      {{"enabled", true}, {"verbose", true}, {"prof_all", false}, {"prof_ops", {"all_reduce"}}}));
  CommLog log(plan, 0, commLogOptions(plan.config()));
  const std::vector<double> seconds(static_cast<size_t>(plan.plan.ranks(0).steps_size()), 0.001);
  EXPECT_TRUE(log.record(seconds, false).empty());  // the AllReduce is the optimizer step's
  const std::vector<std::string> lines = log.record(seconds, true);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_TRUE(
      lines[0].starts_with("[Rank 0] comm op: all_reduce | time (ms): 1.00 | msg size: "
                           "4.0 B | algbw (Gbps): "))
      << lines[0];
  EXPECT_EQ(linesOf(log.summary()).size(), 3u) << log.summary();  // header, all_reduce, a row
}

// dsrun prints the summary after training, from rank 0's own times.
TEST(CommLog, DsrunPrintsTheSummaryAfterTraining) {
  const std::string plan = compileZero2("comm_log_dsrun", {{"enabled", true}});
  test::TrainedRun run = test::trainPlan(plan, "comm_log_dsrun", 3, 0.3);
  ASSERT_EQ(run.metrics.size(), 3u);
  const std::vector<std::string> lines = linesOf(run.output);
  auto at = std::find(lines.begin(), lines.end(), "reduce_scatter_tensor");
  ASSERT_NE(at, lines.end()) << run.output;
  const std::vector<std::string> row = fields(*(at + 1));
  ASSERT_EQ(row.size(), 7u) << *(at + 1);
  EXPECT_EQ(row[2], "6");  // 3 steps of 2 micro-steps
  EXPECT_GT(std::stod(row[3]), 0.0);
  for (const char* op : {"all_reduce", "all_gather_into_tensor"})
    EXPECT_NE(std::find(lines.begin(), lines.end(), op), lines.end()) << op;
}

// Values dsrun would only read after compiling are checked when the config is.
TEST(CommLog, BadValuesAreConfigErrors) {
  try {
    parseDsConfig(R"({"comms_logger": {"enabled": true, "prof_ops": [3]}})", "cfg.json");
    ADD_FAILURE() << "a number was taken for an op name";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "cfg.json: comms_logger.prof_ops: expected op names, got 3");
  }
  try {
    parseDsConfig(R"({"flops_profiler": {"enabled": true, "output_file": 7}})", "cfg.json");
    ADD_FAILURE() << "a number was taken for a file name";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "cfg.json: flops_profiler.output_file: must be a file name or null");
  }
}

TEST(CommLog, DebugRecordsWarn) {
  EXPECT_EQ(
      parseDsConfig(R"({"comms_logger": {"enabled": true, "debug": true}})", "cfg.json").warnings,
      std::vector<std::string>{"comms_logger.debug: not implemented by dscompile, ignored"});
  EXPECT_TRUE(parseDsConfig(R"({"comms_logger": {"enabled": true, "verbose": false,
                                "prof_all": true, "prof_ops": [], "debug": false}})",
                            "cfg.json")
                  .warnings.empty());
}

}  // namespace
}  // namespace ds
