// Plan files and the CPU executor: the file round-trips, damaged or foreign files
// and bad feeds are one-line errors, and a poisoned run (every arena tensor
// overwritten after its last use) computes the same outputs as a clean one.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "frontend/compile.h"
#include "ir/error.h"
#include "ir/plan.h"
#include "models/models.h"
#include "runtime/cpu_executor.h"
#include "runtime/npy.h"
#include "runtime/step_profile.h"
#include "tests/test_util.h"
#include "tests/training_fixtures.h"

#ifdef DS_HAVE_CUDA
#include "kernels/cuda/device.h"
#endif

namespace ds {
namespace {

bool gpuVisible() {
#ifdef DS_HAVE_CUDA
  return cuda::unavailableReason().empty();
#else
  return false;
#endif
}

using test::contains;

using test::compiledPlan;

Tensor randomTensor(TensorType type, uint64_t seed) {
  Tensor t(type);
  uint64_t x = seed * 6364136223846793005ULL + 1442695040888963407ULL;
  for (int64_t i = 0; i < t.numel(); ++i) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    double v = static_cast<double>(x >> 40) / static_cast<double>(1 << 24) - 0.5;  // [-0.5, 0.5)
    t.setDouble(i, isFloat(type.dtype) ? v : std::floor(v * 200));
  }
  return t;
}

std::string errorOf(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(PlanFile, RoundTripsAndDumps) {
  PlanFile plan = compiledPlan(buildMlp({}), "plan_mlp", 4);
  std::string path = test::tempPath("mlp.plan");
  writePlanFile(path, plan);
  PlanFile back = readPlanFile(path);
  EXPECT_EQ(back.plan.SerializeAsString(), plan.plan.SerializeAsString());
  EXPECT_EQ(back.blob, plan.blob);
  std::string dump = printPlan(back);
  EXPECT_TRUE(contains(dump, "0 [compute] Gemm(t6, t0, t1) -> t7 @layers.0")) << dump;
  EXPECT_TRUE(contains(dump, "t6 input %input f32[4,784] persistent@")) << dump;
}

TEST(PlanFile, ForeignDamagedAndOtherVersionFilesAreClearErrors) {
  PlanFile plan = compiledPlan(buildMlp({}), "plan_mlp2", 2);
  std::string path = test::tempPath("good.plan");
  writePlanFile(path, plan);
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());

  std::string foreign = test::tempPath("foreign.plan");
  test::writeFile(foreign, "PK\x03\x04 definitely a zip file");
  EXPECT_TRUE(contains(errorOf([&] { readPlanFile(foreign); }), "not a dscompile plan"));

  std::string other_version = test::tempPath("v99.plan");
  std::string v99 = bytes;
  v99[8] = 99;  // the u32 after the magic
  test::writeFile(other_version, v99);
  EXPECT_TRUE(contains(errorOf([&] { readPlanFile(other_version); }),
                       "plan format version 99 is not supported"));

  std::string truncated = test::tempPath("truncated.plan");
  test::writeFile(truncated, bytes.substr(0, bytes.size() - 1000));
  std::string msg = errorOf([&] { readPlanFile(truncated); });
  EXPECT_TRUE(contains(msg, truncated + ": damaged plan")) << msg;

  std::string garbled = test::tempPath("garbled.plan");
  std::string g = bytes;
  for (size_t i = 20; i < 60; ++i) g[i] = static_cast<char>(0xFF);
  test::writeFile(garbled, g);
  EXPECT_TRUE(contains(errorOf([&] { readPlanFile(garbled); }), "damaged plan"));
}

TEST(CpuExecutor, FeedErrorsNameTheFeedWithExpectedAndActual) {
  PlanFile plan = compiledPlan(buildMlp({}), "plan_mlp3", 2);
  CpuExecutor exec(plan);
  EXPECT_TRUE(contains(errorOf([&] { exec.run(); }), "input 'input' (f32[2,784]) was not fed"));
  EXPECT_TRUE(contains(errorOf([&] {
                         exec.setFeed("x", Tensor({DType::F32, {2, 784}}));
                       }),
                       "feed 'x': the plan has no such input (inputs: input)"));
  EXPECT_TRUE(contains(errorOf([&] {
                         exec.setFeed("input", Tensor({DType::F64, {2, 784}}));
                       }),
                       "feed 'input': expected f32[2,784], got f64[2,784]"));
  EXPECT_TRUE(contains(errorOf([&] {
                         exec.setFeed("input", Tensor({DType::F32, {3, 784}}));
                       }),
                       "expected f32[2,784], got f32[3,784]"));
}

// Constant MatMul weights are packed at the first run; overwriting one (a restore)
// repacks it, so the next run uses the new values exactly as a fresh executor does.
TEST(CpuExecutor, OverwrittenConstantWeightsAreRepacked) {
  PlanFile plan =
      compiledPlan(buildGpt({.layers = 1, .d_model = 32, .heads = 2, .vocab = 50, .seq = 8}),
                   "plan_gpt_pack", 2);
  int weight = -1;  // the first 2-D weight a MatMul reads
  for (const planpb::Step& step : plan.plan.ranks(0).steps())
    if (weight < 0 && step.op() == "MatMul" && plan.tensorType(step.inputs(1)).rank() == 2)
      weight = step.inputs(1);
  ASSERT_GE(weight, 0);
  Tensor tokens({DType::I64, {2, 8}});
  for (int64_t i = 0; i < tokens.numel(); ++i) tokens.setInt(i, (i * 7) % 50);
  CpuExecutor exec(plan);
  exec.setFeed("input_ids", tokens);
  exec.run();
  const Tensor before = exec.output(0);
  Tensor doubled = exec.readTensor(weight);
  for (int64_t i = 0; i < doubled.numel(); ++i) doubled.setDouble(i, 2 * doubled.getDouble(i));
  exec.writeTensor(weight, doubled);
  exec.setFeed("input_ids", tokens);
  exec.run();
  CpuExecutor fresh(plan);
  fresh.writeTensor(weight, doubled);
  fresh.setFeed("input_ids", tokens);
  fresh.run();
  const Tensor after = exec.output(0), expected = fresh.output(0);
  bool changed = false;
  for (int64_t i = 0; i < after.numel(); ++i) {
    ASSERT_EQ(after.getDouble(i), expected.getDouble(i)) << i;
    changed |= after.getDouble(i) != before.getDouble(i);
  }
  EXPECT_TRUE(changed) << "the new weights were not used";
}

TEST(CpuExecutor, PoisonedRunMatchesCleanRun) {
  ResNetOptions options;
  options.depth = 18;
  PlanFile plan = compiledPlan(buildResNet(options), "plan_r18", 2);
  Tensor input = randomTensor({DType::F32, {2, 3, 32, 32}}, 7);
  CpuExecutor clean(plan);
  clean.setFeed("input", input);
  clean.run();
  CpuExecutor poisoned(plan, {.rank = 0, .poison_freed = true});
  poisoned.setFeed("input", input);
  poisoned.run();
  Tensor a = clean.output(0), b = poisoned.output(0);
  ASSERT_EQ(a.type(), (TensorType{DType::F32, {2, 10}}));
  for (int64_t i = 0; i < a.numel(); ++i) {
    ASSERT_TRUE(std::isfinite(a.getDouble(i)));
    EXPECT_EQ(a.getDouble(i), b.getDouble(i)) << i;
  }
}

// The profile table sums step times per op, per run, largest first, and lists the
// slowest steps with their node names; dsrun --profile prints it from measured times,
// for forward and training plans.
TEST(StepProfile, SumsStepTimesPerOpAndRanksSteps) {
  PlanFile plan = compiledPlan(buildMlp({}), "plan_mlp_profile", 2);
  const planpb::RankPlan& rank = plan.plan.ranks(0);
  std::vector<double> seconds(static_cast<size_t>(rank.steps_size()), 0.0);
  int slowest = -1;
  for (int s = 0; s < rank.steps_size(); ++s) {
    seconds[static_cast<size_t>(s)] = rank.steps(s).op() == "Gemm" ? 0.004 : 0.001;
    if (rank.steps(s).op() == "Gemm" && slowest < 0) slowest = s;
  }
  seconds[static_cast<size_t>(slowest)] = 0.01;  // 10 ms over 2 runs: 5 ms per run
  std::string report = stepProfileReport(plan, 0, seconds, 2, 1);
  auto firstOpRow = report.substr(report.find("share\n") + 6);
  EXPECT_EQ(firstOpRow.rfind("  Gemm", 0), 0u) << report;
  EXPECT_TRUE(contains(report, "5.000  #" + std::to_string(slowest) + " Gemm @")) << report;
  EXPECT_EQ(std::count(report.begin(), report.end(), '#'), 1) << report;  // top 1 step

  std::string path = test::tempPath(test::scratchName("profile.plan"));
  writePlanFile(path, plan);
  std::string feed = test::tempPath(test::scratchName("profile_feed.npy"));
  writeNpy(feed, randomTensor({DType::F32, {2, 784}}, 1));
  auto r = test::runCommand(test::binary("dsrun") + " " + path + " --feed input=" + feed +
                            " --repeat 3 --profile");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "profile of rank 0, 3 run(s)")) << r.output;
  EXPECT_TRUE(contains(r.output, "slowest steps")) << r.output;

  // Training: per micro-step, over the micro-steps of every optimizer step.
  std::string train =
      test::compileText(test::mlpText(false), "profile_train", "--loss cross_entropy --batch 2");
  auto t = test::tool("dsrun", train + " --steps 3 --data synthetic --profile");
  EXPECT_EQ(t.exit_code, 0) << t.output;
  EXPECT_TRUE(contains(t.output, "profile of rank 0, 3 run(s)")) << t.output;
  EXPECT_TRUE(contains(t.output, "AdamStep")) << t.output;  // the optimizer steps too
}

