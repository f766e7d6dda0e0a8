// Runs every ONNX backend node test whose ops are supported through the whole CPU
// path (import, memory plan, lowering, CpuExecutor with freed tensors poisoned) and
// compares each output with the test's stored expected output: the ONNX test data
// are the independent oracle for the CPU kernels. Two sources: Debian's
// libonnx-testdata and the (newer) node test cases of the project venv's onnx
// package (tests/onnx_node_data.py finds or writes their data).
//
// Inputs are fed wherever the importer allows, so the kernels (not the host folder)
// compute the outputs; when the importer needs an input as a compile-time constant
// (shapes, axes, pads ...), the case is imported again with the binding of
// onnx_node_shapes_test.cc: non-f32 and scalar inputs become constants.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>

#include "frontend/onnx_import.h"
#include "frontend/onnx_internal.h"
#include "ir/error.h"
#include "passes/lower_to_plan.h"
#include "passes/memory_plan.h"
#include "runtime/cpu_executor.h"
#include "tests/test_util.h"

namespace ds {
namespace {

namespace fs = std::filesystem;

enum class Outcome { Passed, Failed, Unsupported };
enum class Binding { FeedAll, ShapesTest };

struct Case {
  fs::path dir;
  onnx::ModelProto model;
  std::string why;  // why it failed (first mismatch or error) or is unsupported
};

bool readTensor(const fs::path& path, onnx::TensorProto* t) {
  std::ifstream in(path, std::ios::binary);
  return in && t->ParseFromIstream(&in);
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

// Tolerances of the comparison by dtype: (rtol, atol); integers and bools are exact.
std::pair<double, double> tolerance(DType t) {
  switch (t) {
    case DType::F64:
      return {1e-7, 1e-9};
    case DType::F32:
      return {1e-4, 1e-5};
    case DType::F16:
      return {1e-3, 1e-3};
    case DType::BF16:
      return {1e-2, 1e-2};
    default:
      return {0, 0};
  }
}

// Empty when `got` equals `want` within tolerance; else the first mismatch.
std::string compareTensors(const Tensor& got, const Tensor& want) {
  if (got.type() != want.type())
    return "type " + got.type().toString() + ", expected " + want.type().toString();
  auto [rtol, atol] = tolerance(want.dtype());
  bool exact = !isFloat(want.dtype());
  for (int64_t i = 0; i < want.numel(); ++i) {
    bool ok;
    std::string g, w;
    if (exact) {
      int64_t a = got.getInt(i), b = want.getInt(i);
      ok = a == b;
      g = std::to_string(a), w = std::to_string(b);
    } else {
      double a = got.getDouble(i), b = want.getDouble(i);
      if (std::isnan(b) || std::isnan(a))
        ok = std::isnan(a) && std::isnan(b);
      else if (std::isinf(b) || std::isinf(a))
        ok = a == b;
      else
        ok = std::fabs(a - b) <= atol + rtol * std::fabs(b);
      std::ostringstream gs, ws;
      gs.precision(9), ws.precision(9);
      gs << a, ws << b;
      g = gs.str(), w = ws.str();
    }
    if (!ok) return "index " + std::to_string(i) + ": got " + g + ", want " + w;
  }
  return "";
}

Outcome unsupported(Case& c, std::string why) {
  return c.why = std::move(why), Outcome::Unsupported;
}
Outcome failed(Case& c, std::string why) {
  return c.why = std::move(why), Outcome::Failed;
}

// One test_data_set_*: inputs split into feeds and import-time constants, and the
// expected outputs.
struct DataSet {
  ImportOptions options;
  std::map<std::string, Tensor> feeds;
  std::vector<Tensor> expected;
};

Outcome loadDataSet(Case& c, const fs::path& data, Binding binding, DataSet* d) {
  const auto& graph = c.model.graph();
  for (int i = 0; i < graph.input_size(); ++i) {
    fs::path file = data / ("input_" + std::to_string(i) + ".pb");
    if (!fs::exists(file)) continue;  // an omitted optional input
    if (!graph.input(i).type().has_tensor_type()) return unsupported(c, "non-tensor input");
    onnx::TensorProto proto;
    if (!readTensor(file, &proto)) return failed(c, "unreadable " + file.string());
    Tensor t;
    try {
      t = tensorFromOnnx(proto, data.string());
    } catch (const Error& e) {
      return unsupported(c, e.what());  // an element type the IR does not have
    }
    bool fed = proto.dims_size() > 0 &&
               (binding == Binding::FeedAll || proto.data_type() == onnx::TensorProto::FLOAT);
    (fed ? d->feeds : d->options.constant_inputs)[graph.input(i).name()] = std::move(t);
  }
  for (int i = 0; i < graph.output_size(); ++i) {
    fs::path file = data / ("output_" + std::to_string(i) + ".pb");
    if (!graph.output(i).type().has_tensor_type()) return unsupported(c, "non-tensor output");
    onnx::TensorProto proto;
    if (!readTensor(file, &proto)) return failed(c, "unreadable " + file.string());
    try {
      d->expected.push_back(tensorFromOnnx(proto, data.string()));
    } catch (const Error& e) {
      return unsupported(c, e.what());
    }
  }
  return Outcome::Passed;
}

// Dropout in training mode with a ratio in (0, 1) draws a random mask, so its stored
// outputs cannot be matched; returns the ratio of such a single-Dropout case.
std::optional<double> randomDropoutRatio(const onnx::ModelProto& model, const DataSet& d) {
  const auto& graph = model.graph();
  if (graph.node_size() != 1 || graph.node(0).op_type() != "Dropout") return std::nullopt;
  const auto& n = graph.node(0);
  auto constant = [&](int i) -> const Tensor* {
    if (n.input_size() <= i || n.input(i).empty()) return nullptr;
    auto it = d.options.constant_inputs.find(n.input(i));
    return it == d.options.constant_inputs.end() ? nullptr : &it->second;
  };
  const Tensor* ratio = constant(1);
  const Tensor* training = constant(2);
  double r = ratio ? ratio->getDouble(0) : 0.5;
  if (!training || training->getInt(0) == 0 || r <= 0 || r >= 1) return std::nullopt;
  return r;
}

// Checks training-mode Dropout by its definition: y = mask ? x / (1 - ratio) : 0,
// with the mask output (when present) saying which elements were kept, and both
// kept and dropped elements present in a tensor of 20 or more elements.
std::string checkRandomDropout(const CpuExecutor& exec, const Tensor& x, double ratio) {
  Tensor y = exec.output(0);
  if (y.type() != x.type()) return "y is " + y.type().toString() + ", x " + x.type().toString();
  std::optional<Tensor> mask;
  if (exec.numOutputs() > 1) mask = exec.output(1);
  auto [rtol, atol] = tolerance(x.dtype());
  int64_t kept = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    double scaled = x.getDouble(i) / (1 - ratio), got = y.getDouble(i);
    bool is_kept = mask ? mask->getInt(i) != 0 : got != 0;
    double want = is_kept ? scaled : 0;
    kept += is_kept;
    if (!(std::fabs(got - want) <= atol + rtol * std::fabs(want)))
      return "index " + std::to_string(i) + ": y " + std::to_string(got) + ", x/(1-ratio) " +
             std::to_string(scaled) + ", mask " + (is_kept ? "1" : "0");
  }
  if (x.numel() >= 20 && (kept == 0 || kept == x.numel()))
    return "kept " + std::to_string(kept) + " of " + std::to_string(x.numel()) + " at ratio " +
           std::to_string(ratio);
  return "";
}

// Kernel refusals of an element type count as unsupported, like import refusals.
bool isUnsupportedError(const std::string& why) {
  return test::contains(why, "no CPU kernel") ||
         (test::contains(why, "dtype") &&
          (test::contains(why, "not supported") || test::contains(why, "kernel supports")));
}

// Runs one test_data_set_* of a case with the given input binding.
Outcome runDataSet(Case& c, const fs::path& data, Binding binding) {
  DataSet d;
  if (Outcome o = loadDataSet(c, data, binding, &d); o != Outcome::Passed) return o;
  std::unique_ptr<Graph> g;
  try {
    g = importOnnxModel(c.model, d.options, c.dir.string(), c.dir.filename().string());
  } catch (const Error& e) {
    std::string why = e.what();
    if (binding == Binding::FeedAll && test::contains(why, "must be a compile-time constant"))
      return runDataSet(c, data, Binding::ShapesTest);
    return test::contains(why, "not supported") ? unsupported(c, why) : failed(c, why);
  }
  try {
    MemoryPlan memory = planMemory(*g);
    checkMemoryPlan(*g, memory);
    LowerOptions lower;
    lower.model = c.dir.filename().string();
    PlanFile plan = lowerToPlan(*g, memory, lower);
    ExecutorOptions run_options;
    run_options.poison_freed = true;
    CpuExecutor exec(plan, run_options);
    for (const std::string& name : exec.feedNames()) {
      auto it = d.feeds.find(name);
      if (it == d.feeds.end()) return failed(c, "plan feed '" + name + "' has no data");
      exec.setFeed(name, it->second);
    }
    exec.run();
    std::string where = data.filename().string() + " ";
    if (auto ratio = randomDropoutRatio(c.model, d)) {
      std::string diff =
          checkRandomDropout(exec, d.feeds.at(c.model.graph().input(0).name()), *ratio);
      return diff.empty() ? Outcome::Passed : failed(c, where + "training Dropout " + diff);
    }
    if (exec.numOutputs() != d.expected.size())
      return failed(c, where + std::to_string(exec.numOutputs()) + " outputs, expected " +
                           std::to_string(d.expected.size()));
    for (size_t i = 0; i < d.expected.size(); ++i) {
      std::string diff = compareTensors(exec.output(i), d.expected[i]);
      if (!diff.empty())
        return failed(
            c, where + "output " + std::to_string(i) + " '" + exec.outputName(i) + "' " + diff);
    }
  } catch (const Error& e) {
    return isUnsupportedError(e.what()) ? unsupported(c, e.what()) : failed(c, e.what());
  }
  return Outcome::Passed;
}

Outcome runCase(Case& c) {
  std::ifstream in(c.dir / "model.onnx", std::ios::binary);
  if (!c.model.ParseFromIstream(&in)) return failed(c, "unreadable model");
  if (!usesOnlySupportedOps(c.model)) return unsupported(c, "an op the importer lacks");
  std::vector<fs::path> sets;
  for (const auto& e : fs::directory_iterator(c.dir))
    if (e.is_directory() && e.path().filename().string().starts_with("test_data_set_"))
      sets.push_back(e.path());
  std::sort(sets.begin(), sets.end());
  if (sets.empty()) return failed(c, "no test_data_set_*");
  for (const fs::path& data : sets) {
    Outcome o = runDataSet(c, data, Binding::FeedAll);
    if (o != Outcome::Passed) return o;
  }
  return Outcome::Passed;
}

struct Counts {
  int passed = 0, failed = 0, unsupported = 0;
};

Counts runSource(const std::string& source, const fs::path& root) {
  std::vector<fs::path> dirs;
  for (const auto& entry : fs::directory_iterator(root))
    if (entry.is_directory()) dirs.push_back(entry.path());
  std::sort(dirs.begin(), dirs.end());
  Counts n;
  bool verbose = std::getenv("DS_NODE_TESTS_VERBOSE") != nullptr;  // lists the unsupported
  for (const fs::path& dir : dirs) {
    Case c{dir, {}, ""};
    switch (runCase(c)) {
      case Outcome::Passed:
        ++n.passed;
        break;
      case Outcome::Unsupported:
        ++n.unsupported;
        if (verbose) std::printf("unsupported %s: %s\n", dir.filename().c_str(), c.why.c_str());
        break;
      case Outcome::Failed:
        ++n.failed;
        ADD_FAILURE() << source << ": " << dir.filename().string() << ": " << c.why;
        break;
    }
  }
  std::printf("ONNX node tests (%s): %d passed, %d failed, %d unsupported\n", source.c_str(),
              n.passed, n.failed, n.unsupported);
  return n;
}

// The node test data of the venv's onnx package, or "" when the venv is missing.
// tests/onnx_node_data.py returns the package's data directory, or serializes the
// package's node test cases into the build tree when the wheel ships no data.
std::string venvNodeTestDir() {
  std::string python = std::string(DS_SOURCE_DIR) + "/.venv/bin/python";
  if (!fs::exists(python)) return "";
  test::CommandResult r = test::runCommand(python + " " DS_SOURCE_DIR "/tests/onnx_node_data.py " +
                                           DS_BINARY_DIR "/onnx-node-testdata");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::string out = r.output.substr(0, r.output.find_last_not_of("\r\n") + 1);
  std::string dir = out.substr(out.find_last_of('\n') + 1);
  if (out.find('\n') != std::string::npos) std::printf("%s\n", out.c_str());
  EXPECT_TRUE(fs::is_directory(dir)) << "onnx package node test data missing: " << out;
  return dir;
}

TEST(OnnxNodeExec, CpuOutputsMatchDebianTestData) {
  const char* dir = "/usr/share/libonnx-testdata/data/node";
  if (!fs::exists(dir)) GTEST_SKIP() << dir << " missing (libonnx-testdata)";
  Counts n = runSource("libonnx-testdata", dir);
  EXPECT_GT(n.passed, 300);
}

TEST(OnnxNodeExec, CpuOutputsMatchOnnxPackageTestData) {
  std::string dir = venvNodeTestDir();
  if (dir.empty()) {
    std::printf("note: %s/.venv missing (scripts/setup.sh creates it); onnx package data skipped\n",
                DS_SOURCE_DIR);
    GTEST_SKIP() << "project venv missing";
  }
  if (!fs::is_directory(dir)) return;  // reported above
  std::printf("onnx package node test data: %s\n", dir.c_str());
  Counts n = runSource("onnx package", dir);
  EXPECT_GT(n.passed, 200);  // most of the newer cases use opsets above 21
}

}  // namespace
}  // namespace ds
