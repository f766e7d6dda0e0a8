// Data parallelism and ZeRO stages 0-3 against one rank: a run on N ranks with
// micro-batch M and G accumulation steps must train the same model as one rank
// taking the same global batch as G x N micro-batches of M (data-parallel
// semantics: BatchNorm statistics over each rank's micro-batch). Per-step losses
// and the final weights (dsrun --export-onnx, which consolidates shards) agree
// within 1e-6 relative. Runs go through dscompile and dsrun as a user runs them,
// with small buckets so that every stage packs, pads, re-gathers and keeps
// parameters whole below the persistence threshold. AdamW throughout; Lion and
// Adagrad, the other optimizers DeepSpeed's ZeRO takes, on some of the models.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "frontend/onnx_import.h"
#include "ir/plan.h"
#include "runtime/npy.h"
#include "tests/training_fixtures.h"

namespace ds {
namespace {

using test::tool;

struct Model {
  std::string name;
  std::string onnx;
  int64_t micro;
  int64_t bucket;     // reduce_bucket_size and stage3_prefetch_bucket_size, elements
  int64_t threshold;  // stage3_param_persistence_threshold
};

const Model& mlp() {
  static const Model m{"mlp",
                       test::writeModel(test::parseOnnxText(test::mlpText(false)),
                                        test::scratchName("zero_mlp.onnx")),
                       4, 100, 10};
  return m;
}

// With Dropout: rank r's masks are those one rank draws for the same micro-batch.
const Model& mlpWithDropout() {
  static const Model m{"mlp_dropout",
                       test::writeModel(test::parseOnnxText(test::mlpText(true)),
                                        test::scratchName("zero_mlp_dropout.onnx")),
                       4, 100, 10};
  return m;
}

const Model& cnn() {
  static const Model m{
      "cnn",
      test::writeModel(test::parseOnnxText(test::bnCnnText()), test::scratchName("zero_cnn.onnx")),
      4, 32, 5};
  return m;
}

const Model& gpt() {
  static const Model m = [] {
    std::string path = test::scratch("zero_gpt.onnx");
    auto r = tool("dsmodel",
                  "gpt --layers 2 --d-model 16 --heads 2 --vocab 50 --seq 8 --seed 3 -o " + path);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return Model{"gpt", path, 2, 1000, 40};
  }();
  return m;
}

const Model& modelNamed(const std::string& name) {
  if (name == "mlp_dropout") return mlpWithDropout();
  return name == "mlp" ? mlp() : name == "cnn" ? cnn() : gpt();
}

// The optimizer section of `type`: AdamW, Lion, Adagrad or Lamb.
nlohmann::json optimizerConfig(const std::string& type) {
  if (type == "Lion") return {{"type", type}, {"params", {{"lr", 1e-4}, {"weight_decay", 0.1}}}};
  if (type == "Lamb") return {{"type", type}, {"params", {{"lr", 1e-3}, {"weight_decay", 0.01}}}};
  if (type == "Adagrad")
    return {{"type", type}, {"params", {{"lr", 1e-2}, {"lr_decay", 0.01}, {"weight_decay", 0.01}}}};
  return {{"type", type}, {"params", {{"lr", 1e-3}, {"eps", 1e-6}, {"weight_decay", 0.01}}}};
}

std::string writeConfig(const Model& m, int stage, int64_t accumulation, const std::string& tag,
                        const std::string& optimizer) {
  nlohmann::json config = {{"train_micro_batch_size_per_gpu", m.micro},
                           {"gradient_accumulation_steps", accumulation},
                           {"optimizer", optimizerConfig(optimizer)},
                           {"gradient_clipping", 1.0},
                           {"zero_optimization",
                            {{"stage", stage},
                             {"reduce_bucket_size", m.bucket},
                             {"stage3_prefetch_bucket_size", m.bucket},
                             {"stage3_param_persistence_threshold", m.threshold},
                             {"stage3_max_reuse_distance", 0}}}};
  std::string path = test::scratch(tag + ".json");
  test::writeFile(path, config.dump());
  return path;
}

// 64 samples per plan input (data parallelism slices them by rank).
std::string writeData(const Model& m, const std::string& plan_path) {
  return test::writeFeedData(plan_path, m.name + "_zero", 64, 0.37);
}

std::map<std::string, Tensor> floatInitializers(const std::string& onnx_path) {
  onnx::ModelProto model;
  std::ifstream file(onnx_path, std::ios::binary);
  EXPECT_TRUE(model.ParseFromIstream(&file)) << onnx_path;
  std::map<std::string, Tensor> out;
  for (const onnx::TensorProto& init : model.graph().initializer())
    if (init.data_type() == onnx::TensorProto::FLOAT) out[init.name()] = tensorFromOnnx(init, ".");
  return out;
}

struct Trained {
  std::vector<double> losses;
  std::map<std::string, Tensor> weights;
};

std::string compilePlan(const Model& m, int stage, int world, int64_t accumulation,
                        const std::string& optimizer = "AdamW") {
  const std::string tag = m.name + "_z" + std::to_string(stage) + "_n" + std::to_string(world) +
                          "_g" + std::to_string(accumulation) + "_" + optimizer;
  const std::string plan = test::scratch(tag + ".plan");
  auto r = tool("dscompile",
                m.onnx + " --loss cross_entropy --gpus " + std::to_string(world) + " --config " +
                    writeConfig(m, stage, accumulation, tag, optimizer) + " -o " + plan);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return plan;
}

// Runs dsrun on `plan` (`launcher` before it: mpirun) and reads back what it trained.
Trained run(const Model& m, const std::string& plan, const std::string& args,
            const std::string& launcher = "") {
  static int runs = 0;
  const std::string tag = m.name + "_run" + std::to_string(++runs);
  const std::string metrics = test::scratch(tag + ".jsonl"), out = test::scratch(tag + ".onnx");
  auto r = test::runCommand(launcher + test::binary("dsrun") + " " + plan + writeData(m, plan) +
                            " " + args + " --metrics " + metrics + " --export-onnx " + out);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  Trained t;
  std::ifstream in(metrics);
  for (std::string line; std::getline(in, line);)
    t.losses.push_back(nlohmann::json::parse(line)["loss"].get<double>());
  t.weights = floatInitializers(out);
  return t;
}

Trained train(const Model& m, int stage, int world, int64_t accumulation, int steps,
              const std::string& optimizer = "AdamW") {
  return run(m, compilePlan(m, stage, world, accumulation, optimizer),
             "--steps " + std::to_string(steps));
}

// max |a - b| / max |b| over a tensor.
double relativeError(const Tensor& a, const Tensor& b) {
  double diff = 0, scale = 0;
  for (int64_t i = 0; i < b.numel(); ++i) {
    diff = std::max(diff, std::abs(a.getDouble(i) - b.getDouble(i)));
    scale = std::max(scale, std::abs(b.getDouble(i)));
  }
  return scale > 0 ? diff / scale : diff;
}

void expectSameTraining(const Trained& run, const Trained& reference) {
  ASSERT_EQ(run.losses.size(), reference.losses.size());
  for (size_t i = 0; i < run.losses.size(); ++i)
    EXPECT_NEAR(run.losses[i], reference.losses[i], 1e-6 * std::abs(reference.losses[i]))
        << "step " << i + 1;
  ASSERT_EQ(run.weights.size(), reference.weights.size());
  for (const auto& [name, ref] : reference.weights) {
    auto it = run.weights.find(name);
    ASSERT_NE(it, run.weights.end()) << name;
    EXPECT_LE(relativeError(it->second, ref), 1e-6) << name;
  }
}

// BatchNorm running statistics are per rank (each sees only its micro-batches, as
// in DeepSpeed); rank 0's are exported. They are not parameters.
void dropBatchNormStatistics(Trained* t) {
  t->weights.erase("mean");
  t->weights.erase("var");
}

struct Case {
  std::string model;
  int world;
  int64_t accumulation;
  std::string optimizer = "AdamW";
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.model << " on " << c.world << " ranks, " << c.accumulation << " micro-steps, "
      << c.optimizer;
}

class ZeroEquivalence : public ::testing::TestWithParam<Case> {};

TEST_P(ZeroEquivalence, EveryStageTrainsLikeOneRankWithTheSameGlobalBatch) {
  const Case c = GetParam();
  const Model& m = modelNamed(c.model);
  const int steps = 4;
  Trained reference = train(m, 0, 1, c.accumulation * c.world, steps, c.optimizer);
  ASSERT_EQ(reference.losses.size(), static_cast<size_t>(steps));
  // Training moves every weight far beyond the tolerance, so agreement means something.
  for (const auto& [name, initial] : floatInitializers(m.onnx)) {
    if (name == "mean" || name == "var") continue;  // BatchNorm statistics: not trained
    EXPECT_GT(relativeError(reference.weights.at(name), initial), 1e-4) << name << " did not train";
  }
  if (c.world > 1) dropBatchNormStatistics(&reference);
  for (int stage = 0; stage <= 3; ++stage) {
    SCOPED_TRACE("ZeRO-" + std::to_string(stage) + " on " + std::to_string(c.world) + " ranks");
    Trained run = train(m, stage, c.world, c.accumulation, steps, c.optimizer);
    if (c.world > 1) dropBatchNormStatistics(&run);
    expectSameTraining(run, reference);
  }
}

INSTANTIATE_TEST_SUITE_P(Models, ZeroEquivalence,
                         ::testing::Values(Case{"mlp", 1, 1}, Case{"mlp", 2, 1}, Case{"mlp", 4, 1},
                                           Case{"mlp", 8, 1}, Case{"mlp", 2, 2},
                                           Case{"mlp_dropout", 2, 2}, Case{"cnn", 1, 1},
                                           Case{"cnn", 2, 1}, Case{"cnn", 4, 1}, Case{"cnn", 2, 2},
                                           Case{"gpt", 1, 1}, Case{"gpt", 2, 1}, Case{"gpt", 4, 1},
                                           Case{"gpt", 2, 2}, Case{"mlp", 2, 2, "Lion"},
                                           Case{"cnn", 2, 1, "Adagrad"}, Case{"gpt", 2, 2, "Lion"},
                                           Case{"gpt", 2, 1, "Adagrad"}),
                         [](const auto& info) {
                           return info.param.model + "_" + std::to_string(info.param.world) +
                                  "ranks_" + std::to_string(info.param.accumulation) + "micro_" +
                                  info.param.optimizer;
                         });

// Lamb runs without ZeRO (its trust ratio takes whole parameters): data parallelism
// alone, on 2 and 4 ranks, trains as one rank with the same global batch.
TEST(ZeroEquivalenceLamb, DataParallelRanksTrainLikeOneRank) {
  for (const char* name : {"mlp", "gpt"}) {
    SCOPED_TRACE(name);
    const Model& m = modelNamed(name);
    const Trained reference = train(m, 0, 1, 4, 4, "Lamb");
    ASSERT_EQ(reference.losses.size(), 4u);
    EXPECT_NE(reference.losses.front(), reference.losses.back());
    for (int world : {2, 4})
      expectSameTraining(train(m, 0, world, 4 / world, 4, "Lamb"), reference);
  }
}

// In mixed precision on one rank, Lamb steps an f32 master per parameter (not one
// per bucket, which would make one trust ratio of many parameters), and trains.
TEST(ZeroEquivalenceLamb, MixedPrecisionStepsAMasterPerParameter) {
  const std::string config = test::scratch("lamb_fp16.json");
  test::writeFile(config, R"({"train_micro_batch_size_per_gpu": 4,
                              "optimizer": {"type": "Lamb", "params": {"lr": 0.01}},
                              "fp16": {"enabled": true, "initial_scale_power": 8}})");
  const std::string plan = test::compileText(test::mlpText(false), "lamb_fp16",
                                             "--loss cross_entropy --config " + config);
  int steps = 0;
  const PlanFile compiled = readPlanFile(plan);
  for (const planpb::Step& s : compiled.plan.ranks(0).steps()) {
    if (s.op() != "LambStep") continue;
    ++steps;
    EXPECT_NE(s.node().find(".master/step"), std::string::npos) << s.node();
    EXPECT_EQ(s.node().find("zero/bucket"), std::string::npos) << s.node();
  }
  EXPECT_EQ(steps, 4);  // w1, b1, w2, b2
  test::TrainedRun run = test::trainPlan(plan, "lamb_fp16", 6, 0.3);
  ASSERT_EQ(run.metrics.size(), 6u);
  EXPECT_LT(run.metrics.back()["loss"].get<double>(), run.metrics.front()["loss"].get<double>());
}

// Resume after re-sharding: 6 steps on 4 ranks at ZeRO-3 equal 3 steps there, a
// checkpoint, and 3 more on 2 ranks at ZeRO-2 (2 accumulation steps, so the global
// batch stays 16).
TEST(ZeroCheckpoint, ResumingOnAnotherWorldSizeAndStageContinuesTheSameRun) {
  const Model& m = mlp();
  const std::string four = compilePlan(m, 3, 4, 1), two = compilePlan(m, 2, 2, 2);
  Trained whole = run(m, four, "--steps 6");
  const std::string dir = test::freshDir("zero_reshard");
  Trained head = run(m, four, "--steps 3 --save " + dir);
  EXPECT_TRUE(std::filesystem::exists(dir + "/step-00000003/tensors.rank-3.bin"))
      << "each rank saves its own shard";
  Trained tail = run(m, two, "--steps 6 --resume " + dir);
  ASSERT_EQ(whole.losses.size(), 6u);
  ASSERT_EQ(tail.losses.size(), 3u);
  for (size_t i = 0; i < 3; ++i)
    EXPECT_NEAR(tail.losses[i], whole.losses[3 + i], 1e-6 * std::abs(whole.losses[3 + i]))
        << "step " << 4 + i;
  for (const auto& [name, ref] : whole.weights)
    EXPECT_LE(relativeError(tail.weights.at(name), ref), 1e-6) << name;
}

// `mpirun -np 4 dsrun PLAN` (one process per rank) trains exactly as 4 local ranks:
// both sum in rank order.
TEST(ZeroMpi, FourMpiRanksTrainLikeFourLocalRanks) {
  if (!test::haveMpirun()) GTEST_SKIP() << "no MPI in this build or no mpirun";
  const Model& m = mlp();
  const std::string plan = compilePlan(m, 3, 4, 1);
  Trained local = run(m, plan, "--steps 4");
  Trained mpi = run(m, plan, "--steps 4", test::mpirunPrefix(4));
  EXPECT_EQ(mpi.losses, local.losses);
  for (const auto& [name, ref] : local.weights)
    EXPECT_EQ(relativeError(mpi.weights.at(name), ref), 0.0) << name;
}

// The plan states what each rank holds: ResNet-101 at ZeRO-3 on 8 ranks keeps 1/8 of
// the ZeRO-0 model states (exactly the ZeRO paper's fp32 figure when no parameter
// stays whole), and the summary names the all-gather and reduce-scatter volume.
TEST(ZeroSummary, ResNet101AtZero3On8RanksHoldsAnEighthOfTheModelStates) {
  const std::string model = test::scratch("zero_resnet101.onnx");
  ASSERT_EQ(tool("dsmodel", "resnet101 -o " + model).exit_code, 0);
  auto cost = [&](int stage, const std::string& zero_json) {
    const std::string config = test::scratch("zero_r101_" + std::to_string(stage) + ".json");
    test::writeFile(config, R"({"optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
                               "zero_optimization": )" +
                                zero_json + "}");
    const std::string plan = test::scratch("zero_r101.plan");
    auto r = tool("dscompile", model + " --loss cross_entropy --batch 2 --gpus 8 --zero " +
                                   std::to_string(stage) + " --config " + config +
                                   " --dump summary -o " + plan);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    if (stage == 3) {
      EXPECT_TRUE(test::contains(r.output, "this plan     per rank (ZeRO-3 on 8 ranks)"))
          << r.output;
      EXPECT_TRUE(test::contains(r.output, "AllGather")) << r.output;
      EXPECT_TRUE(test::contains(r.output, "ReduceScatter")) << r.output;
    }
    return readPlanFile(plan).plan.rank_cost();
  };
  const planpb::RankCost zero0 = cost(0, "{}");
  const double psi = static_cast<double>(zero0.parameter_bytes()) / 4;  // fp32 parameters
  EXPECT_EQ(zero0.gradient_bytes(), zero0.parameter_bytes());
  EXPECT_EQ(zero0.optimizer_bytes(), 2 * zero0.parameter_bytes());  // Adam's two moments
  auto states = [](const planpb::RankCost& c) {
    return static_cast<double>(c.parameter_bytes() + c.gradient_bytes() + c.optimizer_bytes());
  };
  // Every parameter sharded: the paper's 16 psi / 8 bytes, plus padding.
  const planpb::RankCost all_sharded = cost(3, R"({"stage3_param_persistence_threshold": 0})");
  EXPECT_NEAR(states(all_sharded), 16 * psi / 8, 0.01 * 16 * psi / 8);
  // DeepSpeed's defaults keep parameters of at most 1e5 elements whole: about 1/8 still.
  const planpb::RankCost defaults = cost(3, "{}");
  EXPECT_LT(states(defaults), 1.06 * states(zero0) / 8);
  bool gathers = false, scatters = false;
  for (const planpb::CommVolume& v : defaults.comm()) {
    gathers |= v.op() == "AllGather" && v.bytes_per_step() >= zero0.parameter_bytes();
    scatters |= v.op() == "ReduceScatter" && v.bytes_per_step() >= zero0.parameter_bytes();
  }
  EXPECT_TRUE(gathers && scatters) << "every parameter is gathered and every gradient reduced";
}

}  // namespace
}  // namespace ds
