// Small training models in ONNX's text syntax and helpers for driving dscompile
// and dsrun from the training tests (checkpoints, export, data).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "frontend/compile.h"
#include "ir/plan.h"
#include "ir/verifier.h"
#include "models/models.h"
#include "passes/autodiff.h"
#include "passes/dead_code.h"
#include "passes/lower_to_plan.h"
#include "passes/memory_plan.h"
#include "runtime/comm/mpi_communicator.h"
#include "runtime/cpu_executor.h"
#include "runtime/npy.h"
#include "tests/test_util.h"

namespace ds::test {

// n deterministic values in [-scale, scale], as ONNX text.
inline std::string values(int n, double scale, int seed) {
  std::string out;
  for (int i = 0; i < n; ++i)
    out += (i ? ", " : "") + std::to_string(scale * std::sin(1.3 * i + seed));
  return out;
}

// x[batch,8] -> MatMul+Add -> Relu [-> Dropout(0.3, training)] -> MatMul+Add -> logits[batch,4].
inline std::string mlpText(bool dropout) {
  return R"(<ir_version: 8, opset_import: ["" : 17]>
mlp (float[batch, 8] x) => (float[batch, 4] logits)
<float[8, 16] w1 = {)" +
         values(128, 0.4, 1) + R"(}, float[16] b1 = {)" + values(16, 0.1, 2) +
         R"(}, float[16, 4] w2 = {)" + values(64, 0.4, 3) + R"(}, float[4] b2 = {)" +
         values(4, 0.1, 4) + R"(}>
{
  ratio = Constant<value = float {0.3}>()
  train = Constant<value = bool {1}>()
  h = MatMul(x, w1)
  hb = Add(h, b1)
  r = Relu(hb)
)" + (dropout ? "  d, mask = Dropout(r, ratio, train)\n" : "  d = Identity(r)\n") +
         R"(  o = MatMul(d, w2)
  logits = Add(o, b2)
}
)";
}

// x[batch,3,32,32] -> Conv(4, 1x1) -> BatchNormalization(training) -> Relu -> GAP -> Gemm ->
// [batch,10].
inline std::string bnCnnText() {
  return R"(<ir_version: 8, opset_import: ["" : 17]>
cnn (float[batch, 3, 32, 32] x) => (float[batch, 10] logits)
<float[4, 3, 1, 1] wc = {)" +
         values(12, 0.5, 5) + R"(},
 float[4] scale = {1.0, 0.9, 1.1, 1.2}, float[4] bias = {0.0, 0.1, -0.1, 0.05},
 float[4] mean = {0, 0, 0, 0}, float[4] var = {1, 1, 1, 1},
 float[10, 4] wf = {)" +
         values(40, 0.3, 6) + R"(}, float[10] bf = {)" + values(10, 0.05, 7) + R"(}>
{
  c = Conv<kernel_shape = [1, 1]>(x, wc)
  y, rm, rv = BatchNormalization<training_mode = 1, momentum = 0.9>(c, scale, bias, mean, var)
  a = Relu(y)
  p = GlobalAveragePool(a)
  f = Flatten(p)
  logits = Gemm<transB = 1>(f, wf, bf)
}
)";
}

// A file name and a path under the test temp dir private to this process: the source tree is
// shared, so other builds' test runs may run these tests at the same time.
inline std::string scratchName(const std::string& name) {
  return "p" + std::to_string(::getpid()) + "_" + name;
}
inline std::string scratch(const std::string& name) {
  return tempPath(scratchName(name));
}

// Compiles `model` (written under this process's scratch name NAME.onnx) at
// micro-batch `batch`, in process, and returns its plan.
inline PlanFile compiledPlan(const onnx::ModelProto& model, const std::string& name,
                             int64_t batch) {
  std::string path = scratch(name + ".onnx");
  saveModel(model, path);
  CompileOptions o;
  o.model_path = path;
  o.micro_batch = batch;
  return buildPlan(compile(o), path);
}

