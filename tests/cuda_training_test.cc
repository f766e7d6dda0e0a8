// The CUDA executor's plan features against the CPU backend, through dsrun as a
// user runs it: the same plan trained 10 steps on both backends from the same
// data, comparing every step's loss and the final weights (dsrun --export-onnx,
// consolidated from every rank's shards):
//  * ZeRO stages 0-3 at world size 4 over the local device transport (four rank
//    threads sharing one GPU) and at world size 1 over NCCL; fp32 within 1e-4;
//  * fp16 (dynamic loss scaling) and bf16 plans: loss within 1% per step;
//  * optimizer and parameter offload (host steps and copies on their own streams);
//  * activation checkpointing (recomputed segments);
//  * CUDA graphs on and off give the same training.
// And the device memory the executor holds against the plan's prediction.
// Without a GPU every test skips at once (their CPU halves alone would cost CI
// minutes and prove nothing new: tests/zero_equivalence_test.cc runs them).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "frontend/onnx_import.h"
#include "tests/training_fixtures.h"

#ifdef DS_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "kernels/cuda/cuda_executor.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/kernel.h"
#endif

namespace ds {
namespace {

#ifdef DS_HAVE_CUDA

#define SKIP_WITHOUT_GPU()                                         \
  do {                                                             \
    if (std::string why = cuda::unavailableReason(); !why.empty()) \
      GTEST_SKIP() << "no GPU: " << why;                           \
  } while (0)

struct Model {
  std::string name;
  std::string onnx;
  int64_t micro;
};

Model textModel(const std::string& name, const std::string& text, int64_t micro) {
  return {name, test::writeModel(test::parseOnnxText(text), test::scratchName(name + ".onnx")),
          micro};
}

Model gptModel() {
  std::string path = test::scratch("cuda_train_gpt.onnx");
  auto r = test::tool(
      "dsmodel", "gpt --layers 2 --d-model 32 --heads 2 --vocab 50 --seq 16 --seed 3 -o " + path);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return {"gpt", path, 2};
}

// A small ImageNet-stem ResNet-18 (max pool, residual blocks with and without
// downsampling) at 64x64, so that every stage keeps a spatial layout.
Model resnetModel() {
  std::string path = test::scratch("cuda_train_r18.onnx");
  auto r = test::tool("dsmodel", "resnet18 --image 64 --classes 10 --seed 3 -o " + path);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return {"resnet18", path, 4};
}

const std::vector<Model>& models() {
  static const std::vector<Model> all = {textModel("mlp", test::mlpText(false), 4),
                                         textModel("cnn", test::bnCnnText(), 4), gptModel()};
  return all;
}

// What a plan offloads to the host (zero_optimization.offload_optimizer and
// offload_param).
enum class Offload { None, Optimizer, Params, Both };

// precision: "fp32", "fp16" or "bf16"; small buckets so that every stage packs,
// pads and re-gathers.
// `optimizer`: AdamW, Lion, Adagrad or Lamb (stage 0 only).
std::string compilePlan(const Model& m, int stage, int world, const std::string& precision,
                        Offload offload = Offload::None, const std::string& flags = "",
                        const std::string& optimizer = "AdamW") {
  nlohmann::json params = {{"lr", 1e-3}, {"weight_decay", 0.01}};
  if (optimizer == "AdamW") params["eps"] = 1e-6;
  if (optimizer == "Lion") params["lr"] = 1e-4;
  nlohmann::json config = {{"train_micro_batch_size_per_gpu", m.micro},
                           {"optimizer", {{"type", optimizer}, {"params", params}}},
                           {"gradient_clipping", 1.0},
                           {"zero_optimization",
                            {{"stage", stage},
                             {"overlap_comm", true},
                             {"reduce_bucket_size", 200},
                             {"stage3_prefetch_bucket_size", 200},
                             {"stage3_param_persistence_threshold", 10}}}};
  if (precision == "fp16") config["fp16"] = {{"enabled", true}, {"initial_scale_power", 8}};
  if (precision == "bf16") config["bf16"] = {{"enabled", true}};
  if (offload == Offload::Optimizer || offload == Offload::Both)
    config["zero_optimization"]["offload_optimizer"] = {{"device", "cpu"}};
  if (offload == Offload::Params || offload == Offload::Both)
    config["zero_optimization"]["offload_param"] = {{"device", "cpu"}};
  const std::string tag = "cuda_" + m.name + "_z" + std::to_string(stage) + "_n" +
                          std::to_string(world) + "_" + precision + "_off" +
                          std::to_string(static_cast<int>(offload)) + (flags.empty() ? "" : "_f") +
                          "_" + optimizer;
  const std::string json = test::scratch(tag + ".json"), plan = test::scratch(tag + ".plan");
  test::writeFile(json, config.dump());
  auto r =
      test::tool("dscompile", m.onnx + " --loss cross_entropy --gpus " + std::to_string(world) +
                                  " --config " + json + " -o " + plan + " " + flags);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return plan;
}

struct Trained {
  std::vector<double> losses;
  std::map<std::string, Tensor> weights;
};

Trained dsrun(const Model& m, const std::string& plan, const std::string& args) {
  static int runs = 0;
  const std::string tag = m.name + "_cudarun" + std::to_string(++runs);
  const std::string metrics = test::scratch(tag + ".jsonl"), out = test::scratch(tag + ".onnx");
  auto r = test::runCommand(test::binary("dsrun") + " " + plan +
                            test::writeFeedData(plan, m.name + "_cuda", 64, 0.37) + " --steps 10 " +
                            args + " --metrics " + metrics + " --export-onnx " + out + " 2>&1");
  EXPECT_EQ(r.exit_code, 0) << args << ": " << r.output;
  Trained t;
  std::ifstream in(metrics);
  for (std::string line; std::getline(in, line);)
    t.losses.push_back(nlohmann::json::parse(line)["loss"].get<double>());
  onnx::ModelProto model;
  std::ifstream file(out, std::ios::binary);
  if (model.ParseFromIstream(&file))
    for (const onnx::TensorProto& init : model.graph().initializer())
      if (init.data_type() == onnx::TensorProto::FLOAT)
        t.weights[init.name()] = tensorFromOnnx(init, ".");
  return t;
}

// ‖a - b‖ / ‖b‖.
double relativeL2(const Tensor& a, const Tensor& b) {
  double diff = 0, norm = 0;
  for (int64_t i = 0; i < b.numel(); ++i) {
    diff += std::pow(a.getDouble(i) - b.getDouble(i), 2);
    norm += std::pow(b.getDouble(i), 2);
  }
  return norm > 0 ? std::sqrt(diff / norm) : std::sqrt(diff);
}

// Every step's loss within `loss_tolerance` relative; with `weight_tolerance` > 0,
// every exported float initializer within it (relative L2).
void expectSameTraining(const Trained& got, const Trained& want, double loss_tolerance,
                        double weight_tolerance) {
  ASSERT_EQ(got.losses.size(), 10u);
  ASSERT_EQ(want.losses.size(), 10u);
  for (size_t i = 0; i < want.losses.size(); ++i)
    EXPECT_NEAR(got.losses[i], want.losses[i], loss_tolerance * std::abs(want.losses[i]))
        << "step " << i + 1;
  if (weight_tolerance <= 0) return;
  ASSERT_EQ(got.weights.size(), want.weights.size());
  for (const auto& [name, ref] : want.weights) {
    if (name == "mean" || name == "var") continue;  // BatchNorm statistics: rank 0's
    auto it = got.weights.find(name);
    ASSERT_NE(it, got.weights.end()) << name;
    EXPECT_LE(relativeL2(it->second, ref), weight_tolerance) << name;
  }
}

// Every model at ZeRO stages 0-3 on `world` ranks over the device transport
// `device_comm`, in fp32: within 1e-4 of the CPU backend.
void expectZeroStagesMatchTheCpu(int world, const std::string& device_comm) {
  for (const Model& m : models())
    for (int stage = 0; stage <= 3; ++stage) {
      SCOPED_TRACE(m.name + " ZeRO-" + std::to_string(stage) + " on " + std::to_string(world) +
                   " rank(s) over " + device_comm);
      std::string plan = compilePlan(m, stage, world, "fp32");
      Trained cpu = dsrun(m, plan, "--backend cpu");
      Trained gpu = dsrun(m, plan, "--backend cuda --device-comm " + device_comm);
      expectSameTraining(gpu, cpu, 1e-4, 1e-4);
    }
}

TEST(CudaTraining, ZeroStagesOnFourRanksSharingTheGpuMatchTheCpu) {
  SKIP_WITHOUT_GPU();
  expectZeroStagesMatchTheCpu(4, "local");
}

TEST(CudaTraining, ZeroStagesOverNcclAtWorldSizeOneMatchTheCpu) {
  SKIP_WITHOUT_GPU();
  expectZeroStagesMatchTheCpu(1, "nccl");
}

// Each rank draws its own Dropout masks (the rank is part of the key), as on the CPU.
TEST(CudaTraining, DropoutOnFourRanksMatchesTheCpu) {
  SKIP_WITHOUT_GPU();
  const Model m = textModel("mlp_dropout", test::mlpText(true), 4);
  std::string plan = compilePlan(m, 1, 4, "fp32");
  Trained cpu = dsrun(m, plan, "--backend cpu");
  Trained gpu = dsrun(m, plan, "--backend cuda --device-comm local");
  expectSameTraining(gpu, cpu, 1e-4, 1e-4);
}

// 16-bit plans round the same values on both backends but sum them in different
// orders (cuDNN, cuBLAS, the CPU's oneDNN), so a loss agrees to within 16-bit
// precision, not bit for bit: 1% (issue 7's bar).
TEST(CudaTraining, SixteenBitLossesWithinOnePercentOfTheCpu) {
  SKIP_WITHOUT_GPU();
  for (const Model& m : models())
    for (const char* precision : {"fp16", "bf16"})
      for (int world : {1, 4}) {
        SCOPED_TRACE(m.name + " " + precision + " ZeRO-3 on " + std::to_string(world));
        std::string plan = compilePlan(m, 3, world, precision);
        Trained cpu = dsrun(m, plan, "--backend cpu");
        Trained gpu = dsrun(m, plan, "--backend cuda --device-comm local");
        expectSameTraining(gpu, cpu, 0.01, 0);
      }
}

// Host steps (the optimizer on the host) and the copy stream: the same arithmetic
// as without offload, so fp32 within 1e-4.
TEST(CudaTraining, OptimizerOffloadMatchesTheCpu) {
  SKIP_WITHOUT_GPU();
  for (const Model& m : models())
    for (int world : {1, 2}) {
      SCOPED_TRACE(m.name + " offload on " + std::to_string(world));
      std::string plan = compilePlan(m, 3, world, "fp32", Offload::Optimizer);
      Trained cpu = dsrun(m, plan, "--backend cpu");
      Trained gpu = dsrun(m, plan, "--backend cuda --device-comm local");
      expectSameTraining(gpu, cpu, 1e-4, 1e-4);
    }
  const Model& cnn = models()[1];
  std::string plan = compilePlan(cnn, 3, 2, "fp16", Offload::Optimizer);
  expectSameTraining(dsrun(cnn, plan, "--backend cuda --device-comm local"),
                     dsrun(cnn, plan, "--backend cpu"), 0.01, 0);
}

// Parameter shards in pinned host memory, copied up before each gather and down
// after a device step: the same arithmetic, so fp32 within 1e-4.
TEST(CudaTraining, ParameterOffloadMatchesTheCpu) {
  SKIP_WITHOUT_GPU();
  for (const Model& m : models())
    for (Offload offload : {Offload::Params, Offload::Both}) {
      SCOPED_TRACE(m.name + (offload == Offload::Both ? " with optimizer offload" : ""));
      std::string plan = compilePlan(m, 3, 2, "fp32", offload);
      expectSameTraining(dsrun(m, plan, "--backend cuda --device-comm local"),
                         dsrun(m, plan, "--backend cpu"), 1e-4, 1e-4);
    }
  const Model& cnn = models()[1];
  std::string plan = compilePlan(cnn, 3, 1, "fp16", Offload::Both);
  expectSameTraining(dsrun(cnn, plan, "--backend cuda"), dsrun(cnn, plan, "--backend cpu"), 0.01,
                     0);
}

// Lion's and Adagrad's device steps (and the fused 16-bit forms, and their host
// steps under offload): fp32 within 1e-4 of the CPU, fp16 within 1%.
TEST(CudaTraining, LionAndAdagradMatchTheCpu) {
  SKIP_WITHOUT_GPU();
  for (const char* optimizer : {"Lion", "Adagrad"})
    for (const Model& m : models()) {
      SCOPED_TRACE(m.name + " " + optimizer);
      std::string plan = compilePlan(m, 3, 2, "fp32", Offload::None, "", optimizer);
      expectSameTraining(dsrun(m, plan, "--backend cuda --device-comm local"),
                         dsrun(m, plan, "--backend cpu"), 1e-4, 1e-4);
      for (Offload offload : {Offload::None, Offload::Optimizer}) {
        plan = compilePlan(m, 3, 2, "fp16", offload, "", optimizer);
        expectSameTraining(dsrun(m, plan, "--backend cuda --device-comm local"),
                           dsrun(m, plan, "--backend cpu"), 0.01, 0);
      }
    }
}

// Lamb's three kernels (moments and block sums, the trust ratio, the step) at ZeRO-0
// over NCCL and on four local ranks: fp32 within 1e-4 of the CPU, fp16 within 1%.
TEST(CudaTraining, LambMatchesTheCpu) {
  SKIP_WITHOUT_GPU();
  for (const Model& m : models()) {
    SCOPED_TRACE(m.name);
    std::string plan = compilePlan(m, 0, 1, "fp32", Offload::None, "", "Lamb");
    expectSameTraining(dsrun(m, plan, "--backend cuda --device-comm nccl"),
                       dsrun(m, plan, "--backend cpu"), 1e-4, 1e-4);
    plan = compilePlan(m, 0, 4, "fp16", Offload::None, "", "Lamb");
    expectSameTraining(dsrun(m, plan, "--backend cuda --device-comm local"),
                       dsrun(m, plan, "--backend cpu"), 0.01, 0);
  }
}

// Activation checkpointing: backward's recomputed copies (a one-output training
// BatchNorm among them) on the GPU, fp32 within 1e-4 of the CPU, fp16 within 1%.
TEST(CudaTraining, RecomputedActivationsMatchTheCpu) {
  SKIP_WITHOUT_GPU();
  for (const Model& m : models()) {
    SCOPED_TRACE(m.name);
    std::string plan = compilePlan(m, 0, 1, "fp32", Offload::None, "--checkpoint-activations");
    expectSameTraining(dsrun(m, plan, "--backend cuda"), dsrun(m, plan, "--backend cpu"), 1e-4,
                       1e-4);
    plan = compilePlan(m, 3, 2, "fp16", Offload::None, "--checkpoint-activations");
    expectSameTraining(dsrun(m, plan, "--backend cuda --device-comm local"),
                       dsrun(m, plan, "--backend cpu"), 0.01, 0);
  }
}

// Replaying the captured step runs the same kernels on the same data: the same
// training to the last bit.
TEST(CudaTraining, CudaGraphsOnAndOffTrainTheSame) {
  SKIP_WITHOUT_GPU();
  for (const Model& m : models()) {
    SCOPED_TRACE(m.name);
    std::string plan = compilePlan(m, 3, 1, "fp16");
    Trained eager = dsrun(m, plan, "--backend cuda --no-cuda-graph");
    Trained graphs = dsrun(m, plan, "--backend cuda");
    expectSameTraining(graphs, eager, 0, 0);
  }
}

// dsrun --cudnn-benchmark picks convolution algorithms by timing them: another
// choice of algorithm, the same training within the f32 tolerance.
TEST(CudaTraining, CudnnBenchmarkMatchesTheCpu) {
  SKIP_WITHOUT_GPU();
  const Model& cnn = models()[1];
  std::string plan = compilePlan(cnn, 0, 1, "fp32");
  expectSameTraining(dsrun(cnn, plan, "--backend cuda --cudnn-benchmark"),
                     dsrun(cnn, plan, "--backend cpu"), 1e-4, 1e-4);
}

// dsrun --channels-last keeps 16-bit activations NHWC (kernels/cuda/layout.h):
// the same training as the CPU within 16-bit precision (cuDNN's NHWC algorithms
// sum in other orders), with CUDA graphs and without, at ZeRO-0 and ZeRO-3.
TEST(CudaTraining, ChannelsLastSixteenBitTrainingMatchesTheCpu) {
  SKIP_WITHOUT_GPU();
  for (const Model& m : {resnetModel(), models()[1]})
    for (const char* precision : {"fp16", "bf16"})
      for (int stage : {0, 3}) {
        SCOPED_TRACE(m.name + " " + precision + " ZeRO-" + std::to_string(stage));
        std::string plan = compilePlan(m, stage, 1, precision);
        Trained cpu = dsrun(m, plan, "--backend cpu");
        expectSameTraining(dsrun(m, plan, "--backend cuda --channels-last"), cpu, 0.01, 0);
        expectSameTraining(dsrun(m, plan, "--backend cuda --channels-last --no-cuda-graph"), cpu,
                           0.01, 0);
      }
}

// The executor reports the tensors it keeps NHWC, and none without the option.
TEST(CudaTraining, ChannelsLastIsChosenOnlyWhenAsked) {
  SKIP_WITHOUT_GPU();
  PlanFile plan = readPlanFile(compilePlan(resnetModel(), 0, 1, "fp16"));
  ExecutorOptions options;
  EXPECT_EQ(CudaExecutor(plan, options).channelsLastTensors(), 0u);
  options.cuda_channels_last = true;
  EXPECT_GT(CudaExecutor(plan, options).channelsLastTensors(), 50u);
}

TEST(CudaExecutorGraphs, ReplaysFromTheSecondRunOfEachKind) {
  SKIP_WITHOUT_GPU();
  const Model& m = models()[1];
  PlanFile plan = readPlanFile(compilePlan(m, 0, 1, "fp32"));
  CudaExecutor exec(plan, {});
  ASSERT_TRUE(exec.usesCudaGraphs());
  for (const std::string& name : exec.feedNames()) exec.setFeed(name, Tensor(exec.feedType(name)));
  exec.run(false);
  exec.run(true);
  EXPECT_EQ(exec.graphReplays(), 0);
  exec.run(false);
  exec.run(true);
  exec.run(true);
  EXPECT_EQ(exec.graphReplays(), 3);
  ExecutorOptions eager;
  eager.cuda_graph = false;
  CudaExecutor off(plan, eager);
  EXPECT_FALSE(off.usesCudaGraphs());
}

// dsrun --profile on the GPU: every step that ran has a device time, from events.
TEST(CudaExecutorProfile, TimesEveryStepThatRan) {
  SKIP_WITHOUT_GPU();
  const Model& m = models()[1];
  PlanFile plan = readPlanFile(compilePlan(m, 0, 1, "fp16"));
  ExecutorOptions options;
  options.profile = true;
  CudaExecutor exec(plan, options);
  EXPECT_FALSE(exec.usesCudaGraphs());
  for (const std::string& name : exec.feedNames()) exec.setFeed(name, Tensor(exec.feedType(name)));
  exec.run(false);
  exec.run(true);
  // Only warm-up runs so far: those are reported.
  Executor::StepTimes t = exec.stepTimes();
  EXPECT_EQ(t.runs, 2);
  ASSERT_EQ(t.seconds.size(), static_cast<size_t>(plan.plan.ranks(0).steps_size()));
  double total = 0;
  for (double s : t.seconds) {
    EXPECT_GE(s, 0.0);
    total += s;
  }
  EXPECT_GT(total, 0.0);
  // Later runs replace them.
  for (int i = 0; i < 3; ++i) exec.run(true);
  t = exec.stepTimes();
  EXPECT_EQ(t.runs, 3);
  total = 0;
  for (double s : t.seconds) total += s;
  EXPECT_GT(total, 0.0);
}

// wall_clock_breakdown's source (runtime/wall_clock.h): the last run's time of
// every step, warm-up runs included, none for an optimizer phase that did not run.
TEST(CudaExecutorProfile, LastRunSecondsAreTheLastRunsStepTimes) {
  SKIP_WITHOUT_GPU();
  PlanFile plan = readPlanFile(compilePlan(models()[1], 0, 1, "fp16"));
  ExecutorOptions options;
  options.profile = true;
  CudaExecutor exec(plan, options);
  EXPECT_TRUE(exec.lastRunSeconds().empty());
  for (const std::string& name : exec.feedNames()) exec.setFeed(name, Tensor(exec.feedType(name)));
  const planpb::RankPlan& rank = plan.plan.ranks(0);
  for (bool optimizer_step : {false, true, false, true}) {
    exec.run(optimizer_step);
    const std::vector<double> seconds = exec.lastRunSeconds();
    ASSERT_EQ(seconds.size(), static_cast<size_t>(rank.steps_size()));
    double micro_step = 0, optimizer = 0;
    for (int s = 0; s < rank.steps_size(); ++s)
      (rank.steps(s).phase() == planpb::OPTIMIZER_STEP ? optimizer : micro_step) +=
          seconds[static_cast<size_t>(s)];
    EXPECT_GT(micro_step, 0.0);
    EXPECT_EQ(optimizer > 0.0, optimizer_step) << optimizer;
  }
}

// Issue 7: peak device memory within 5% of the plan's prediction on the reference
// workload's model at its micro-batch. The executor allocates the plan's arena and
// persistent region plus workspaces (cuBLAS's 32 MiB, cuDNN's per convolution)
// and promotion scratch, which it reports; what cudaMemGetInfo measures beyond the
// plan and those (library handles, CUDA graphs, any allocation during a run)
// must stay under 5% of the plan. The process's first executor also loads the
// kernel code cuDNN and cuBLAS use (CUDA loads modules lazily, once per process;
// 75 MiB on an H100 for this model), which no plan owns, as no PyTorch memory
// figure counts it: a first executor of the same plan runs before measuring the
// second, and the test prints what the first one cost.
// Device MiB that creating one handle of each library the executor makes per stream
// takes (cudaMemGetInfo before and after), printed: the candidates for memory the
// plan does not hold.
void printLibraryHandleMemory() {
  auto used = [] {
    size_t free = 0, total = 0;
    EXPECT_EQ(cudaMemGetInfo(&free, &total), cudaSuccess);
    return static_cast<double>(total - free) / 1048576;
  };
  double before = used();
  cudnnHandle_t dnn = nullptr;
  EXPECT_EQ(cudnnCreate(&dnn), CUDNN_STATUS_SUCCESS);
  const double after_cudnn = used();
  cublasHandle_t blas = nullptr;
  EXPECT_EQ(cublasCreate(&blas), CUBLAS_STATUS_SUCCESS);
  const double after_cublas = used();
  cublasLtHandle_t lt = nullptr;
  EXPECT_EQ(cublasLtCreate(&lt), CUBLAS_STATUS_SUCCESS);
  const double after_lt = used();
  std::cout << "library handles, device MiB: cuDNN " << after_cudnn - before << ", cuBLAS "
            << after_cublas - after_cudnn << ", cuBLASLt " << after_lt - after_cublas << "\n";
  cublasLtDestroy(lt);
  cublasDestroy(blas);
  cudnnDestroy(dnn);
}

TEST(CudaMemory, PeakDeviceMemoryWithinFivePercentOfThePlan) {
  SKIP_WITHOUT_GPU();
  std::string onnx = test::scratch("cuda_mem_r101.onnx");
  auto r = test::tool("dsmodel", "resnet101 --image 32 --classes 10 -o " + onnx);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string json = test::scratch("cuda_mem.json"), path = test::scratch("cuda_mem.plan");
  test::writeFile(json, R"({"train_micro_batch_size_per_gpu": 128,
    "fp16": {"enabled": true}, "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
    "zero_optimization": {"stage": 3}})");
  r = test::tool("dscompile", onnx + " --loss cross_entropy --config " + json + " -o " + path);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  PlanFile plan = readPlanFile(path);
  const double predicted =
      static_cast<double>(plan.plan.arena_bytes() + plan.plan.persistent_bytes());
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  ASSERT_EQ(cudaFree(nullptr), cudaSuccess);  // the context exists before measuring
  printLibraryHandleMemory();
  // Device bytes taken while an executor of the plan ran 4 steps (traced, eager,
  // captured, replayed), and what it declares.
  // Also prints where the device memory went: after loading, the steps after which
  // it fell, then after each run.
  auto measure = [&](size_t* declared_bytes) {
    size_t free_before = 0, total = 0;
    EXPECT_EQ(cudaMemGetInfo(&free_before, &total), cudaSuccess);
    auto taken = [&] {
      EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      size_t free_now = 0;
      EXPECT_EQ(cudaMemGetInfo(&free_now, &total), cudaSuccess);
      return (static_cast<double>(free_before) - static_cast<double>(free_now)) / 1048576;
    };
    CudaExecutor exec(plan, {});
    std::cout << "device MiB taken: loaded " << taken() << "\n";
    for (const std::string& name : exec.feedNames())
      exec.setFeed(name, Tensor(exec.feedType(name)));
    // The steps after which free memory fell (a run more, before the eager one).
    std::cout << exec.traceDeviceMemory(true) << "device MiB taken: traced " << taken();
    for (const char* run : {"eager", "captured", "replayed"}) {
      exec.run(true);
      std::cout << ", " << run << " " << taken();
    }
    exec.output(0);
    const double measured = taken() * 1048576;
    std::cout << "\n";
    *declared_bytes = exec.deviceBytes();
    std::cout << exec.deviceMemoryReport() << "\n";
    return measured;
  };
  size_t first_declared = 0, declared_bytes = 0;
  const double first = measure(&first_declared);
  const double measured = measure(&declared_bytes);
  const double declared = static_cast<double>(declared_bytes) - predicted;
  std::cout << "plan (arena + persistent) " << predicted / 1048576 << " MiB; workspaces and "
            << "scratch " << declared / 1048576 << " MiB; measured " << measured / 1048576
            << " MiB (the process's first executor: " << first / 1048576 << " MiB)\n";
  EXPECT_GE(declared, 0.0);
  EXPECT_LE(std::abs(measured - declared - predicted), 0.05 * predicted);
}

#else
TEST(CudaTraining, ZeroStagesOnFourRanksSharingTheGpuMatchTheCpu) {
  GTEST_SKIP() << "built without CUDA (DS_ENABLE_CUDA=OFF or no nvcc)";
}
#endif

}  // namespace
}  // namespace ds
