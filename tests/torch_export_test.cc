// Tests of models/export_torch.py: the PyTorch exports (torchvision ResNet, a small
// GPT) come out as valid ONNX training graphs. Skipped where /usr/bin/python3 has no
// torch. exportTorchModel() is the entry point for importer tests built on top.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <onnx/onnx_pb.h>

#include "frontend/onnx_import.h"
#include "frontend/summary.h"
#include "ir/verifier.h"

namespace {

namespace fs = std::filesystem;

const std::string kPython = "/usr/bin/python3";
const std::string kExportScript = DS_SOURCE_DIR "/models/export_torch.py";

bool torchAvailable() {
  static const bool available =
      std::system((kPython + " -c 'import torch, torchvision' > /dev/null 2>&1").c_str()) == 0;
  return available;
}

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// Runs the export script and returns its exit code; stderr goes to `log`.
int runExport(const std::string& family, const std::string& args, const std::string& output,
              const std::string& log) {
  const std::string command = kPython + " " + kExportScript + " " + family + " " + args + " -o " +
                              output + " > " + log + " 2>&1";
  const int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// This process's export directory, named so that tests/scratch_cleanup.cc removes it
// when the test program ends.
fs::path exportDir() {
  return fs::path(::testing::TempDir()) / "dscompile_tests" /
         ("p" + std::to_string(getpid()) + "_torch_export");
}

// Exports `family` with extra script `args` into a temp dir and returns the .onnx
// path; records a test failure (and returns "") when the export fails.
std::string exportTorchModel(const std::string& family, const std::string& args) {
  static int counter = 0;
  const fs::path dir = exportDir();
  fs::create_directories(dir);
  const std::string stem = family + "_" + std::to_string(counter++);
  const std::string output = (dir / (stem + ".onnx")).string();
  const std::string log = (dir / (stem + ".log")).string();
  const int code = runExport(family, args, output, log);
  if (code != 0 || !fs::exists(output)) {
    ADD_FAILURE() << "export_torch.py " << family << " " << args << " failed (exit " << code
                  << "):\n"
                  << readFile(log);
    return "";
  }
  return output;
}

onnx::ModelProto parseModel(const std::string& path) {
  onnx::ModelProto model;
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(model.ParseFromIstream(&in)) << path << " is not a valid ONNX model";
  return model;
}

// Imports an exported model at micro-batch 4 and checks that folding removed every
// piece of dynamic-shape arithmetic.
std::unique_ptr<ds::Graph> importFolded(const std::string& path) {
  ds::ImportOptions options;
  options.batch = 4;
  auto graph = ds::importOnnxFile(path, options);
  ds::verifyGraph(*graph);
  for (const auto& node : graph->nodes()) {
    for (const char* op : {"Shape", "ConstantOfShape", "Range", "Equal", "Not"})
      EXPECT_NE(node->op(), op) << "unfolded " << node->describe();
  }
  return graph;
}

int countOps(const onnx::ModelProto& model, const std::string& op) {
  int count = 0;
  for (const auto& node : model.graph().node()) count += node.op_type() == op;
  return count;
}

void expectBatchedIo(const onnx::ModelProto& model, const std::string& input) {
  ASSERT_EQ(model.graph().input_size(), 1);
  EXPECT_EQ(model.graph().input(0).name(), input);
  EXPECT_EQ(model.graph().input(0).type().tensor_type().shape().dim(0).dim_param(), "batch");
  ASSERT_EQ(model.graph().output_size(), 1);
  EXPECT_EQ(model.graph().output(0).name(), "logits");
  EXPECT_EQ(model.graph().output(0).type().tensor_type().shape().dim(0).dim_param(), "batch");
  ASSERT_GE(model.opset_import_size(), 1);
  EXPECT_EQ(model.opset_import(0).version(), 15);
}

TEST(TorchExport, ResNet18) {
  if (!torchAvailable()) GTEST_SKIP() << kPython << " cannot import torch and torchvision";
  const std::string path = exportTorchModel("resnet18", "--classes 10 --image 32");
  ASSERT_FALSE(path.empty());
  const onnx::ModelProto model = parseModel(path);
  expectBatchedIo(model, "input");
  EXPECT_EQ(countOps(model, "Conv"), 20);
  EXPECT_EQ(countOps(model, "BatchNormalization"), 20);
  for (const auto& node : model.graph().node()) {
    if (node.op_type() == "BatchNormalization") {
      EXPECT_EQ(node.output_size(), 3);
    }
  }
  bool has_fc = false;
  for (const auto& tensor : model.graph().initializer()) {
    if (tensor.name() == "fc.weight") {
      has_fc = true;
      EXPECT_EQ(tensor.dims(0), 10);
    }
  }
  EXPECT_TRUE(has_fc);

  auto graph = importFolded(path);
  EXPECT_EQ(ds::graphStats(*graph).num_params, 11'181'642);
  EXPECT_EQ(graph->outputs()[0]->shape(), (ds::Shape{4, 10}));
}

TEST(TorchExport, SmallGpt) {
  if (!torchAvailable()) GTEST_SKIP() << kPython << " cannot import torch and torchvision";
  const std::string path =
      exportTorchModel("gpt", "--layers 2 --d-model 64 --heads 4 --vocab 100 --seq 16");
  ASSERT_FALSE(path.empty());
  const onnx::ModelProto model = parseModel(path);
  expectBatchedIo(model, "input_ids");
  EXPECT_EQ(model.graph().input(0).type().tensor_type().elem_type(), onnx::TensorProto::INT64);
  EXPECT_EQ(countOps(model, "Softmax"), 2);
  EXPECT_GT(countOps(model, "Shape"), 0);  // view() on x.size() leaves dynamic-shape chains

  auto graph = importFolded(path);
  EXPECT_EQ(graph->outputs()[0]->shape(), (ds::Shape{4, 16, 100}));
}

TEST(TorchExport, BadArgumentsExitWithCode2) {
  if (!fs::exists(kPython)) GTEST_SKIP() << "no " << kPython;  // usage errors need no torch
  const fs::path dir = exportDir();
  fs::create_directories(dir);
  const std::string log = (dir / "torch_export_bad.log").string();
  EXPECT_EQ(runExport("vgg16", "", (dir / "x.onnx").string(), log), 2);
  EXPECT_NE(readFile(log).find("usage"), std::string::npos);
  EXPECT_EQ(runExport("gpt", "--d-model 10 --heads 3", (dir / "x.onnx").string(), log), 2);
}

}  // namespace
