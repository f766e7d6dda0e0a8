// Checkpoints and bit-exact resume, end to end through dscompile and dsrun:
// training 10 steps equals training 5, saving, resuming and training 5, byte for
// byte (an MLP with Dropout on .npy data, a CNN with BatchNorm on CIFAR-format
// data); the same seed repeats a run exactly and another seed changes it; a save
// interrupted at any point leaves the previous checkpoint readable; a checkpoint
// of another plan, a damaged one and bad --save directories are one-line errors.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "frontend/compile.h"
#include "ir/error.h"
#include "runtime/checkpoint.h"
#include "runtime/cpu_executor.h"
#include "runtime/npy.h"
#include "tests/training_fixtures.h"

namespace ds {
namespace {

namespace fs = std::filesystem;
using test::contains;

using test::compileText;
using test::expectOneLineError;
using test::freshDir;
using test::readBytes;
using test::tool;

// The MLP's plan and its data: 12 samples, cycled by 4-sample batches.
struct MlpFixture {
  std::string plan, feeds;
};

const MlpFixture& mlp() {
  static const MlpFixture f = [] {
    MlpFixture out;
    out.plan = compileText(test::mlpText(true), "ckpt_mlp", "--batch 4 --loss cross_entropy");
    std::vector<double> xs;
    std::vector<int64_t> labels;
    for (int i = 0; i < 12 * 8; ++i) xs.push_back(std::sin(0.7 * i) + 0.1 * (i % 5));
    for (int i = 0; i < 12; ++i) labels.push_back((i * 7) % 4);
    std::string x = test::scratch("ckpt_x.npy"), y = test::scratch("ckpt_label.npy");
    writeNpy(x, Tensor::fromDoubles(DType::F32, {12, 8}, xs));
    writeNpy(y, Tensor::fromInts(DType::I64, {12}, labels));
    out.feeds = " --feed x=" + x + " --feed label=" + y;
    return out;
  }();
  return f;
}

std::string tensorsOf(const std::string& dir, int step) {
  char name[32];
  std::snprintf(name, sizeof name, "/step-%08d/tensors.bin", step);
  return readBytes(dir + name);
}

// Losses of a metrics file, one per line, as written (full precision).
std::vector<std::string> losses(const std::string& metrics) {
  std::vector<std::string> out;
  std::ifstream in(metrics);
  for (std::string line; std::getline(in, line);)
    out.push_back(nlohmann::json::parse(line)["loss"].dump());
  return out;
}

TEST(Checkpoint, ResumedMlpWithDropoutEqualsUninterruptedRunBitForBit) {
  const MlpFixture& m = mlp();
  std::string whole = freshDir("ckpt_whole"), split = freshDir("ckpt_split");
  std::string whole_metrics = test::scratch("ckpt_whole.jsonl");
  std::string tail_metrics = test::scratch("ckpt_tail.jsonl");
  auto r = tool("dsrun", m.plan + m.feeds + " --seed 7 --steps 10 --save " + whole + " --metrics " +
                             whole_metrics);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = tool("dsrun", m.plan + m.feeds + " --seed 7 --steps 5 --save " + split);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = tool("dsrun", m.plan + m.feeds + " --steps 10 --resume " + split + " --save " + split +
                        " --metrics " + tail_metrics);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::string a = tensorsOf(whole, 10), b = tensorsOf(split, 10);
  ASSERT_FALSE(a.empty());
  EXPECT_TRUE(a == b) << "parameters or optimizer state differ after resuming";
  std::vector<std::string> all = losses(whole_metrics), tail = losses(tail_metrics);
  ASSERT_EQ(all.size(), 10u);
  EXPECT_EQ(std::vector<std::string>(all.begin() + 5, all.end()), tail);
  // The manifest records what the run needs beyond tensors.
  nlohmann::json manifest =
      nlohmann::json::parse(readBytes(split + "/step-00000010/checkpoint.json"));
  EXPECT_EQ(manifest["step"], 10);
  EXPECT_EQ(manifest["samples_seen"], 40);
  EXPECT_EQ(manifest["seed"], 7);
  EXPECT_EQ(manifest["config"]["train_batch_size"], 4);
  EXPECT_FALSE(fs::exists(split + "/step-00000005")) << "older checkpoints are removed";
}

// With accumulation, Dropout draws one mask per micro-step from (step, micro-step).
TEST(Checkpoint, ResumeWithGradientAccumulationIsBitExact) {
  std::string config = test::scratch("ckpt_accumulate.json");
  test::writeFile(config,
                  R"({"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 2})");
  std::string plan = compileText(test::mlpText(true), "ckpt_mlp_acc",
                                 "--config " + config + " --loss cross_entropy");
  const std::string& feeds = mlp().feeds;
  std::string whole = freshDir("ckpt_acc_whole"), split = freshDir("ckpt_acc_split");
  ASSERT_EQ(tool("dsrun", plan + feeds + " --seed 2 --steps 6 --save " + whole).exit_code, 0);
  ASSERT_EQ(tool("dsrun", plan + feeds + " --seed 2 --steps 3 --save " + split).exit_code, 0);
  auto r = tool("dsrun", plan + feeds + " --steps 6 --resume " + split + " --save " + split);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(tensorsOf(whole, 6) == tensorsOf(split, 6));
  nlohmann::json manifest =
      nlohmann::json::parse(readBytes(split + "/step-00000006/checkpoint.json"));
  EXPECT_EQ(manifest["samples_seen"], 24);  // 6 steps x 2 micro-steps x 2 samples
}

// Changing a hyperparameter between runs is allowed, and said.
TEST(Checkpoint, ResumingWithAnotherConfigWarnsNamingTheKeys) {
  const MlpFixture& m = mlp();
  std::string dir = freshDir("ckpt_config");
  ASSERT_EQ(tool("dsrun", m.plan + m.feeds + " --steps 2 --save " + dir).exit_code, 0);
  std::string config = test::scratch("ckpt_lower_lr.json");
  test::writeFile(config, R"({"train_micro_batch_size_per_gpu": 4,
                              "optimizer": {"type": "AdamW", "params": {"lr": 0.0005}}})");
  std::string plan = compileText(test::mlpText(true), "ckpt_mlp_lr",
                                 "--config " + config + " --loss cross_entropy");
  auto r = tool("dsrun", plan + m.feeds + " --steps 3 --resume " + dir);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output,
                       "warning: the plan's config differs from the checkpoint's at "
                       "/optimizer/params/lr\n"))
      << r.output;
}

