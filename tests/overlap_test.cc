// Communication overlap (zero_optimization.overlap_comm, stage-3 prefetching): the
// plan puts collectives on a "comm" stream ordered by events, reduces each gradient
// bucket as soon as backward has produced it, gathers stage-3 parameters one bucket
// ahead of their use, and none of this changes the numbers.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "frontend/onnx_import.h"
#include "ir/graph.h"
#include "ir/plan.h"
#include "tests/training_fixtures.h"

namespace ds {
namespace {

using test::tool;

const std::string& mlpModel() {
  static const std::string path = test::writeModel(test::parseOnnxText(test::mlpText(false)),
                                                   test::scratchName("overlap_mlp.onnx"));
  return path;
}

std::string compile(int stage, bool overlap, int64_t bucket, const std::string& tag,
                    int64_t prefetch = -1) {
  nlohmann::json zero = {{"stage", stage},
                         {"overlap_comm", overlap},
                         {"reduce_bucket_size", bucket},
                         {"stage3_prefetch_bucket_size", prefetch < 0 ? bucket : prefetch},
                         {"stage3_param_persistence_threshold", 0},
                         {"stage3_max_reuse_distance", 0}};
  nlohmann::json config = {
      {"train_micro_batch_size_per_gpu", 4},
      {"optimizer", {{"type", "AdamW"}, {"params", {{"lr", 1e-2}, {"weight_decay", 0.01}}}}},
      {"zero_optimization", zero}};
  const std::string config_path = test::scratch("overlap_" + tag + ".json");
  test::writeFile(config_path, config.dump());
  const std::string plan = test::scratch("overlap_" + tag + ".plan");
  auto r = tool("dscompile", mlpModel() + " --loss cross_entropy --gpus 2 --config " + config_path +
                                 " -o " + plan);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return plan;
}

bool isCollective(const std::string& op) {
  return op == "AllReduce" || op == "ReduceScatter" || op == "AllGather" || op == "Broadcast";
}

TEST(Overlap, CollectivesRunOnTheCommStreamAndComputeWaitsForTheirResults) {
  PlanFile plan = readPlanFile(compile(2, true, 40, "streams"));  // load checks the streams
  ASSERT_EQ(plan.plan.streams_size(), 2);
  EXPECT_EQ(plan.plan.streams(1), "comm");
  const planpb::RankPlan& rank = plan.plan.ranks(0);
  std::map<int32_t, int> written_by;   // tensor -> step
  std::map<int32_t, int> recorded_by;  // event -> step
  int collectives = 0;
  for (int s = 0; s < rank.steps_size(); ++s) {
    const planpb::Step& step = rank.steps(s);
    EXPECT_EQ(step.stream(), isCollective(step.op()) ? 1 : 0) << step.node();
    collectives += isCollective(step.op());
    std::set<int> waited;
    for (int32_t e : step.wait_events()) waited.insert(recorded_by.at(e));
    if (isCollective(step.op())) {
      EXPECT_FALSE(waited.empty()) << step.node() << " does not wait for the compute before it";
    } else {
      for (int32_t t : step.inputs()) {
        auto it = written_by.find(t);
        if (it == written_by.end() || !isCollective(rank.steps(it->second).op())) continue;
        EXPECT_TRUE(waited.count(it->second))
            << step.node() << " reads " << rank.steps(it->second).node() << " without waiting";
      }
    }
    for (int32_t t : step.outputs()) written_by[t] = s;
    if (step.record_event() >= 0) recorded_by[step.record_event()] = s;
  }
  EXPECT_GE(collectives, 4);
  // Without overlap_comm everything runs on one stream.
  PlanFile serial = readPlanFile(compile(2, false, 40, "serial"));
  EXPECT_EQ(serial.plan.streams_size(), 1);
}

// The last step before `reduce` (a ReduceScatter) that computes a gradient it sends:
// the bucket's Concat and reshapes looked through.
int lastGradientStep(const planpb::RankPlan& rank, int reduce) {
  std::map<int32_t, int> written_by;
  for (int s = 0; s < reduce; ++s)
    for (int32_t t : rank.steps(s).outputs()) written_by[t] = s;
  std::vector<int32_t> todo(rank.steps(reduce).inputs().begin(), rank.steps(reduce).inputs().end());
  int last = -1;
  while (!todo.empty()) {
    auto it = written_by.find(todo.back());
    todo.pop_back();
    if (it == written_by.end()) continue;
    const planpb::Step& step = rank.steps(it->second);
    if (step.op() == "Concat" || step.op() == "Reshape")
      todo.insert(todo.end(), step.inputs().begin(), step.inputs().end());
    else
      last = std::max(last, it->second);
  }
  return last;
}

// Each bucket's reduce-scatter is issued right after backward produced its last
// gradient, before backward goes on to the next layers: every bucket whose
// gradients are all computed before backward's last computing step is reduced
// before it too.
TEST(Overlap, EveryBucketButTheLastIsReducedBeforeBackwardEnds) {
  PlanFile plan = readPlanFile(compile(2, true, 40, "buckets"));
  const planpb::RankPlan& rank = plan.plan.ranks(0);
  std::vector<int> reduces;
  int last_backward = -1;
  for (int s = 0; s < rank.steps_size(); ++s) {
    const planpb::Step& step = rank.steps(s);
    if (step.phase() != planpb::EVERY_MICRO_STEP) continue;
    if (step.op() == "ReduceScatter") reduces.push_back(s);
    if (step.node().find("/grad/") != std::string::npos && step.op() != "Reshape")
      last_backward = s;
  }
  ASSERT_GE(reduces.size(), 3u) << "buckets of 40 elements split the MLP's 212 parameters";
  size_t early = 0;  // buckets complete before backward's last step
  for (size_t i = 0; i < reduces.size(); ++i) {
    // Only the buckets backward's last step feeds may wait for it.
    const int last_gradient = lastGradientStep(rank, reduces[i]);
    if (last_gradient >= last_backward) {
      EXPECT_EQ(last_gradient, last_backward) << "bucket " << i << " packs a later step";
      continue;
    }
    ++early;
    EXPECT_LT(reduces[i], last_backward) << "bucket " << i << " waits for the end of backward";
  }
  // The first layer's weight and bias gradients come last, from one step
  // (fuse-bias-grad); the buckets before them do not wait.
  EXPECT_GE(early, reduces.size() - 2);
}

// The compute steps between a stage-3 gather and the first step using what it
// gathered (reshapes and splits that unpack it excluded).
std::vector<int> computeStepsAhead(const PlanFile& plan) {
  const planpb::RankPlan& rank = plan.plan.ranks(0);
  std::vector<int> ahead;
  for (int g = 0; g < rank.steps_size(); ++g) {
    const planpb::Step& gather = rank.steps(g);
    if (gather.op() != "AllGather" || gather.phase() != planpb::EVERY_MICRO_STEP) continue;
    std::set<int32_t> gathered(gather.outputs().begin(), gather.outputs().end());
    int between = 0;
    for (int s = g + 1; s < rank.steps_size(); ++s) {
      const planpb::Step& step = rank.steps(s);
      bool reads = false;
      for (int32_t t : step.inputs()) reads |= gathered.count(t) > 0;
      const bool unpacks = step.op() == "Split" || step.op() == "Reshape";
      if (reads && unpacks) {
        gathered.insert(step.outputs().begin(), step.outputs().end());
      } else if (reads) {
        ahead.push_back(between);
        break;
      } else if (!unpacks && !isCollective(step.op())) {
        ++between;
      }
    }
  }
  return ahead;
}

TEST(Overlap, Stage3GathersArePrefetchedOneBucketAhead) {
  std::vector<int> prefetched = computeStepsAhead(readPlanFile(compile(3, true, 40, "prefetch")));
  ASSERT_GE(prefetched.size(), 4u);
  // Only the first bucket of forward and the first of backward cannot be fetched
  // ahead: nothing of theirs runs before them.
  EXPECT_LE(std::count(prefetched.begin(), prefetched.end(), 0), 2)
      << ::testing::PrintToString(prefetched);
  // stage3_prefetch_bucket_size 0 turns prefetching off, as in DeepSpeed.
  for (int ahead : computeStepsAhead(readPlanFile(compile(3, true, 40, "no_prefetch", 0))))
    EXPECT_EQ(ahead, 0);
}

struct Trained {
  std::vector<std::string> losses;
  std::string weights;  // the exported ONNX initializers' bytes
};

Trained train(const std::string& plan, const std::string& tag) {
  const std::string metrics = test::scratch("overlap_" + tag + ".jsonl");
  const std::string out = test::scratch("overlap_" + tag + ".onnx");
  auto r = tool("dsrun", plan + test::writeFeedData(plan, "overlap_" + tag, 32, 0.53) +
                             " --steps 4 --metrics " + metrics + " --export-onnx " + out);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  Trained run;
  std::ifstream in(metrics);
  for (std::string line; std::getline(in, line);)
    run.losses.push_back(nlohmann::json::parse(line)["loss"].dump());
  onnx::ModelProto model;
  std::ifstream file(out, std::ios::binary);
  EXPECT_TRUE(model.ParseFromIstream(&file));
  for (const onnx::TensorProto& init : model.graph().initializer()) run.weights += init.raw_data();
  return run;
}

// Overlap and bucket sizes change the schedule, never the numbers: bit-identical
// losses and weights (the gradient norm, whose summation order follows the buckets,
// feeds no update here: no clipping).
TEST(Overlap, OverlapAndBucketSizesChangeSpeedNeverNumbers) {
  for (int stage = 0; stage <= 3; ++stage) {
    SCOPED_TRACE("ZeRO-" + std::to_string(stage));
    const std::string s = std::to_string(stage);
    Trained base = train(compile(stage, false, 1000, "bits_serial" + s), "bits_serial" + s);
    Trained overlapped = train(compile(stage, true, 1000, "bits_overlap" + s), "bits_overlap" + s);
    Trained small = train(compile(stage, true, 40, "bits_small" + s), "bits_small" + s);
    ASSERT_EQ(base.losses.size(), 4u);
    EXPECT_EQ(overlapped.losses, base.losses);
    EXPECT_EQ(small.losses, base.losses);
    EXPECT_TRUE(overlapped.weights == base.weights);
    EXPECT_TRUE(small.weights == base.weights);
  }
}

}  // namespace
}  // namespace ds
