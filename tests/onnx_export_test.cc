// dsrun --export-onnx: after training, the source model with the trained
// parameters and BatchNorm running statistics as initializers — equal to the
// values a checkpoint of the same run holds, written even when the source file is
// gone (the plan embeds it), and run by ONNX Runtime to the same outputs as dsrun.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "ir/error.h"
#include "ir/plan.h"
#include "runtime/npy.h"
#include "tests/training_fixtures.h"

namespace ds {
namespace {

namespace fs = std::filesystem;
using test::contains;

using test::readBytes;
using test::tool;

onnx::ModelProto readModel(const std::string& path) {
  onnx::ModelProto model;
  EXPECT_TRUE(model.ParseFromString(readBytes(path))) << path;
  return model;
}

// Trains `text` for 3 steps with --save and --export-onnx, the source model
// deleted after compiling; returns the exported path and the checkpoint directory.
std::pair<std::string, std::string> trainAndExport(const std::string& text, const std::string& name,
                                                   const std::string& data) {
  std::string model =
      test::writeModel(test::parseOnnxText(text), test::scratchName(name + ".onnx"));
  std::string plan = test::scratch(name + ".plan"), out = test::scratch(name + "_trained.onnx");
  std::string ckpt = test::scratch(name + "_ckpt");
  fs::remove_all(ckpt);
  auto r = tool("dscompile", model + " --batch 4 --loss cross_entropy -o " + plan);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  fs::remove(model);  // the plan must not need it
  r = tool("dsrun", plan + data + " --steps 3 --save " + ckpt + " --export-onnx " + out);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return {out, ckpt + "/step-00000003"};
}

// Every initializer named in the checkpoint equals the checkpoint's bytes.
void expectInitializersEqualCheckpoint(const onnx::ModelProto& model, const std::string& ckpt,
                                       int expected) {
  nlohmann::json manifest = nlohmann::json::parse(readBytes(ckpt + "/checkpoint.json"));
  std::string tensors = readBytes(ckpt + "/tensors.bin");
  int matched = 0;
  for (const onnx::TensorProto& init : model.graph().initializer()) {
    for (const auto& t : manifest["tensors"]) {
      if (t["name"] != init.name()) continue;
      std::string saved = tensors.substr(t["offset"].get<size_t>(), t["bytes"].get<size_t>());
      EXPECT_TRUE(init.raw_data() == saved) << init.name();
      ++matched;
    }
  }
  EXPECT_EQ(matched, expected);
}

TEST(OnnxExport, TrainedMlpHasTheTrainedWeightsAndOrtMatchesDsrun) {
  auto [exported, ckpt] = trainAndExport(test::mlpText(false), "export_mlp", " --data synthetic");
  onnx::ModelProto model = readModel(exported);
  expectInitializersEqualCheckpoint(model, ckpt, 4);
  onnx::ModelProto original = test::parseOnnxText(test::mlpText(false));
  EXPECT_NE(model.graph().initializer(0).raw_data(), original.graph().initializer(0).raw_data())
      << "the weights were trained";

  // dsrun's forward pass of the exported model against ONNX Runtime's.
  const std::string python = DS_SOURCE_DIR "/.venv/bin/python";
  if (!fs::exists(python)) GTEST_SKIP() << python << " missing (scripts/setup.sh creates it)";
  std::vector<double> xs;
  for (int i = 0; i < 4 * 8; ++i) xs.push_back(std::sin(0.37 * i));
  std::string x = test::scratch("export_x.npy"), fwd = test::scratch("export_fwd.plan");
  writeNpy(x, Tensor::fromDoubles(DType::F32, {4, 8}, xs));
  ASSERT_EQ(tool("dscompile", exported + " --batch 4 -o " + fwd).exit_code, 0);
  std::string ours = test::scratch("export_ours"), ort = test::scratch("export_ort");
  auto r = tool("dsrun", fwd + " --feed x=" + x + " --dump-outputs " + ours);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = test::runCommand(python + " " DS_SOURCE_DIR "/tests/ort_run.py " + exported + " " + ort +
                       " x=" + x);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  Tensor a = readNpy(ours + "/logits.npy"), b = readNpy(ort + "/logits.npy");
  ASSERT_EQ(a.type(), b.type());
  for (int64_t i = 0; i < a.numel(); ++i)
    EXPECT_NEAR(a.getDouble(i), b.getDouble(i), 1e-5 * std::max(1.0, std::fabs(b.getDouble(i))));
}

// A 16-bit plan trains f32 master copies of the 16-bit weights: the export holds
// those, in the model's f32 (as DeepSpeed's zero_to_fp32), not the rounded copies.
TEST(OnnxExport, SixteenBitPlansExportTheF32MasterWeights) {
  std::string model =
      test::writeModel(test::parseOnnxText(test::mlpText(false)), test::scratchName("ex16.onnx"));
  std::string config = test::scratch("ex16.json"), plan = test::scratch("ex16.plan");
  std::string out = test::scratch("ex16_trained.onnx"), ckpt = test::scratch("ex16_ckpt");
  fs::remove_all(ckpt);
  test::writeFile(config, R"({"train_micro_batch_size_per_gpu": 4, "fp16": {"enabled": true},
    "optimizer": {"type": "Adam", "params": {"lr": 0.01}}})");
  auto r = tool("dscompile", model + " --config " + config + " --loss cross_entropy -o " + plan);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = tool("dsrun", plan + " --data synthetic --steps 3 --save " + ckpt + " --export-onnx " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string dir = ckpt + "/step-00000003";
  nlohmann::json manifest = nlohmann::json::parse(readBytes(dir + "/checkpoint.json"));
  std::string tensors = readBytes(dir + "/tensors.bin");
  const onnx::ModelProto exported = readModel(out);
  // The checkpoint's f32 masters by name: whole tensors, or pieces of a flat one.
  std::map<std::string, std::string> masters;
  for (const auto& t : manifest["tensors"]) {
    const size_t offset = t["offset"].get<size_t>();
    if (!t.contains("shard")) {
      masters[t["name"]] = tensors.substr(offset, t["bytes"].get<size_t>());
      continue;
    }
    for (const auto& piece : t["shard"]["pieces"]) {
      size_t numel = 1;
      for (const auto& d : piece["shape"]) numel *= d.get<size_t>();
      masters[piece["name"]] =
          tensors.substr(offset + 4 * piece["offset"].get<size_t>(), 4 * numel);
    }
  }
  int matched = 0;
  for (const onnx::TensorProto& init : exported.graph().initializer()) {
    EXPECT_EQ(init.data_type(), onnx::TensorProto::FLOAT) << init.name();
    auto it = masters.find(init.name() + ".master");
    if (it == masters.end()) continue;
    EXPECT_TRUE(init.raw_data() == it->second) << init.name();
    ++matched;
  }
  EXPECT_EQ(matched, 4);
}

TEST(OnnxExport, BatchNormRunningStatisticsAreExported) {
  auto [exported, ckpt] = trainAndExport(test::bnCnnText(), "export_cnn", " --data synthetic");
  onnx::ModelProto model = readModel(exported);
  expectInitializersEqualCheckpoint(model, ckpt, 7);  // wc scale bias mean var wf bf
  for (const onnx::TensorProto& init : model.graph().initializer()) {
    if (init.name() != "mean") continue;
    const auto* mean = reinterpret_cast<const float*>(init.raw_data().data());
    EXPECT_NE(mean[0], 0.0f) << "the running mean was updated from 0";
  }
  const std::string python = DS_SOURCE_DIR "/.venv/bin/python";
  if (!fs::exists(python)) GTEST_SKIP() << python << " missing (scripts/setup.sh creates it)";
  std::string x = test::scratch("export_cnn_x.npy");
  writeNpy(x, Tensor(TensorType{DType::F32, {2, 3, 32, 32}}));
  auto r = test::runCommand(python + " " DS_SOURCE_DIR "/tests/ort_run.py " + exported + " " +
                            test::scratch("export_cnn_ort") + " x=" + x);
  EXPECT_EQ(r.exit_code, 0) << "ONNX Runtime loads and runs the export: " << r.output;
}

TEST(OnnxExport, PlansWithoutAnEmbeddedModelNeedTheSourceFile) {
  std::string model = test::writeModel(test::parseOnnxText(test::mlpText(false)),
                                       test::scratchName("export_gone.onnx"));
  std::string plan = test::scratch("export_gone.plan");
  ASSERT_EQ(tool("dscompile", model + " --batch 4 --loss cross_entropy -o " + plan).exit_code, 0);
  PlanFile file = readPlanFile(plan);
  file.plan.set_onnx_bytes(0);  // as compiled before plans embedded their model
  writePlanFile(plan, file);
  fs::remove(model);
  auto r = tool("dsrun", plan + " --data synthetic --steps 1 --export-onnx " +
                             test::scratch("export_gone_out.onnx"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "export_gone.onnx: cannot open file (the plan embeds no ONNX"))
      << r.output;
  EXPECT_FALSE(contains(r.output, "trained")) << "checked before training";
}

}  // namespace
}  // namespace ds