TEST(Npy, RoundTripsEveryNumpyDtype) {
  for (DType t : {DType::F32, DType::F64, DType::F16, DType::I64, DType::I32, DType::I8, DType::U8,
                  DType::Bool}) {
    for (Shape shape : {Shape{}, Shape{5}, Shape{2, 3}}) {
      Tensor x = randomTensor({t, shape}, 3);
      std::string path = test::tempPath("x.npy");
      writeNpy(path, x);
      EXPECT_EQ(readNpy(path), x) << dtypeName(t) << shapeToString(shape);
    }
  }
  std::string bad = test::tempPath("bad.npy");
  test::writeFile(bad, "not numpy");
  EXPECT_TRUE(contains(errorOf([&] { readNpy(bad); }), bad + ": not a NumPy .npy file"));
}

TEST(Dsrun, BadInputIsOneLineAndExitCode2) {
  PlanFile plan = compiledPlan(buildMlp({}), "plan_mlp4", 2);
  std::string path = test::tempPath("cli.plan");
  writePlanFile(path, plan);
  std::string good = test::tempPath("good_feed.npy");
  writeNpy(good, randomTensor({DType::F32, {2, 784}}, 1));
  std::string wrong = test::tempPath("wrong_feed.npy");
  writeNpy(wrong, randomTensor({DType::F32, {2, 783}}, 1));
  auto dsrun = [&](const std::string& args) {
    return test::runCommand(test::binary("dsrun") + " " + args);
  };
  struct Case {
    std::string args, message;
  };
  for (const Case& c : std::vector<Case>{
           {path, "input 'input' (f32[2,784]) was not fed"},
           {path + " --feed input=" + wrong, "expected f32[2,784], got f32[2,783]"},
           {path + " --feed nope=" + good, "feed 'nope': the plan has no such input"},
           {path + " --feed input=/missing.npy", "/missing.npy: cannot open file"},
           {"/missing.plan", "/missing.plan: cannot open plan file"},
           {path + " --feed input=" + good + " --backend cuda", "--backend cuda"},
       }) {
    if (contains(c.args, "--backend cuda") && gpuVisible()) continue;  // it runs there
    auto r = dsrun(c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args << "\n" << r.output;
    EXPECT_TRUE(contains(r.output, c.message)) << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  }
  auto ok = dsrun(path + " --feed input=" + good + " --dump-outputs " + test::tempPath("outs"));
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_EQ(readNpy(test::tempPath("outs") + "/logits.npy").type(),
            (TensorType{DType::F32, {2, 10}}));
}

}  // namespace
}  // namespace ds
