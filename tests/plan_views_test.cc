// dsplan and dscompile --format on compiled plans: the Chrome trace, the Graphviz
// graph (rendered when `dot` is installed), the JSON report against the plan's own
// accounting, the memory estimate, user errors, and ResNet-101's summary.
#include <gtest/gtest.h>

#include <filesystem>
#include <regex>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "ir/plan.h"
#include "tests/training_fixtures.h"

namespace ds {
namespace {

using nlohmann::json;
using test::contains;
using test::tool;

// `dsmodel mlp` compiled for training on 2 ranks at ZeRO-3 (built once).
const std::string& mlpZero3Plan() {
  static const std::string plan = [] {
    const std::string model = test::scratch("views_mlp.onnx");
    auto r = tool("dsmodel", "mlp -o " + model);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    const std::string out = test::scratch("views_mlp_z3.plan");
    r = tool("dscompile", model + " --loss cross_entropy --batch 4 --gpus 2 --zero 3 -o " + out);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return out;
  }();
  return plan;
}

json dsplanJson(const std::string& args) {
  const std::string out = test::scratch("views_out.json");
  auto r = tool("dsplan", args + " -o " + out);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return json::parse(test::readBytes(out));
}

TEST(PlanViews, ChromeTraceHasOneTrackPerStreamPerRank) {
  const PlanFile plan = readPlanFile(mlpZero3Plan());
  const json trace = dsplanJson(mlpZero3Plan() + " --format trace");
  ASSERT_TRUE(trace.contains("traceEvents") && trace["traceEvents"].is_array());
  std::set<std::pair<int, int>> named, used;
  std::set<std::string> processes;
  size_t complete = 0;
  for (const json& e : trace["traceEvents"]) {
    auto track = [&] { return std::pair{e["pid"].get<int>(), e["tid"].get<int>()}; };
    if (e["ph"] == "M" && e["name"] == "thread_name") named.insert(track());
    if (e["ph"] == "M" && e["name"] == "process_name") processes.insert(e["args"]["name"]);
    if (e["ph"] != "X") continue;
    ++complete;
    ASSERT_TRUE(e["ts"].is_number() && e["dur"].is_number()) << e.dump();
    EXPECT_GE(e["dur"].get<double>(), 0) << e.dump();
    EXPECT_GE(e["ts"].get<double>(), 0) << e.dump();
    used.insert(track());
  }
  const int ranks = plan.plan.world_size(), streams = plan.plan.streams_size();
  ASSERT_EQ(ranks, 2);
  EXPECT_EQ(named.size(), static_cast<size_t>(ranks * streams));
  for (int r = 0; r < ranks; ++r) {
    EXPECT_TRUE(processes.count("rank " + std::to_string(r))) << r;
    for (int s = 0; s < streams; ++s) EXPECT_TRUE(named.count({r, s})) << r << " " << s;
  }
  for (const auto& track : used) EXPECT_TRUE(named.count(track)) << track.first;
  // Every rank runs every step once per micro-step (no accumulation here).
  EXPECT_EQ(complete, static_cast<size_t>(ranks * plan.plan.ranks(0).steps_size()));
}

TEST(PlanViews, JsonAgreesWithThePlansAccounting) {
  const PlanFile plan = readPlanFile(mlpZero3Plan());
  const json report = dsplanJson(mlpZero3Plan() + " --format json");
  EXPECT_EQ(report["plan"]["world_size"], 2);
  EXPECT_EQ(report["memory"]["parameter_bytes"], plan.plan.rank_cost().parameter_bytes());
  EXPECT_EQ(report["memory"]["arena_bytes"], plan.plan.arena_bytes());
  const json& sim = report["simulation"];
  EXPECT_GT(sim["step_seconds"].get<double>(), 0);
  EXPECT_GE(sim["step_seconds"].get<double>(), sim["compute_seconds"].get<double>());
  EXPECT_LE(sim["exposed_comm_seconds"].get<double>(),
            sim["collective_seconds"].get<double>() + 1e-12);
  // The simulated collectives move what the compiler's accounting says they move.
  std::map<std::string, int64_t> simulated;
  for (const json& c : sim["collectives"]) simulated[c["op"]] = c["bytes"];
  ASSERT_GT(plan.plan.rank_cost().comm_size(), 0);
  for (const planpb::CommVolume& v : plan.plan.rank_cost().comm())
    EXPECT_EQ(simulated[v.op()], v.bytes_per_step()) << v.op();
  EXPECT_EQ(sim["timeline"].size(), static_cast<size_t>(plan.plan.ranks(0).steps_size()));
}

TEST(PlanViews, TextReportsMemoryCommunicationAndPrediction) {
  auto r = tool("dsplan", mlpZero3Plan());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* line :
       {"plan          ", "memory        per rank: params", "AllGather", "ReduceScatter",
        "streams       compute busy", "predicted     step time", "exposed comm  "})
    EXPECT_TRUE(contains(r.output, line)) << line << "\n" << r.output;
}

TEST(PlanViews, DotHasEveryStepAndALegend) {
  const PlanFile plan = readPlanFile(mlpZero3Plan());
  auto r = tool("dsplan", mlpZero3Plan() + " --format dot --rank 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "digraph \"rank 1\" {")) << r.output;
  EXPECT_TRUE(contains(r.output, "cluster_legend"));
  const int steps = plan.plan.ranks(1).steps_size();
  EXPECT_TRUE(contains(r.output, "  s" + std::to_string(steps - 1) + " [label="));
  EXPECT_FALSE(contains(r.output, "  s" + std::to_string(steps) + " [label="));
  EXPECT_TRUE(contains(r.output, "AllGather\\n")) << "collectives are nodes";
  EXPECT_TRUE(std::regex_search(r.output, std::regex("  s[0-9]+ -> s[0-9]+;"))) << "data edges";
}

