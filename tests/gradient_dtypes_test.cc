// The dtypes 16-bit gradients are summed in.
// data_types.grad_accum_dtype: the dtype gradient accumulators sum in, with
// DeepSpeed's default (fp32 for bf16 without ZeRO, whose BF16_Optimizer keeps fp32
// gradients; the model's dtype otherwise). At stages 0 and 1 whole gradients
// accumulate in it; stages 2 and 3 always sum their shards in f32, so at one rank
// an fp32-accumulating stage 0 or 1 trains bit for bit as stage 2 does.
// communication_data_type "fp32": gradients are reduced over the ranks in f32, so
// two ranks train bit for bit as one rank accumulating their two micro-batches in
// f32 does.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "ir/plan.h"
#include "tests/training_fixtures.h"

namespace ds {
namespace {

const std::string& mlpModel() {
  static const std::string path = test::writeModel(test::parseOnnxText(test::mlpText(false)),
                                                   test::scratchName("grad_accum_mlp.onnx"));
  return path;
}

// 16-bit training at `stage` with `accumulation` steps (the micro-batches of the
// step on one rank); `dtype` sets data_types.grad_accum_dtype unless empty.
nlohmann::json config(const std::string& precision, int stage, const std::string& dtype = "",
                      int accumulation = 2) {
  nlohmann::json c = {
      {"train_micro_batch_size_per_gpu", 4},
      {"gradient_accumulation_steps", accumulation},
      {"optimizer", {{"type", "AdamW"}, {"params", {{"lr", 1e-2}, {"weight_decay", 0.01}}}}},
      {"zero_optimization", {{"stage", stage}}}};
  c[precision] = {{"enabled", true}};
  if (precision == "fp16") c["fp16"]["initial_scale_power"] = 8;
  if (!dtype.empty()) c["data_types"] = {{"grad_accum_dtype", dtype}};
  return c;
}

std::string compile(const nlohmann::json& c, const std::string& tag, int ranks = 1) {
  const std::string path = test::scratch("grad_accum_" + tag + ".json");
  test::writeFile(path, c.dump());
  const std::string plan = test::scratch("grad_accum_" + tag + ".plan");
  auto r = test::tool("dscompile", mlpModel() + " --loss cross_entropy --gpus " +
                                       std::to_string(ranks) + " --config " + path + " -o " + plan);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return plan;
}

// The dtypes of a plan's gradient accumulators.
std::set<DType> accumulatorDtypes(const std::string& plan_path) {
  std::set<DType> dtypes;
  const PlanFile plan = readPlanFile(plan_path);
  for (const planpb::TensorInfo& t : plan.plan.tensors())
    if (t.name().ends_with(".grad_acc")) dtypes.insert(static_cast<DType>(t.dtype()));
  return dtypes;
}

test::TrainedRun train(const std::string& plan, const std::string& tag) {
  return test::trainPlan(plan, "grad_accum_" + tag, 5, 0.31);
}

TEST(GradAccumDtype, Bf16WithoutZeroAccumulatesInF32AsDeepSpeedDoes) {
  const std::string stage0 = compile(config("bf16", 0), "bf16_z0");
  EXPECT_EQ(accumulatorDtypes(stage0), std::set<DType>{DType::F32});
  const test::TrainedRun stage2 = train(compile(config("bf16", 2), "bf16_z2"), "bf16_z2");
  const test::TrainedRun f32_sums = train(stage0, "bf16_z0");
  ASSERT_EQ(stage2.metrics.size(), 5u);
  EXPECT_EQ(f32_sums.values("loss"), stage2.values("loss"));
  EXPECT_TRUE(f32_sums.exported == stage2.exported) << "stage 0 sums as stage 2 does";
  // With ZeRO-1, DeepSpeed's default is bf16 sums, each rounded: another training.
  const std::string stage1 = compile(config("bf16", 1), "bf16_z1");
  EXPECT_EQ(accumulatorDtypes(stage1), std::set<DType>{DType::BF16});
  EXPECT_FALSE(train(stage1, "bf16_z1").exported == stage2.exported);
}

// Without ZeRO, DeepSpeed refuses bf16 sums of bf16 gradients and fp32 sums of fp16
// ones; so does dscompile, whichever way the stage is set.
TEST(GradAccumDtype, MixesDeepSpeedRefusesWithoutZeroAreOneLineErrors) {
  auto refused = [](const nlohmann::json& c, const std::string& tag, const std::string& flags) {
    const std::string path = test::scratch("grad_accum_" + tag + ".json");
    test::writeFile(path, c.dump());
    return test::tool("dscompile",
                      mlpModel() + " --loss cross_entropy --config " + path + " " + flags);
  };
  test::expectOneLineError(refused(config("bf16", 0, "bf16"), "refused_bf16", ""),
                           "data_types.grad_accum_dtype: bf16 accumulation needs ZeRO (stage 1-3)");
  test::expectOneLineError(refused(config("fp16", 1, "fp32"), "refused_fp16", "--zero 0"),
                           "data_types.grad_accum_dtype: fp32 accumulation of fp16 gradients "
                           "needs ZeRO (stage 1-3), as in DeepSpeed");
  EXPECT_EQ(refused(config("fp16", 1, "fp32"), "allowed_fp16", "").exit_code, 0);
}

TEST(GradAccumDtype, Fp32AccumulationAtStageOneTrainsAsStageTwo) {
  // DeepSpeed's default for fp16 is fp16 sums; "fp32" asks for f32 ones.
  EXPECT_EQ(accumulatorDtypes(compile(config("fp16", 1), "fp16_z1")), std::set<DType>{DType::F16});
  const std::string f32_sums = compile(config("fp16", 1, "fp32"), "fp16_z1_fp32");
  EXPECT_EQ(accumulatorDtypes(f32_sums), std::set<DType>{DType::F32});
  const test::TrainedRun stage2 = train(compile(config("fp16", 2), "fp16_z2"), "fp16_z2");
  const test::TrainedRun stage1 = train(f32_sums, "fp16_z1_fp32");
  EXPECT_EQ(stage1.values("loss"), stage2.values("loss"));
  EXPECT_TRUE(stage1.exported == stage2.exported);
}

// Under optimizer offload the accumulators live on the host: the widening runs
// there, so only 16-bit tensors cross PCIe, and training is the same as on the
// device.
TEST(GradAccumDtype, OffloadedF32AccumulatorsGetSixteenBitGradients) {
  nlohmann::json c = config("bf16", 1, "fp32");
  const std::string device = compile(c, "offload_device", 2);
  c["zero_optimization"]["offload_optimizer"] = {{"device", "cpu"}};
  const std::string host = compile(c, "offload_host", 2);
  const PlanFile plan = readPlanFile(host);
  int copies = 0;
  for (const planpb::Step& s : plan.plan.ranks(0).steps()) {
    if (s.op() != "Copy") continue;
    const planpb::TensorInfo& t = plan.plan.tensors(s.inputs(0));
    if (t.shape_size() == 0) continue;  // scalars: the norm, the learning rate
    ++copies;
    EXPECT_EQ(static_cast<DType>(t.dtype()), DType::BF16) << s.node();
  }
  EXPECT_GT(copies, 0);
  const test::TrainedRun a = train(device, "offload_device"), b = train(host, "offload_host");
  EXPECT_EQ(b.values("loss"), a.values("loss"));
  EXPECT_TRUE(b.exported == a.exported);
}

// bf16 accumulators are f32 at stage 0 and bf16 at stage 1: a checkpoint of one
// resumes on the other (accumulators are zero between steps), and the resumed
// step's loss, computed before its update, is the uninterrupted run's.
TEST(GradAccumDtype, CheckpointsResumeAcrossAccumulatorDtypes) {
  const std::string stage1 = compile(config("bf16", 1), "resume_z1");
  const std::string stage0 = compile(config("bf16", 0), "resume_z0");
  const test::TrainedRun whole = test::trainPlan(stage1, "grad_accum_resume_whole", 3, 0.31);
  const std::string dir = test::freshDir("grad_accum_resume");
  auto r =
      test::tool("dsrun", stage1 + test::writeFeedData(stage1, "grad_accum_resume_head", 32, 0.31) +
                              " --steps 2 --save " + dir);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const test::TrainedRun tail =
      test::trainPlan(stage0, "grad_accum_resume_tail", 3, 0.31, " --resume " + dir);
  ASSERT_EQ(tail.metrics.size(), 1u);
  EXPECT_EQ(tail.values("loss").front(), whole.values("loss").back());
}

// The dtypes of a plan's gradient reductions (rank 0's AllReduce and ReduceScatter
// inputs; the gradient norm's scalar AllReduce left out).
std::set<DType> reductionDtypes(const std::string& plan_path) {
  std::set<DType> dtypes;
  const PlanFile plan = readPlanFile(plan_path);
  for (const planpb::Step& s : plan.plan.ranks(0).steps()) {
    const planpb::TensorInfo& in = plan.plan.tensors(s.inputs(0));
    if ((s.op() == "ReduceScatter" || s.op() == "AllReduce") && in.shape_size() > 0)
      dtypes.insert(static_cast<DType>(in.dtype()));
  }
  return dtypes;
}

TEST(CommunicationDataType, Fp32ReductionsOnTwoRanksTrainAsOneRankAccumulatingInF32) {
  const test::TrainedRun one_rank = train(compile(config("bf16", 2), "comm_one_rank"), "comm_one");
  nlohmann::json two_ranks = config("bf16", 2, "", 1);
  EXPECT_EQ(reductionDtypes(compile(two_ranks, "comm_bf16", 2)), std::set<DType>{DType::BF16});
  two_ranks["communication_data_type"] = "fp32";
  const std::string f32_plan = compile(two_ranks, "comm_fp32", 2);
  EXPECT_EQ(reductionDtypes(f32_plan), std::set<DType>{DType::F32});
  const test::TrainedRun f32_reduced = train(f32_plan, "comm_fp32");
  ASSERT_EQ(one_rank.metrics.size(), 5u);
  EXPECT_EQ(f32_reduced.values("loss"), one_rank.values("loss"));
  EXPECT_TRUE(f32_reduced.exported == one_rank.exported);
  // Reduced in bf16, the sum of the two ranks' gradients is rounded: another training.
  const test::TrainedRun bf16_reduced =
      train(compile(config("bf16", 2, "", 1), "comm_bf16", 2), "comm_bf16");
  EXPECT_FALSE(bf16_reduced.exported == one_rank.exported);
}

// bf16 at stage 0 accumulates in f32 but, as DeepSpeed, reduces in the
// communication dtype: bf16 by default, f32 when asked.
TEST(CommunicationDataType, AccumulatedGradientsAreReducedInTheCommunicationDtype) {
  nlohmann::json c = config("bf16", 0);
  EXPECT_EQ(reductionDtypes(compile(c, "comm_z0_default", 2)), std::set<DType>{DType::BF16});
  c["communication_data_type"] = "fp32";
  EXPECT_EQ(reductionDtypes(compile(c, "comm_z0_fp32", 2)), std::set<DType>{DType::F32});
}

}  // namespace
}  // namespace ds