// Optimizer state is its optimizer's: AdamW's exp_avg does not become Lion's.
TEST(Checkpoint, ResumingWithAnotherOptimizerIsAOneLineError) {
  const MlpFixture& m = mlp();
  std::string dir = freshDir("ckpt_optimizer");
  ASSERT_EQ(tool("dsrun", m.plan + m.feeds + " --steps 2 --save " + dir).exit_code, 0);
  std::string config = test::scratch("ckpt_lion.json");
  test::writeFile(config,
                  R"({"train_micro_batch_size_per_gpu": 4, "optimizer": {"type": "Lion"}})");
  std::string plan = compileText(test::mlpText(true), "ckpt_mlp_lion",
                                 "--config " + config + " --loss cross_entropy");
  expectOneLineError(tool("dsrun", plan + m.feeds + " --steps 3 --resume " + dir),
                     "its optimizer state is Adam's and this plan steps Lion; resume with a plan "
                     "compiled for Adam");
}

TEST(Checkpoint, SameSeedRepeatsARunAndAnotherSeedDrawsOtherDropoutMasks) {
  const MlpFixture& m = mlp();
  std::string a = freshDir("ckpt_seed_a"), b = freshDir("ckpt_seed_b"), c = freshDir("ckpt_seed_c");
  std::string ma = test::scratch("seed_a.jsonl"), mc = test::scratch("seed_c.jsonl");
  ASSERT_EQ(tool("dsrun", m.plan + m.feeds + " --seed 3 --steps 3 --save " + a + " --metrics " + ma)
                .exit_code,
            0);
  ASSERT_EQ(tool("dsrun", m.plan + m.feeds + " --seed 3 --steps 3 --save " + b).exit_code, 0);
  ASSERT_EQ(tool("dsrun", m.plan + m.feeds + " --seed 4 --steps 3 --save " + c + " --metrics " + mc)
                .exit_code,
            0);
  EXPECT_TRUE(tensorsOf(a, 3) == tensorsOf(b, 3));
  EXPECT_FALSE(tensorsOf(a, 3) == tensorsOf(c, 3));
  // .npy data does not depend on the seed, so a different first loss comes from the mask.
  EXPECT_NE(losses(ma).at(0), losses(mc).at(0));
}

