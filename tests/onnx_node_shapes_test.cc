// Imports every ONNX backend node test from Debian's libonnx-testdata whose ops
// are supported and checks that the inferred output dtypes and shapes equal those
// of the stored expected outputs. Integer and scalar inputs are bound as
// compile-time constants (they are shapes, axes, indices and ranges in these tests).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "frontend/onnx_import.h"
#include "frontend/onnx_internal.h"
#include "ir/error.h"
#include "tests/test_util.h"

namespace ds {
namespace {

namespace fs = std::filesystem;
const char* kNodeTestDir = "/usr/share/libonnx-testdata/data/node";

onnx::TensorProto readTensor(const fs::path& path) {
  onnx::TensorProto t;
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(t.ParseFromIstream(&in)) << path;
  return t;
}

bool usesOnlySupportedOps(const onnx::ModelProto& model) {
  static const auto supported = [] {
    auto ops = supportedOnnxOps();
    return std::set<std::string>(ops.begin(), ops.end());
  }();
  for (const auto& n : model.graph().node())
    if (!(n.domain().empty() || n.domain() == "ai.onnx") || !supported.count(n.op_type()))
      return false;
  return true;
}

enum class Outcome { Passed, Failed, Unsupported };

Outcome checkCase(const fs::path& dir, std::string* why) {
  onnx::ModelProto model;
  std::ifstream in(dir / "model.onnx", std::ios::binary);
  if (!model.ParseFromIstream(&in)) return *why = "unreadable model", Outcome::Failed;
  if (!usesOnlySupportedOps(model)) return Outcome::Unsupported;
  fs::path data = dir / "test_data_set_0";
  ImportOptions options;
  const auto& inputs = model.graph().input();
  for (int i = 0; i < inputs.size(); ++i) {
    fs::path file = data / ("input_" + std::to_string(i) + ".pb");
    if (!fs::exists(file)) continue;
    onnx::TensorProto proto = readTensor(file);
    if (proto.data_type() == onnx::TensorProto::FLOAT && proto.dims_size() > 0) continue;
    try {
      options.constant_inputs[inputs[i].name()] = tensorFromOnnx(proto, data.string());
    } catch (const Error&) {
      return Outcome::Unsupported;  // an element type the IR does not have
    }
  }
  std::unique_ptr<Graph> g;
  try {
    g = importOnnxModel(model, options, dir.string(), dir.filename().string());
  } catch (const Error& e) {
    *why = e.what();
    return test::contains(*why, "not supported") ? Outcome::Unsupported : Outcome::Failed;
  }
  for (size_t i = 0; i < g->outputs().size(); ++i) {
    onnx::TensorProto expected = readTensor(data / ("output_" + std::to_string(i) + ".pb"));
    auto dtype = dtypeFromOnnx(expected.data_type());
    if (!dtype) return Outcome::Unsupported;
    TensorType want{*dtype, Shape(expected.dims().begin(), expected.dims().end())};
    const TensorType& got = g->outputs()[i]->type();
    if (got != want) {
      *why =
          "output " + std::to_string(i) + " is " + got.toString() + ", expected " + want.toString();
      return Outcome::Failed;
    }
  }
  return Outcome::Passed;
}

TEST(OnnxNodeShapes, InferredTypesMatchConformanceOutputs) {
  if (!fs::exists(kNodeTestDir)) GTEST_SKIP() << kNodeTestDir << " missing (libonnx-testdata)";
  std::vector<fs::path> dirs;
  for (const auto& entry : fs::directory_iterator(kNodeTestDir)) dirs.push_back(entry.path());
  std::sort(dirs.begin(), dirs.end());
  int passed = 0, failed = 0, unsupported = 0;
  for (const fs::path& dir : dirs) {
    std::string why;
    switch (checkCase(dir, &why)) {
      case Outcome::Passed:
        ++passed;
        break;
      case Outcome::Unsupported:
        ++unsupported;
        break;
      case Outcome::Failed:
        ++failed;
        ADD_FAILURE() << dir.filename().string() << ": " << why;
        break;
    }
  }
  std::printf("ONNX node shape tests: %d ran, %d passed, %d failed, %d unsupported\n",
              passed + failed, passed, failed, unsupported);
  EXPECT_GT(passed, 300);
}

}  // namespace
}  // namespace ds
