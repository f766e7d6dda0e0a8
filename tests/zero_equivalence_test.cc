// Data parallelism and ZeRO stages 0-3 against one rank: a run on N ranks with
// micro-batch M and G accumulation steps must train the same model as one rank
// taking the same global batch as G x N micro-batches of M (data-parallel
// semantics: BatchNorm statistics over each rank's micro-batch). Per-step losses
// and the final weights (dsrun --export-onnx, which consolidates shards) agree
// within 1e-6 relative. Runs go through dscompile and dsrun as a user runs them,
// with small buckets so that every stage packs, pads, re-gathers and keeps
// parameters whole below the persistence threshold.
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
  return name == "mlp" ? mlp() : name == "cnn" ? cnn() : gpt();
}

std::string writeConfig(const Model& m, int stage, int64_t accumulation, const std::string& tag) {
  nlohmann::json config = {
      {"train_micro_batch_size_per_gpu", m.micro},
      {"gradient_accumulation_steps", accumulation},
      {"optimizer",
       {{"type", "AdamW"}, {"params", {{"lr", 1e-3}, {"eps", 1e-6}, {"weight_decay", 0.01}}}}},
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

// One dataset per plan input, 64 deterministic samples (integers: labels and
// token ids in [0, 4), valid for every model here).
std::string writeData(const Model& m, const std::string& plan_path) {
  PlanFile plan = readPlanFile(plan_path);
  std::string flags;
  for (int index : plan.plan.feeds()) {
    const planpb::TensorInfo& t = plan.plan.tensors(index);
    if (t.name().rfind("ds.", 0) == 0) continue;
    Shape shape(t.shape().begin(), t.shape().end());
    shape[0] = 64;
    Tensor data(TensorType{static_cast<DType>(t.dtype()), shape});
    for (int64_t i = 0; i < data.numel(); ++i) {
      if (data.dtype() == DType::F32)
        data.setDouble(i, std::sin(0.37 * static_cast<double>(i) + 1));
      else
        data.setInt(i, (i * 7 + i / 5) % 4);
    }
    std::string path = test::scratch(m.name + "_zero_" + t.name() + ".npy");
    writeNpy(path, data);
    flags += " --feed " + t.name() + "=" + path;
  }
  return flags;
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

Trained train(const Model& m, int stage, int world, int64_t accumulation, int steps) {
  const std::string tag = m.name + "_z" + std::to_string(stage) + "_n" + std::to_string(world) +
                          "_g" + std::to_string(accumulation);
  const std::string plan = test::scratch(tag + ".plan");
  auto r = tool("dscompile", m.onnx + " --loss cross_entropy --gpus " + std::to_string(world) +
                                 " --config " + writeConfig(m, stage, accumulation, tag) +
                                 " -o " + plan);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  const std::string metrics = test::scratch(tag + ".jsonl"), out = test::scratch(tag + ".onnx");
  r = tool("dsrun", plan + writeData(m, plan) + " --steps " + std::to_string(steps) +
                        " --metrics " + metrics + " --export-onnx " + out);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  Trained t;
  std::ifstream in(metrics);
  for (std::string line; std::getline(in, line);)
    t.losses.push_back(nlohmann::json::parse(line)["loss"].get<double>());
  t.weights = floatInitializers(out);
  return t;
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
};

class ZeroEquivalence : public ::testing::TestWithParam<Case> {};

TEST_P(ZeroEquivalence, EveryStageTrainsLikeOneRankWithTheSameGlobalBatch) {
  const Case c = GetParam();
  const Model& m = modelNamed(c.model);
  const int steps = 4;
  Trained reference = train(m, 0, 1, c.accumulation * c.world, steps);
  ASSERT_EQ(reference.losses.size(), static_cast<size_t>(steps));
  // Training moves every weight far beyond the tolerance, so agreement means something.
  for (const auto& [name, initial] : floatInitializers(m.onnx)) {
    if (name == "mean" || name == "var") continue;  // BatchNorm statistics: not trained
    EXPECT_GT(relativeError(reference.weights.at(name), initial), 1e-4) << name << " did not train";
  }
  if (c.world > 1) dropBatchNormStatistics(&reference);
  for (int stage = 0; stage <= 3; ++stage) {
    SCOPED_TRACE("ZeRO-" + std::to_string(stage) + " on " + std::to_string(c.world) + " ranks");
    Trained run = train(m, stage, c.world, c.accumulation, steps);
    if (c.world > 1) dropBatchNormStatistics(&run);
    expectSameTraining(run, reference);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Models, ZeroEquivalence,
    ::testing::Values(Case{"mlp", 1, 1}, Case{"mlp", 2, 1}, Case{"mlp", 4, 1}, Case{"mlp", 8, 1},
                      Case{"mlp", 2, 2}, Case{"cnn", 1, 1}, Case{"cnn", 2, 1}, Case{"cnn", 4, 1},
                      Case{"cnn", 2, 2}, Case{"gpt", 1, 1}, Case{"gpt", 2, 1}, Case{"gpt", 4, 1},
                      Case{"gpt", 2, 2}),
    [](const auto& info) {
      return info.param.model + "_" + std::to_string(info.param.world) + "ranks_" +
             std::to_string(info.param.accumulation) + "micro";
    });

}  // namespace
}  // namespace ds