// Record i of a CIFAR-format file: label i % 10, pixels a function of i.
std::string writeCifar(const std::string& name, int records) {
  std::string dir = freshDir(name);
  fs::create_directories(dir);
  std::string bytes;
  for (int i = 0; i < records; ++i) {
    bytes += static_cast<char>(i % 10);
    for (int p = 0; p < 3072; ++p) bytes += static_cast<char>((i * 37 + p * (i % 3 + 1)) % 256);
  }
  test::writeFile(dir + "/data_batch_1.bin", bytes);
  return dir;
}

TEST(Checkpoint, ResumedCnnWithBatchNormOnCifarEqualsUninterruptedRun) {
  std::string plan = compileText(test::bnCnnText(), "ckpt_cnn", "--batch 4 --loss cross_entropy");
  std::string data = " --data cifar10:" + writeCifar("ckpt_cifar", 14);  // epochs end mid-batch
  std::string whole = freshDir("ckpt_cnn_whole"), every = freshDir("ckpt_cnn_every");
  std::string split = freshDir("ckpt_cnn_split");
  ASSERT_EQ(tool("dsrun", plan + data + " --seed 5 --steps 10 --save " + whole).exit_code, 0);
  auto r = tool("dsrun", plan + data + " --seed 5 --steps 10 --save-every 4 --save " + every);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = tool("dsrun", plan + data + " --seed 5 --steps 5 --save " + split);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = tool("dsrun", plan + data + " --steps 10 --resume " + split + " --save " + split);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(tensorsOf(whole, 10) == tensorsOf(split, 10));
  EXPECT_TRUE(tensorsOf(whole, 10) == tensorsOf(every, 10)) << "saving does not perturb training";
  nlohmann::json manifest =
      nlohmann::json::parse(readBytes(split + "/step-00000010/checkpoint.json"));
  bool has_running_mean = false;
  for (const auto& t : manifest["tensors"])
    has_running_mean |= t["name"] == "mean" && t["role"] == "buffer";
  EXPECT_TRUE(has_running_mean) << manifest.dump();
  // Another seed shuffles and augments differently: the first loss changes.
  std::string m5 = test::scratch("cnn_seed5.jsonl"), m6 = test::scratch("cnn_seed6.jsonl");
  ASSERT_EQ(tool("dsrun", plan + data + " --seed 5 --steps 1 --metrics " + m5).exit_code, 0);
  ASSERT_EQ(tool("dsrun", plan + data + " --seed 6 --steps 1 --metrics " + m6).exit_code, 0);
  EXPECT_NE(losses(m5).at(0), losses(m6).at(0));
}

TEST(Checkpoint, InterruptedSavesLeaveTheLastGoodCheckpoint) {
  const MlpFixture& m = mlp();
  std::string dir = freshDir("ckpt_crash");
  ASSERT_EQ(tool("dsrun", m.plan + m.feeds + " --steps 2 --save " + dir).exit_code, 0);
  std::string good = tensorsOf(dir, 2);
  // A save that died while writing its temporary directory...
  fs::create_directories(dir + "/.step-00000004.tmp");
  test::writeFile(dir + "/.step-00000004.tmp/tensors.bin", "partial");
  // ...and one that died at the commit point: DIR/latest cannot be replaced.
  fs::create_directories(dir + "/latest.tmp");
  expectOneLineError(
      tool("dsrun", m.plan + m.feeds + " --steps 3 --resume " + dir + " --save " + dir),
      "latest.tmp");
  EXPECT_EQ(latestCheckpointStep(dir), 2);
  EXPECT_TRUE(tensorsOf(dir, 2) == good);
  fs::remove_all(dir + "/latest.tmp");
  auto r = tool("dsrun", m.plan + m.feeds + " --steps 3 --resume " + dir + " --save " + dir);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(latestCheckpointStep(dir), 3);
  EXPECT_FALSE(fs::exists(dir + "/.step-00000004.tmp")) << "leftovers are cleaned";
}

