// Tests of ds_models and the dsmodel tool: parameter counts against torchvision
// and GPT-2, training-form BatchNormalization, deterministic PyTorch-style
// initialisation, external data for big models and the command-line errors.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "models/models.h"

namespace {

namespace fs = std::filesystem;

// A fresh directory under the gtest temp dir for one test, named so that
// tests/scratch_cleanup.cc removes it when the test program ends.
std::string scratchDir(const std::string& name) {
  const fs::path dir = fs::path(::testing::TempDir()) / "dscompile_tests" /
                       ("p" + std::to_string(getpid()) + "_dsmodel") / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

struct CommandResult {
  int exit_code;
  std::string stderr_text;
};

// Runs a shell command, capturing stderr; stdout is discarded.
CommandResult runCommand(const std::string& command, const std::string& dir) {
  const std::string err = dir + "/stderr.txt";
  const int status = std::system((command + " > /dev/null 2> " + err).c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, readFile(err)};
}

const std::string kDsModel = DS_BINARY_DIR "/dsmodel";

bool pythonOnnxAvailable() {
  return std::system("/usr/bin/python3 -c 'import onnx' > /dev/null 2>&1") == 0;
}

const onnx::TensorProto& initializer(const onnx::ModelProto& model, const std::string& name) {
  for (const auto& tensor : model.graph().initializer()) {
    if (tensor.name() == name) return tensor;
  }
  throw std::runtime_error("no initializer " + name);
}

// The tensor of the Constant node whose output is `name`.
const onnx::TensorProto& constantNode(const onnx::ModelProto& model, const std::string& name) {
  for (const auto& node : model.graph().node()) {
    if (node.op_type() == "Constant" && node.output(0) == name) return node.attribute(0).t();
  }
  throw std::runtime_error("no Constant node " + name);
}

std::vector<float> floats(const onnx::TensorProto& tensor) {
  std::vector<float> values(tensor.raw_data().size() / sizeof(float));
  std::memcpy(values.data(), tensor.raw_data().data(), tensor.raw_data().size());
  return values;
}

double standardDeviation(const std::vector<float>& values) {
  double sum = 0, sum_sq = 0;
  for (float v : values) sum += v;
  const double mean = sum / values.size();
  for (float v : values) sum_sq += (v - mean) * (v - mean);
  return std::sqrt(sum_sq / values.size());
}

std::map<std::string, int> opCounts(const onnx::ModelProto& model) {
  std::map<std::string, int> counts;
  for (const auto& node : model.graph().node()) ++counts[node.op_type()];
  return counts;
}

const onnx::AttributeProto* findAttr(const onnx::NodeProto& node, const std::string& name) {
  for (const auto& attr : node.attribute()) {
    if (attr.name() == name) return &attr;
  }
  return nullptr;
}

ds::ResNetOptions resnet(int depth) {
  ds::ResNetOptions options;
  options.depth = depth;
  options.classes = 10;
  return options;
}

TEST(DsModelParams, ResNetsMatchTorchvision) {
  EXPECT_EQ(ds::countParameters(ds::buildResNet(resnet(18))), 11'181'642);
  EXPECT_EQ(ds::countParameters(ds::buildResNet(resnet(50))), 23'528'522);
  EXPECT_EQ(ds::countParameters(ds::buildResNet(resnet(101))), 42'520'650);
}

TEST(DsModelParams, Gpt2SmallHas124M) {
  const onnx::ModelProto model = ds::buildGpt(ds::gptPreset("small"));
  EXPECT_EQ(ds::countParameters(model), 124'439'808);
  const auto ops = opCounts(model);
  EXPECT_EQ(ops.at("LayerNormalization"), 2 * 12 + 1);
  EXPECT_EQ(ops.at("Softmax"), 12);
  EXPECT_EQ(ops.at("Erf"), 12);
}

TEST(DsModelParams, MlpLayers) {
  const onnx::ModelProto model = ds::buildMlp({});
  EXPECT_EQ(ds::countParameters(model), 784 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10);
  EXPECT_EQ(opCounts(model).at("Gemm"), 3);
  EXPECT_EQ(initializer(model, "layers.4.weight").dims(0), 10);
}

TEST(DsModelGraph, ModelHeaderAndSymbolicBatch) {
  const onnx::ModelProto model = ds::buildResNet(resnet(18));
  EXPECT_EQ(model.ir_version(), 8);
  ASSERT_EQ(model.opset_import_size(), 1);
  EXPECT_EQ(model.opset_import(0).domain(), "");
  EXPECT_EQ(model.opset_import(0).version(), 17);
  ASSERT_EQ(model.graph().input_size(), 1);
  const auto& input = model.graph().input(0);
  EXPECT_EQ(input.name(), "input");
  EXPECT_EQ(input.type().tensor_type().shape().dim(0).dim_param(), "batch");
  EXPECT_EQ(input.type().tensor_type().shape().dim(3).dim_value(), 32);
  ASSERT_EQ(model.graph().output_size(), 1);
  EXPECT_EQ(model.graph().output(0).name(), "logits");
  EXPECT_EQ(model.graph().output(0).type().tensor_type().shape().dim(0).dim_param(), "batch");
}

TEST(DsModelGraph, BatchNormInTrainingForm) {
  const onnx::ModelProto model = ds::buildResNet(resnet(50));
  int batch_norms = 0;
  for (const auto& node : model.graph().node()) {
    if (node.op_type() == "Conv") {
      EXPECT_EQ(node.input_size(), 2) << node.name();
    }
    if (node.op_type() != "BatchNormalization") continue;
    ++batch_norms;
    ASSERT_EQ(node.output_size(), 3) << node.name();
    ASSERT_NE(findAttr(node, "training_mode"), nullptr);
    EXPECT_EQ(findAttr(node, "training_mode")->i(), 1);
    EXPECT_FLOAT_EQ(findAttr(node, "momentum")->f(), 0.9f);
    EXPECT_FLOAT_EQ(findAttr(node, "epsilon")->f(), 1e-5f);
    for (const auto& output : model.graph().output()) EXPECT_NE(output.name(), node.output(1));
  }
  EXPECT_EQ(batch_norms, 53);  // stem + 16 blocks x 3 + 4 downsamples
  EXPECT_EQ(initializer(model, "layer1.0.downsample.0.weight").dims(0), 256);
  EXPECT_EQ(floats(initializer(model, "layer2.1.bn2.running_var")).front(), 1.0f);
}

TEST(DsModelGraph, CifarStemHasNoMaxPool) {
  ds::ResNetOptions options = resnet(18);
  options.stem = ds::ResNetStem::kCifar;
  const onnx::ModelProto model = ds::buildResNet(options);
  EXPECT_EQ(opCounts(model).count("MaxPool"), 0u);
  EXPECT_EQ(initializer(model, "conv1.weight").dims(3), 3);
  EXPECT_EQ(ds::countParameters(model), 11'181'642 - 64 * 3 * (49 - 9));
}

TEST(DsModelGraph, GptConstantsKeepBatchSymbolic) {
  ds::GptOptions options{.layers = 2, .d_model = 64, .heads = 4, .vocab = 100, .seq = 16};
  const onnx::ModelProto model = ds::buildGpt(options);
  EXPECT_EQ(model.graph().input(0).type().tensor_type().elem_type(), onnx::TensorProto::INT64);
  const auto& logits = model.graph().output(0).type().tensor_type().shape();
  EXPECT_EQ(logits.dim(0).dim_param(), "batch");
  EXPECT_EQ(logits.dim(2).dim_value(), 100);
  const std::string& shape = constantNode(model, "attn.heads_shape").raw_data();
  std::vector<int64_t> dims(4);
  std::memcpy(dims.data(), shape.data(), shape.size());
  EXPECT_EQ(dims, (std::vector<int64_t>{0, 16, 4, 16}));
  const std::vector<float> mask = floats(constantNode(model, "attn.causal_mask"));
  EXPECT_EQ(mask[0 * 16 + 0], 0.0f);
  EXPECT_EQ(mask[5 * 16 + 3], 0.0f);
  EXPECT_LT(mask[3 * 16 + 5], -1e8f);
  // Helper tensors are Constant nodes, never initializers (which import as trainable).
  for (const auto& init : model.graph().initializer())
    EXPECT_TRUE(ds::isParameter(init)) << init.name();
  EXPECT_TRUE(ds::isParameter(initializer(model, "wte.weight")));
}

TEST(DsModelInit, DeterministicPerSeed) {
  ds::ResNetOptions options = resnet(18);
  const std::string first = ds::buildResNet(options).SerializeAsString();
  EXPECT_EQ(first, ds::buildResNet(options).SerializeAsString());
  options.seed = 1;
  EXPECT_NE(first, ds::buildResNet(options).SerializeAsString());
}

TEST(DsModelInit, ResNetFollowsTorchvision) {
  const onnx::ModelProto model = ds::buildResNet(resnet(50));
  // layer4.0.conv2: 512x512x3x3, kaiming_normal fan_out => std sqrt(2 / (512 * 9)).
  const std::vector<float> conv = floats(initializer(model, "layer4.0.conv2.weight"));
  EXPECT_NEAR(standardDeviation(conv), std::sqrt(2.0 / (512 * 9)), 0.05 * std::sqrt(2.0 / 4608));
  const double bound = 1.0 / std::sqrt(2048.0);  // fc: nn.Linear default, fan_in 2048
  double max_abs = 0;
  for (float v : floats(initializer(model, "fc.weight")))
    max_abs = std::max<double>(max_abs, std::fabs(v));
  EXPECT_LE(max_abs, bound);
  EXPECT_GT(max_abs, 0.9 * bound);
  for (float v : floats(initializer(model, "bn1.weight"))) ASSERT_EQ(v, 1.0f);
  for (float v : floats(initializer(model, "bn1.bias"))) ASSERT_EQ(v, 0.0f);
}

TEST(DsModelInit, GptFollowsGpt2) {
  ds::GptOptions options{.layers = 4, .d_model = 256, .heads = 4, .vocab = 1000, .seq = 32};
  const onnx::ModelProto model = ds::buildGpt(options);
  const double fc_std = standardDeviation(floats(initializer(model, "h.1.mlp.c_fc.weight")));
  EXPECT_NEAR(fc_std, 0.02, 0.02 * 0.05);
  const double proj_std = standardDeviation(floats(initializer(model, "h.3.mlp.c_proj.weight")));
  EXPECT_NEAR(proj_std, 0.02 / std::sqrt(8.0), 0.02 / std::sqrt(8.0) * 0.05);
  for (float v : floats(initializer(model, "h.0.attn.c_attn.bias"))) ASSERT_EQ(v, 0.0f);
  for (float v : floats(initializer(model, "ln_f.weight"))) ASSERT_EQ(v, 1.0f);
}

TEST(DsModelSave, ExternalDataAboveThreshold) {
  const std::string dir = scratchDir("external");
  const std::string path = dir + "/mlp.onnx";
  const onnx::ModelProto model = ds::buildMlp({});
  ds::saveModel(model, path, 1024);
  ASSERT_TRUE(fs::exists(path + ".data"));
  EXPECT_LT(fs::file_size(path), 64u * 1024);
  const std::string data = readFile(path + ".data");
  const onnx::ModelProto loaded = ds::loadModel(path);
  ASSERT_EQ(loaded.graph().initializer_size(), model.graph().initializer_size());
  for (int i = 0; i < loaded.graph().initializer_size(); ++i) {
    const auto& tensor = loaded.graph().initializer(i);
    ASSERT_EQ(tensor.data_location(), onnx::TensorProto::EXTERNAL) << tensor.name();
    EXPECT_FALSE(tensor.has_raw_data());
    std::map<std::string, std::string> entries;
    for (const auto& entry : tensor.external_data()) entries[entry.key()] = entry.value();
    EXPECT_EQ(entries["location"], "mlp.onnx.data");
    const uint64_t offset = std::stoull(entries["offset"]);
    const uint64_t length = std::stoull(entries["length"]);
    EXPECT_EQ(offset % 4096, 0u);
    ASSERT_LE(offset + length, data.size());
    EXPECT_EQ(data.substr(offset, length), model.graph().initializer(i).raw_data());
  }
  if (pythonOnnxAvailable()) {
    const std::string check = "/usr/bin/python3 -c \"import onnx; onnx.checker.check_model('" +
                              path + "'); onnx.load('" + path + "')\"";
    const CommandResult result = runCommand(check, dir);
    EXPECT_EQ(result.exit_code, 0) << result.stderr_text;
  }
}

TEST(DsModelSave, SmallModelStaysInline) {
  const std::string dir = scratchDir("inline");
  const std::string path = dir + "/mlp.onnx";
  ds::saveModel(ds::buildMlp({}), path);
  EXPECT_FALSE(fs::exists(path + ".data"));
  const onnx::ModelProto loaded = ds::loadModel(path);
  EXPECT_EQ(ds::countParameters(loaded), 269'322);
  EXPECT_TRUE(loaded.graph().initializer(0).has_raw_data());
}

TEST(DsModelSave, UnwritablePathThrows) {
  EXPECT_THROW(ds::saveModel(ds::buildMlp({}), "/nonexistent-dir/mlp.onnx"), std::exception);
}

TEST(DsModelTool, WritesByteIdenticalModels) {
  const std::string dir = scratchDir("tool");
  const std::string args = " resnet18 --stem cifar --image 32 --classes 10 -o ";
  ASSERT_EQ(runCommand(kDsModel + args + dir + "/a.onnx", dir).exit_code, 0);
  ASSERT_EQ(runCommand(kDsModel + args + dir + "/b.onnx --seed 0", dir).exit_code, 0);
  ASSERT_EQ(runCommand(kDsModel + args + dir + "/c.onnx --seed 7", dir).exit_code, 0);
  const std::string a = readFile(dir + "/a.onnx");
  EXPECT_EQ(a, readFile(dir + "/b.onnx"));
  EXPECT_NE(a, readFile(dir + "/c.onnx"));
  EXPECT_EQ(ds::countParameters(ds::loadModel(dir + "/a.onnx")), 11'173'962);
}

TEST(DsModelTool, ExternalDataThresholdFlag) {
  const std::string dir = scratchDir("tool_external");
  const std::string path = dir + "/gpt.onnx";
  const CommandResult result =
      runCommand(kDsModel + " gpt --layers 1 --d-model 32 --heads 2 --vocab 50 --seq 8 " +
                     "--external-data-threshold 1024 -o " + path,
                 dir);
  ASSERT_EQ(result.exit_code, 0) << result.stderr_text;
  EXPECT_TRUE(fs::exists(path + ".data"));
  const onnx::ModelProto model = ds::loadModel(path);
  for (const auto& tensor : model.graph().initializer()) {
    EXPECT_EQ(tensor.data_location(), onnx::TensorProto::EXTERNAL) << tensor.name();
  }
}

TEST(DsModelTool, BadArgumentsExitWithCode2) {
  const std::string dir = scratchDir("errors");
  const std::vector<std::string> bad = {
      "",
      " resnet18",
      " resnet19 -o x.onnx",
      " resnet18 --stem vgg -o " + dir + "/x.onnx",
      " gpt --heads 5 -o " + dir + "/x.onnx",
      " mlp --hidden 4,x -o " + dir + "/x.onnx",
      " mlp -o /nonexistent-dir/x.onnx",
  };
  for (const std::string& args : bad) {
    const CommandResult result = runCommand(kDsModel + args, dir);
    EXPECT_EQ(result.exit_code, 2) << args;
    EXPECT_EQ(std::count(result.stderr_text.begin(), result.stderr_text.end(), '\n'), 1)
        << args << ": " << result.stderr_text;
  }
  EXPECT_FALSE(fs::exists(dir + "/x.onnx"));
}

TEST(DsModelTool, HelpDocumentsEveryFlag) {
  const std::string dir = scratchDir("help");
  const std::map<std::string, std::vector<std::string>> flags = {
      {"mlp", {"--in", "--hidden", "--classes"}},
      {"resnet101", {"--stem", "--classes", "--image"}},
      {"gpt", {"--preset", "--layers", "--d-model", "--heads", "--vocab", "--seq"}},
  };
  for (const auto& [command, names] : flags) {
    const std::string out = dir + "/help.txt";
    ASSERT_EQ(std::system((kDsModel + " " + command + " --help > " + out).c_str()), 0);
    const std::string help = readFile(out);
    for (const std::string& name : names) EXPECT_NE(help.find(name), std::string::npos) << name;
    for (const char* common : {"--output", "--seed", "--external-data-threshold"}) {
      EXPECT_NE(help.find(common), std::string::npos) << command << " " << common;
    }
  }
}

}  // namespace
