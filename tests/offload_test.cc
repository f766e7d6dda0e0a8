// Optimizer offload (zero_optimization.offload_optimizer.device = "cpu"): the plan
// keeps optimizer state in host memory, runs the update on the host stream and moves
// gradients down and parameters up on the copy stream — and trains exactly as the
// same plan without offload. Parameter offload (offload_param, stage 3) keeps the
// parameter shards in host memory, copied up before each gather, and trains exactly
// as without it too.
#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ir/graph.h"
#include "ir/plan.h"
#include "tests/training_fixtures.h"

namespace ds {
namespace {

using test::tool;

const std::string& mlpModel() {
  static const std::string path = test::writeModel(test::parseOnnxText(test::mlpText(false)),
                                                   test::scratchName("offload_mlp.onnx"));
  return path;
}

nlohmann::json config(int stage, bool offload, bool fp16, int accumulation = 1,
                      const std::string& optimizer = "AdamW") {
  nlohmann::json zero = {{"stage", stage},
                         {"reduce_bucket_size", 100},
                         {"stage3_prefetch_bucket_size", 100},
                         {"stage3_param_persistence_threshold", 10}};
  if (offload) zero["offload_optimizer"] = {{"device", "cpu"}, {"pin_memory", true}};
  nlohmann::json c = {
      {"train_micro_batch_size_per_gpu", 4},
      {"gradient_accumulation_steps", accumulation},
      {"gradient_clipping", 1.0},
      {"optimizer", {{"type", optimizer}, {"params", {{"lr", 1e-2}, {"weight_decay", 0.01}}}}},
      {"zero_optimization", zero}};
  if (fp16) c["fp16"] = {{"enabled", true}, {"initial_scale_power", 8}};
  return c;
}

// `c` with zero_optimization.offload_param {"device": "cpu"}.
nlohmann::json withParamOffload(nlohmann::json c) {
  c["zero_optimization"]["offload_param"] = {{"device", "cpu"}, {"pin_memory", true}};
  return c;
}

std::string compile(const nlohmann::json& c, const std::string& tag, int ranks = 2) {
  const std::string path = test::scratch("offload_" + tag + ".json");
  test::writeFile(path, c.dump());
  const std::string plan = test::scratch("offload_" + tag + ".plan");
  auto r = tool("dscompile", mlpModel() + " --loss cross_entropy --gpus " + std::to_string(ranks) +
                                 " --config " + path + " -o " + plan);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return plan;
}

test::TrainedRun train(const std::string& plan, const std::string& tag,
                       const std::string& extra = "") {
  return test::trainPlan(plan, "offload_" + tag, 5, 0.29, extra);
}

// Also with gradient accumulation, where stages 2 and 3 accumulate gradient shards
// on the host every micro-step, and stage 1 reduces once per optimizer step.
TEST(Offload, TrainsExactlyAsWithoutOffloadAtEveryStageInFp32AndFp16) {
  for (int accumulation : {1, 2})
    for (bool fp16 : {false, true})
      for (int stage = 1; stage <= 3; ++stage) {
        if (accumulation > 1 && !fp16) continue;
        const std::string tag = (fp16 ? "fp16_z" : "fp32_z") + std::to_string(stage) + "_g" +
                                std::to_string(accumulation);
        SCOPED_TRACE(tag);
        test::TrainedRun device =
            train(compile(config(stage, false, fp16, accumulation), tag + "_device"), tag + "_d");
        test::TrainedRun host =
            train(compile(config(stage, true, fp16, accumulation), tag + "_host"), tag + "_h");
        ASSERT_EQ(device.metrics.size(), 5u);
        EXPECT_EQ(host.values("loss"), device.values("loss"));
        EXPECT_TRUE(host.exported == device.exported) << "the exported models differ";
      }
}

// Lion's and Adagrad's host steps, in fp16 (the fused 16-bit forms) at stage 3.
TEST(Offload, LionAndAdagradTrainExactlyAsWithoutOffload) {
  for (const std::string optimizer : {"Lion", "Adagrad"}) {
    SCOPED_TRACE(optimizer);
    const std::string tag = "fp16_z3_" + optimizer;
    test::TrainedRun device =
        train(compile(config(3, false, true, 2, optimizer), tag + "_device"), tag + "_d");
    test::TrainedRun host =
        train(compile(config(3, true, true, 2, optimizer), tag + "_host"), tag + "_h");
    ASSERT_EQ(device.metrics.size(), 5u);
    EXPECT_EQ(host.values("loss"), device.values("loss"));
    EXPECT_NE(device.values("loss").front(), device.values("loss").back());
    EXPECT_TRUE(host.exported == device.exported) << "the exported models differ";
  }
}

TEST(Offload, OptimizerStateLivesOnTheHostAndTheUpdateRunsThere) {
  PlanFile device = readPlanFile(compile(config(3, false, true), "plan_device"));
  PlanFile host = readPlanFile(compile(config(3, true, true), "plan_host"));
  std::vector<std::string> streams(host.plan.streams().begin(), host.plan.streams().end());
  EXPECT_EQ(streams, (std::vector<std::string>{"compute", "comm", "host", "copy"}));
  int64_t optimizer_state = 0;
  for (const planpb::TensorInfo& t : host.plan.tensors()) {
    if (static_cast<Role>(t.role()) != Role::OptimizerState) continue;
    EXPECT_EQ(t.storage(), planpb::HOST_PERSISTENT) << t.name();
    optimizer_state += static_cast<int64_t>(
        TensorType{static_cast<DType>(t.dtype()), Shape(t.shape().begin(), t.shape().end())}
            .bytes());
  }
  EXPECT_GT(optimizer_state, 0);
  // The device holds that much less; the host holds it.
  EXPECT_LE(host.plan.persistent_bytes(), device.plan.persistent_bytes() - optimizer_state);
  EXPECT_GE(host.plan.rank_cost().host_bytes(), optimizer_state);
  int updates = 0, copies = 0, ups = 0, shards_down = 0;
  const auto& steps = host.plan.ranks(0).steps();
  for (int i = 0; i < steps.size(); ++i) {
    const planpb::Step& s = steps[i];
    if (s.op() == "AdamStep") {
      EXPECT_EQ(host.plan.streams(s.stream()), "host") << s.node();
      ++updates;
    }
    if (s.op() != "Copy") continue;
    EXPECT_EQ(host.plan.streams(s.stream()), "copy") << s.node();
    ++copies;
    for (const planpb::Attr& a : s.attrs()) ups += a.name() == "to" && a.s() == "device";
    // A gradient shard goes down as soon as its ReduceScatter made it, to overlap
    // the rest of backward.
    if (i > 0 && steps[i - 1].op() == "ReduceScatter" && steps[i - 1].outputs(0) == s.inputs(0))
      ++shards_down;
  }
  EXPECT_GT(updates, 0);
  EXPECT_GT(copies, 2 * updates) << "gradients go down and parameters come up";
  // A bucket's updated parameters come up in one Copy, unpacked on the device: also
  // on one rank, where no AllGather stands between the host step and the unpacking.
  EXPECT_LE(ups, updates);
  // Persistent parameters (kept whole, stepped through a master): one bucket of them.
  nlohmann::json whole_buckets = config(3, true, true);
  whole_buckets["zero_optimization"]["reduce_bucket_size"] = 1000;
  whole_buckets["zero_optimization"]["stage3_param_persistence_threshold"] = 1000;
  const PlanFile one = readPlanFile(compile(whole_buckets, "plan_host_one_rank", 1));
  int one_updates = 0, one_ups = 0;
  for (const planpb::Step& s : one.plan.ranks(0).steps()) {
    one_updates += s.op() == "AdamStep";
    if (s.op() == "Copy")
      for (const planpb::Attr& a : s.attrs()) one_ups += a.name() == "to" && a.s() == "device";
  }
  EXPECT_GE(one_updates, 1);
  EXPECT_LE(one_ups, one_updates);
  int scatters = 0;
  for (const planpb::Step& s : steps) scatters += s.op() == "ReduceScatter";
  EXPECT_EQ(shards_down, scatters);
}

// Each bucket's updated masters are gathered (and unpacked) right after its own
// step, so that the gather overlaps the next bucket's step; under offload the
// rounded parameters go up right after their host step.
TEST(Offload, EachBucketIsWrittenBackRightAfterItsStep) {
  for (bool offload : {false, true}) {
    SCOPED_TRACE(offload ? "offload" : "device");
    PlanFile plan = readPlanFile(compile(config(1, offload, true), offload ? "wb_host" : "wb_dev"));
    std::string order;  // S: a bucket's step, G: an AllGather of the optimizer step
    for (const planpb::Step& s : plan.plan.ranks(0).steps()) {
      if (s.op() == "AdamStep") order += 'S';
      if (s.op() == "AllGather" && s.phase() == planpb::OPTIMIZER_STEP) order += 'G';
    }
    ASSERT_GE(order.size(), 4u) << "two buckets or more";
    for (size_t i = 0; i < order.size(); i += 2) EXPECT_EQ(order.substr(i, 2), "SG") << order;
  }
}

// zero_optimization.sub_group_size: stage 3 steps the optimizer in sub-groups of
// at most that many elements per rank, so it caps the buckets (one step each).
TEST(Offload, SubGroupSizeCapsTheStageThreeSteps) {
  auto steps = [](const std::string& plan_path) {
    int n = 0;
    const PlanFile plan = readPlanFile(plan_path);
    for (const planpb::Step& s : plan.plan.ranks(0).steps()) n += s.op() == "AdamStep";
    return n;
  };
  nlohmann::json c = config(3, true, false);
  const int whole = steps(compile(c, "sub_group_whole"));
  c["zero_optimization"]["sub_group_size"] = 20;  // 40 elements over 2 ranks, of 100
  const std::string path = test::scratch("offload_sub_group.json");
  test::writeFile(path, c.dump());
  auto r = tool("dscompile", mlpModel() + " --loss cross_entropy --gpus 2 --config " + path +
                                 " -o " + test::scratch("offload_sub_group.plan"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FALSE(test::contains(r.output, "sub_group_size")) << "no 'ignored' warning";
  EXPECT_GT(steps(test::scratch("offload_sub_group.plan")), whole);
  c["zero_optimization"]["sub_group_size"] = 0;
  test::writeFile(path, c.dump());
  r = tool("dscompile", mlpModel() + " --loss cross_entropy --gpus 2 --config " + path);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(test::contains(r.output, "zero_optimization.sub_group_size: must be >= 1"))
      << r.output;
}

// Trains `plan` 5 steps at once, and 2 steps, saved, then 3 resumed: the same
// losses and weights.
void expectResumesExactly(const std::string& plan, const std::string& tag) {
  test::TrainedRun whole = train(plan, tag + "_whole");
  const std::string dir = test::freshDir("offload_" + tag);
  auto r = tool("dsrun", plan + test::writeFeedData(plan, "offload_" + tag + "_head", 32, 0.29) +
                             " --steps 2 --save " + dir);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  test::TrainedRun tail = train(plan, tag + "_tail", " --resume " + dir);
  ASSERT_EQ(tail.metrics.size(), 3u);
  const std::vector<std::string> losses = whole.values("loss");
  EXPECT_EQ(tail.values("loss"), std::vector<std::string>(losses.begin() + 2, losses.end()));
  EXPECT_TRUE(tail.exported == whole.exported);
}

TEST(Offload, CheckpointsKeepTheHostStateAndResumeExactly) {
  expectResumesExactly(compile(config(2, true, false), "ckpt"), "ckpt");
}

// With and without optimizer offload, fp32 (whose shards the host or the device
// steps in place) and fp16 (stepped through f32 masters), with accumulation.
TEST(ParamOffload, TrainsExactlyAsWithoutOffload) {
  for (int accumulation : {1, 2})
    for (bool fp16 : {false, true})
      for (bool optimizer_offload : {false, true}) {
        if (accumulation > 1 && !fp16) continue;
        const std::string tag = std::string(fp16 ? "fp16" : "fp32") + "_g" +
                                std::to_string(accumulation) + (optimizer_offload ? "_opt" : "");
        SCOPED_TRACE(tag);
        const nlohmann::json c = config(3, optimizer_offload, fp16, accumulation);
        test::TrainedRun device = train(compile(c, "param_" + tag + "_dev"), "param_" + tag + "_d");
        test::TrainedRun host =
            train(compile(withParamOffload(c), "param_" + tag + "_host"), "param_" + tag + "_h");
        ASSERT_EQ(device.metrics.size(), 5u);
        EXPECT_EQ(host.values("loss"), device.values("loss"));
        EXPECT_TRUE(host.exported == device.exported) << "the exported models differ";
      }
}

// Bytes of a plan tensor.
int64_t tensorBytes(const planpb::TensorInfo& t) {
  return static_cast<int64_t>(
      TensorType{static_cast<DType>(t.dtype()), Shape(t.shape().begin(), t.shape().end())}.bytes());
}

// The optimizer step's copies of rank 0: {up, down}.
std::pair<int, int> optimizerStepCopies(const PlanFile& plan) {
  int up = 0, down = 0;
  for (const planpb::Step& s : plan.plan.ranks(0).steps()) {
    if (s.op() != "Copy" || s.phase() != planpb::OPTIMIZER_STEP) continue;
    for (const planpb::Attr& a : s.attrs())
      if (a.name() == "to") (a.s() == "device" ? up : down) += 1;
  }
  return {up, down};
}

TEST(ParamOffload, ShardsLiveOnTheHostAndEachGatherCopiesItsOwnUp) {
  for (bool optimizer_offload : {false, true}) {
    SCOPED_TRACE(optimizer_offload ? "with optimizer offload" : "optimizer on the device");
    const nlohmann::json c = config(3, optimizer_offload, true);
    const std::string tag = optimizer_offload ? "opt" : "dev";
    const PlanFile device = readPlanFile(compile(c, "param_plan_" + tag));
    const PlanFile host = readPlanFile(compile(withParamOffload(c), "param_plan_host_" + tag));
    int64_t shard_bytes = 0;
    std::set<int> shards;
    for (int t = 0; t < host.plan.tensors_size(); ++t) {
      const planpb::TensorInfo& info = host.plan.tensors(t);
      if (static_cast<Role>(info.role()) != Role::Parameter) continue;
      // Sharded parameters go to the host; whole (persistent) ones stay.
      EXPECT_EQ(info.storage(), info.has_shard() ? planpb::HOST_PERSISTENT : planpb::PERSISTENT)
          << info.name();
      if (info.has_shard()) {
        shards.insert(t);
        shard_bytes += tensorBytes(info);
      }
    }
    ASSERT_GE(shards.size(), 2u) << "several buckets";
    EXPECT_LE(host.plan.persistent_bytes(), device.plan.persistent_bytes() - shard_bytes);
    EXPECT_EQ(host.plan.streams(host.plan.streams_size() - 1), "copy");
    // Every read of a shard is a Copy up on the copy stream, read by the next step:
    // the AllGather (forward's, and backward's where it gathers again), so the
    // shard's device copy lives only until gathered.
    const auto& steps = host.plan.ranks(0).steps();
    int ups = 0, gathers = 0;
    std::set<int> up_outputs;
    for (int i = 0; i < steps.size(); ++i) {
      const planpb::Step& s = steps[i];
      for (int in : s.inputs()) {
        if (!shards.count(in) || s.op() == "AdamStep") continue;  // fp16: the step reads masters
        EXPECT_EQ(s.op(), "Copy") << s.node();
        EXPECT_EQ(host.plan.streams(s.stream()), "copy") << s.node();
        ASSERT_LT(i + 1, steps.size());
        EXPECT_EQ(steps[i + 1].op(), "AllGather") << s.node();
        EXPECT_EQ(steps[i + 1].inputs(0), s.outputs(0)) << s.node();
        EXPECT_TRUE(up_outputs.insert(s.outputs(0)).second) << "one copy per gather";
        ++ups;
      }
      gathers += s.op() == "AllGather" && s.phase() != planpb::OPTIMIZER_STEP;
    }
    EXPECT_EQ(ups, gathers);
    // The updated shards are written on the host: under optimizer offload, none comes
    // up after its step any more; else each goes down after its step.
    const auto [device_ups, device_downs] = optimizerStepCopies(device);
    const auto [host_ups, host_downs] = optimizerStepCopies(host);
    const int moved = static_cast<int>(shards.size());
    EXPECT_EQ(host_ups, optimizer_offload ? device_ups - moved : 0);
    EXPECT_EQ(host_downs, device_downs + (optimizer_offload ? 0 : moved));
  }
}

TEST(ParamOffload, CheckpointsKeepTheHostShardsAndResumeExactly) {
  expectResumesExactly(compile(withParamOffload(config(3, true, true)), "param_ckpt"),
                       "param_ckpt");
}

// DeepSpeed reads offload_param at stage 3 only: below, it is said and ignored.
TEST(ParamOffload, BelowStageThreeWarnsAndChangesNothing) {
  const std::string path = test::scratch("param_offload_stage2.json");
  test::writeFile(path, withParamOffload(config(2, false, false)).dump());
  const std::string plan = test::scratch("param_offload_stage2.plan");
  auto r = tool("dscompile",
                mlpModel() + " --loss cross_entropy --gpus 2 --config " + path + " -o " + plan);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(test::contains(r.output,
                             "warning: zero_optimization.offload_param: offloads stage 3's "
                             "parameter shards; ignored at ZeRO stage 2"))
      << r.output;
  const PlanFile stage2 = readPlanFile(plan);
  const PlanFile without = readPlanFile(compile(config(2, false, false), "param_stage2_without"));
  EXPECT_EQ(stage2.plan.host_persistent_bytes(), 0);
  EXPECT_EQ(stage2.plan.ranks(0).steps_size(), without.plan.ranks(0).steps_size());
}

// The summary says what the plan keeps on the host, not what the config asks: a
// forward plan, or a stage-3 plan keeping every parameter whole, offloads nothing.
TEST(ParamOffload, TheSummarySaysWhatIsOnTheHost) {
  auto summary = [](const nlohmann::json& c, const std::string& tag, const std::string& loss) {
    const std::string path = test::scratch("param_summary_" + tag + ".json");
    test::writeFile(path, c.dump());
    auto r =
        tool("dscompile", mlpModel() + loss + " --gpus 2 --config " + path + " --dump summary");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return r.output;
  };
  const nlohmann::json both = withParamOffload(config(3, true, true));
  const std::string trained = summary(both, "trained", " --loss cross_entropy");
  EXPECT_TRUE(test::contains(trained, "(shards on the host)")) << trained;
  EXPECT_TRUE(test::contains(trained, "optimizer 1")) << trained;
  EXPECT_TRUE(test::contains(trained, "(on the host)")) << trained;
  EXPECT_TRUE(test::contains(trained, "host          parameter offload:")) << trained;
  nlohmann::json forward = both;
  forward.erase("optimizer");
  const std::string inference = summary(forward, "forward", "");
  EXPECT_FALSE(test::contains(inference, "on the host")) << inference;
  EXPECT_FALSE(test::contains(inference, "offloaded to CPU")) << inference;
  EXPECT_FALSE(test::contains(inference, " offload: ")) << inference;
  nlohmann::json whole = both;
  whole["zero_optimization"]["stage3_param_persistence_threshold"] = 1'000'000;
  const std::string kept = summary(whole, "whole", " --loss cross_entropy");
  EXPECT_FALSE(test::contains(kept, "shards on the host")) << kept;
  EXPECT_FALSE(test::contains(kept, "parameter offload")) << kept;
}

TEST(Offload, NeedsAPartitionedOptimizer) {
  const std::string path = test::scratch("offload_stage0.json");
  test::writeFile(path, config(0, true, false).dump());
  auto r = tool("dscompile", mlpModel() + " --loss cross_entropy --config " + path);
  test::expectOneLineError(
      r, "zero_optimization.offload_optimizer (or cpu_offload): needs ZeRO stage 1, 2 or 3");
}

}  // namespace
}  // namespace ds