// Reads tensors normally until `fail_after` reads, then throws, as a device error
// or a kill in the middle of a save would stop it.
class FailingExecutor : public CpuExecutor {
 public:
  using CpuExecutor::CpuExecutor;
  Tensor readTensor(int index) const override {
    if (fail_after >= 0 && reads++ >= fail_after) throw makeError("simulated failure");
    return CpuExecutor::readTensor(index);
  }
  int fail_after = -1;
  mutable int reads = 0;
};

TEST(Checkpoint, SaveFailingMidWriteKeepsThePreviousCheckpoint) {
  PlanFile plan = readPlanFile(mlp().plan);
  FailingExecutor exec(plan);
  std::string dir = freshDir("ckpt_midwrite");
  auto at = [](int64_t step) {
    TrainPosition p;
    p.step = step;
    p.samples_seen = 4 * step;
    return p;
  };
  saveCheckpoint(dir, exec, at(1));
  std::string good = tensorsOf(dir, 1);
  Tensor w1 = exec.readTensor(checkpointTensors(plan).front());
  exec.writeTensor(checkpointTensors(plan).front(), Tensor(w1.type()));  // changed state
  exec.fail_after = 2;
  EXPECT_THROW(saveCheckpoint(dir, exec, at(2)), Error);
  exec.fail_after = -1;
  CheckpointInfo info = readCheckpoint(dir, plan);
  EXPECT_EQ(info.position.step, 1);
  restoreCheckpoint(info, exec);
  EXPECT_EQ(exec.readTensor(checkpointTensors(plan).front()), w1);
  EXPECT_TRUE(tensorsOf(dir, 1) == good);
}

TEST(Checkpoint, BadCheckpointsAndDirectoriesAreOneLineErrors) {
  const MlpFixture& m = mlp();
  std::string dir = freshDir("ckpt_errors");
  ASSERT_EQ(tool("dsrun", m.plan + m.feeds + " --steps 2 --save " + dir).exit_code, 0);
  // Another plan: the CNN's tensors are not the MLP's.
  std::string cnn =
      compileText(test::bnCnnText(), "ckpt_cnn_other", "--batch 4 --loss cross_entropy");
  expectOneLineError(tool("dsrun", cnn + " --data synthetic --steps 3 --resume " + dir),
                     "does not fit this plan");
  // A later run's checkpoint would be overwritten by a fresh run.
  expectOneLineError(tool("dsrun", m.plan + m.feeds + " --steps 3 --save " + dir),
                     "holds a checkpoint at step 2");
  // A conflicting seed.
  expectOneLineError(tool("dsrun", m.plan + m.feeds + " --seed 9 --steps 3 --resume " + dir),
                     "was trained with seed 0");
  // Nothing to resume from, and nowhere to save.
  expectOneLineError(tool("dsrun", m.plan + m.feeds + " --steps 3 --resume " + freshDir("none")),
                     "no such directory");
  std::string file = test::scratch("ckpt_a_file");
  test::writeFile(file, "x");
  expectOneLineError(tool("dsrun", m.plan + m.feeds + " --steps 1 --save " + file + "/ck"),
                     "cannot create");
  // A damaged tensor file.
  fs::resize_file(dir + "/step-00000002/tensors.bin", 100);
  expectOneLineError(tool("dsrun", m.plan + m.feeds + " --steps 3 --resume " + dir), "damaged");
}

}  // namespace
}  // namespace ds