// `mpirun -np N` as the tests run it: containers run as root, which mpirun refuses
// without the two variables; a stuck job is killed after 120 s.
inline std::string mpirunPrefix(int np) {
  return "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 120 mpirun -np " +
         std::to_string(np) + " --oversubscribe ";
}

// Whether this build has MPI and the machine an mpirun.
inline bool haveMpirun() {
  return haveMpi() && runCommand("command -v mpirun").exit_code == 0;
}

// Runs one of the project's tools with `args`.
inline CommandResult tool(const std::string& name, const std::string& args) {
  return runCommand(binary(name) + " " + args);
}

// A user error: exit code 2 and one line holding `message`.
inline void expectOneLineError(const CommandResult& r, const std::string& message) {
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, message)) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
}

inline std::string readBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// A path under the test temp dir with nothing there.
inline std::string freshDir(const std::string& name) {
  std::string dir = scratch(name);
  std::filesystem::remove_all(dir);
  return dir;
}

// Writes an ONNX text model as NAME.onnx and compiles it with `flags` into NAME.plan.
inline std::string compileText(const std::string& text, const std::string& name,
                               const std::string& flags) {
  std::string model = writeModel(parseOnnxText(text), scratchName(name + ".onnx"));
  std::string plan = scratch(name + ".plan");
  auto r = tool("dscompile", model + " " + flags + " -o " + plan);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return plan;
}

// One deterministic dataset per data input of the plan at `plan_path` (`samples`
// samples; floats sin(phase * i + 1), integers — labels, token ids — in [0, 4), valid
// for every test model), written as NAME.npy files tagged `tag`; returns the
// dsrun --feed flags.
inline std::string writeFeedData(const std::string& plan_path, const std::string& tag,
                                 int64_t samples, double phase) {
  PlanFile plan = readPlanFile(plan_path);
  std::string flags;
  for (int index : plan.plan.feeds()) {
    const planpb::TensorInfo& t = plan.plan.tensors(index);
    if (t.name().rfind("ds.", 0) == 0) continue;  // the trainer's own feeds
    Shape shape(t.shape().begin(), t.shape().end());
    shape[0] = samples;
    Tensor data(TensorType{static_cast<DType>(t.dtype()), shape});
    for (int64_t i = 0; i < data.numel(); ++i) {
      if (data.dtype() == DType::F32)
        data.setDouble(i, std::sin(phase * static_cast<double>(i) + 1));
      else
        data.setInt(i, (i * 7 + i / 5) % 4);
    }
    const std::string path = scratch(tag + "_" + t.name() + ".npy");
    writeNpy(path, data);
    flags += " --feed " + t.name() + "=" + path;
  }
  return flags;
}

// What `dsrun PLAN` trained over `steps` steps on writeFeedData's data (`extra`:
// more dsrun flags): each step's metrics line and the exported model's bytes.
struct TrainedRun {
  std::vector<nlohmann::json> metrics;
  std::string exported;
  std::string output;  // dsrun's stdout and stderr
  // Each step's value of `key` as JSON text, to compare to the bit.
  std::vector<std::string> values(const std::string& key) const {
    std::vector<std::string> out;
    for (const nlohmann::json& m : metrics) out.push_back(m.value(key, nlohmann::json()).dump());
    return out;
  }
};

// Two runs trained the same, to the bit: every step's loss, loss scale and
// gradient norm, and the exported weights.
inline void expectSameTraining(const TrainedRun& a, const TrainedRun& b, size_t steps) {
  ASSERT_EQ(a.metrics.size(), steps);
  for (const char* key : {"loss", "loss_scale", "grad_norm"})
    EXPECT_EQ(a.values(key), b.values(key)) << key;
  EXPECT_FALSE(a.exported.empty());
  EXPECT_TRUE(a.exported == b.exported) << "the exported weights differ";
}