TEST(PlanViews, DotRendersWithGraphviz) {
  if (test::runCommand("command -v dot").exit_code != 0)
    GTEST_SKIP() << "Graphviz's `dot` is not installed (scripts/setup.sh installs graphviz)";
  const std::string dot = test::scratch("views.dot"), svg = test::scratch("views.svg");
  ASSERT_EQ(tool("dsplan", mlpZero3Plan() + " --format dot -o " + dot).exit_code, 0);
  auto r = test::runCommand("dot -Tsvg " + dot + " -o " + svg);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(test::readBytes(svg), "<svg"));
}

TEST(PlanViews, EstimateCoversEveryStageAndOffload) {
  auto r = tool("dsplan", mlpZero3Plan() + " --estimate --precision mixed");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "mixed-precision Adam")) << r.output;
  EXPECT_TRUE(contains(r.output, "2 GPUs, 1 node(s) of 8")) << r.output;
  for (const char* row : {"  0      none ", "  1      optimizer ", "  3      optimizer+params "})
    EXPECT_TRUE(contains(r.output, row)) << row << "\n" << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 13) << r.output;
}

TEST(Dsplan, BadInputIsOneLineAndExitCode2) {
  test::expectOneLineError(tool("dsplan", "/nonexistent.plan"), "/nonexistent.plan");
  const std::string truncated = test::scratch("views_truncated.plan");
  const std::string bytes = test::readBytes(mlpZero3Plan());
  test::writeFile(truncated, bytes.substr(0, bytes.size() / 2));
  test::expectOneLineError(tool("dsplan", truncated), truncated);
  test::writeFile(truncated, bytes.substr(0, 20));
  test::expectOneLineError(tool("dsplan", truncated), truncated);
  test::expectOneLineError(tool("dsplan", mlpZero3Plan() + " --format svg"), "--format");
  test::expectOneLineError(tool("dsplan", mlpZero3Plan() + " --device a100"), "a100");
  test::expectOneLineError(tool("dsplan", mlpZero3Plan() + " --rank 2"), "--rank 2");
}

TEST(Dsplan, DscompileSummaryFormats) {
  const std::string model = test::scratch("views_mlp.onnx");
  mlpZero3Plan();  // writes the model
  const std::string flags =
      model + " --loss cross_entropy --batch 4 --gpus 2 --zero 3 --dump summary";
  auto text = tool("dscompile", flags);
  ASSERT_EQ(text.exit_code, 0) << text.output;
  EXPECT_TRUE(contains(text.output, "parameters    ")) << "today's summary stays";
  EXPECT_TRUE(contains(text.output, "predicted     step time")) << text.output;
  auto trace = tool("dscompile", flags + " --format trace");
  ASSERT_EQ(trace.exit_code, 0) << trace.output;
  EXPECT_TRUE(json::parse(trace.output).contains("traceEvents"));
  auto dot = tool("dscompile", flags + " --format dot");
  EXPECT_TRUE(contains(dot.output, "digraph")) << dot.output;
}

// The reference workload (ResNet-101, its DeepSpeed config: micro-batch 128, fp16,
// AdamW, ZeRO-3 with optimizer offload, on 8 GPUs): the summary predicts a step time
// and the communication it exposes, and reports the offload's host memory.
TEST(Dsplan, ResNet101SummaryPredictsStepTimeAndExposedComm) {
  const std::string model = test::scratch("views_resnet101.onnx");
  ASSERT_EQ(tool("dsmodel", "resnet101 -o " + model).exit_code, 0);
  auto r = tool("dscompile", model + " --loss cross_entropy --gpus 8 --config " DS_SOURCE_DIR
                                     "/configs/ds_config_resnet101_zero3.json --dump summary");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::smatch m;
  const std::string& out = r.output;
  ASSERT_TRUE(std::regex_search(out, m, std::regex("predicted     step time ([0-9.]+) (s|ms|us)")))
      << out;
  EXPECT_GT(std::stod(m[1]), 0);
  ASSERT_TRUE(std::regex_search(
      out, m,
      std::regex("exposed comm  ([0-9.]+) (s|ms|us) of ([0-9.]+) (s|ms|us) in collectives")))
      << out;
  EXPECT_GT(std::stod(m[3]), 0) << "ZeRO-3 gathers and reduces every step";
  EXPECT_TRUE(contains(out, "precision     fp16")) << out;
  EXPECT_TRUE(contains(out, "host          optimizer offload")) << out;
}

}  // namespace
}  // namespace ds