inline TrainedRun trainPlan(const std::string& plan, const std::string& tag, int steps,
                            double phase, const std::string& extra = "") {
  const std::string metrics = scratch(tag + ".jsonl");
  const std::string out = scratch(tag + ".onnx");
  auto r = tool("dsrun", plan + writeFeedData(plan, tag, 32, phase) + " --steps " +
                             std::to_string(steps) + " --metrics " + metrics + " --export-onnx " +
                             out + extra);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  TrainedRun t;
  t.output = r.output;
  std::ifstream in(metrics);
  for (std::string line; std::getline(in, line);) t.metrics.push_back(nlohmann::json::parse(line));
  t.exported = readBytes(out);
  return t;
}

// Every output of `plan` run once on executor type `Exec` (CpuExecutor, CudaExecutor),
// each feed filled with cos(0.37 i + its name's first letter).
template <typename Exec>
std::vector<Tensor> outputsOf(const PlanFile& plan) {
  Exec exec(plan, {});
  for (const std::string& name : exec.feedNames()) {
    Tensor t(exec.feedType(name));
    for (int64_t i = 0; i < t.numel(); ++i) t.setDouble(i, std::cos(0.37 * double(i) + name[0]));
    exec.setFeed(name, t);
  }
  exec.run();
  std::vector<Tensor> out;
  for (size_t i = 0; i < exec.numOutputs(); ++i) out.push_back(exec.output(i));
  return out;
}

// A pass test's graph `g` lowered as it is and run once on the CPU backend
// (outputsOf's feeds).
inline std::vector<Tensor> cpuOutputs(Graph& g) {
  return outputsOf<CpuExecutor>(lowerToPlan(g, planMemory(g), {}));
}

// Two runs' outputs: as many, of the same types, with the same bits.
inline void expectSameBits(const std::vector<Tensor>& got, const std::vector<Tensor>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_EQ(got[i].type(), want[i].type()) << "output " << i;
    EXPECT_EQ(std::memcmp(got[i].raw(), want[i].raw(), want[i].bytes()), 0) << "output " << i;
  }
}

// How many of `g`'s nodes are `op`s.
inline int countOps(const Graph& g, const std::string& op) {
  int n = 0;
  for (const auto& node : g.nodes()) n += node->op() == op;
  return n;
}

// A pass test's oracle: graph `g`'s first output, then the gradients of the
// inputs named `wrt` under loss = Σ y·r (r[i] = cos(0.7 i)), on the CPU backend with
// every input from a seeded uniform draw in [-range, range).
inline std::vector<Tensor> outputAndGradients(Graph& g, const std::vector<std::string>& wrt,
                                              double range, uint64_t seed) {
  Value* y = g.outputs()[0];
  Tensor r({y->dtype(), y->shape()});
  for (int64_t i = 0; i < r.numel(); ++i) r.setDouble(i, std::cos(0.7 * double(i)));
  Value* prod = g.addNode("Mul", {y, g.addConstant("r", r)})->output(0);
  Value* loss = g.addNode("ReduceSum", {prod}, {{"keepdims", int64_t{0}}})->output(0);
  std::vector<Value*> inputs;
  for (const std::string& name : wrt) inputs.push_back(g.value(name));
  auto grads = buildGradients(g, loss, inputs);
  for (Value* v : inputs) g.addOutput(grads.at(v));
  eliminateDeadCode(g);
  verifyGraph(g);
  const PlanFile plan = lowerToPlan(g, planMemory(g), {});
  CpuExecutor exec(plan);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(-range, range);
  for (const std::string& name : exec.feedNames()) {
    Tensor t(exec.feedType(name));
    for (int64_t i = 0; i < t.numel(); ++i) t.setDouble(i, u(rng));
    exec.setFeed(name, t);
  }
  exec.run();
  std::vector<Tensor> out;
  for (size_t i = 0; i < exec.numOutputs(); ++i) out.push_back(exec.output(i));
  return out;
}

}  // namespace ds::test
