// Executes one rank of a plan on a GPU, the CUDA twin of runtime/cpu_executor.h.
//
// At load: one device allocation for the arena and one for the persistent region
// (initial data copied up), pinned host memory for the host regions of optimizer
// offload, one CUDA stream per plan stream with one event per plan event, and one
// kernel per step, its descriptors, algorithms and tables prepared then:
//  * device steps get a CudaKernel (kernels/cuda/kernel.h); 16-bit steps of
//    f32-only ops run promoted (kernels/cuda/promote16.h);
//  * host steps (offload: the optimizer update on the host) get the CPU backend's
//    kernel, enqueued on their stream with cudaLaunchHostFunc, so they too are
//    ordered by the plan's events and never make the host wait;
//  * collectives go through ExecutorOptions::device_comm (NCCL or the local device
//    transport), enqueued on the comm stream;
//  * a Relu right after a BatchNorm or a residual Add on the same stream is done by
//    that step's kernel (the CPU backend's epilogue fusion, kernels/cpu/fusion.h,
//    with the CUDA kernels' rules).
// Streams that run kernels needing library handles or scratch get their own
// cuBLAS/cuDNN handles and workspace, so streams never share mutable state.
//
// run() only enqueues: every stream waits for the first at its start (fork) and
// the first waits for every stream at its end (join); in between a step waits for
// the events the plan names and records its own. No allocation, no host
// synchronisation. With ExecutorOptions::cuda_graph (the default) the second run of
// each kind (micro-step, or micro-step with the optimizer step) is captured as a
// CUDA graph, which later runs replay: one launch per step instead of hundreds.
// (The first runs eagerly: libraries and NCCL set themselves up lazily, which
// capture forbids.) Reading an output or tensor waits for the runs before it.
//
// setFeed does not wait for the GPU either: the value goes to one of two pinned
// staging buffers of the feed, copied up on the first stream after the runs
// already enqueued, so the host prepares the next batch while the GPU trains.
//
// It lives in kernels/cuda/ rather than runtime/ so that ds_runtime stays free of
// CUDA; it builds only where nvcc is found, with DS_HAVE_CUDA defined.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "ir/plan.h"
#include "kernels/cuda/kernel.h"
#include "runtime/executor.h"

namespace ds {

class CudaExecutor : public Executor {
 public:
  // Throws a one-line ds::Error when no GPU is usable, a step's op has no CUDA
  // kernel ("node 'conv1' (Conv): no CUDA kernel") or its kernel cannot be built.
  explicit CudaExecutor(const PlanFile& plan, ExecutorOptions options = {});
  ~CudaExecutor() override;

  void setFeed(const std::string& name, const Tensor& value) override;
  void run(bool optimizer_step = true) override;
  void waitForRuns() const override { synchronize(); }
  Tensor output(size_t i) const override;
  Tensor readTensor(int index) const override;
  void writeTensor(int index, const Tensor& value) override;
  // With ExecutorOptions::profile: each step's device time, from CUDA events around
  // it (runs are then eager, and each ends by waiting for the GPU to read them).
  StepTimes stepTimes() const override {
    return step_times_.runs > 0 ? step_times_ : warmup_times_;
  }
  std::vector<double> lastRunSeconds() const override { return last_run_seconds_; }

  // Bytes of device memory the executor allocated: arena, persistent region,
  // workspaces and promotion scratch (the plan predicts the first two).
  size_t deviceBytes() const;
  // What deviceBytes() holds, in MiB, one line: the plan's regions, then per
  // stream its workspace (the largest step's, and cuBLAS's) and promotion scratch
  // (the largest promoted step's, and how many steps run promoted); then what
  // deviceBytes() leaves out: the kernels' own tables (DeviceBuffer::live).
  std::string deviceMemoryReport() const;
  // Runs one step (as run() does, eagerly) waiting for the device after each plan
  // step, and returns where free device memory (cudaMemGetInfo) fell: one line per
  // plan step after which it fell by at least `min_bytes`, largest first, then the
  // total. Memory no plan region declares (libraries' lazy workspaces, loaded
  // kernels) shows up at the step that takes it. For diagnostics: slow.
  std::string traceDeviceMemory(bool optimizer_step, size_t min_bytes = 1 << 20);
  // Whether runs replay CUDA graphs (false when turned off, or when capture is not
  // possible: a communicator that meets on the host).
  bool usesCudaGraphs() const { return graphs_enabled_; }
  // How many runs replayed a captured graph so far.
  int64_t graphReplays() const { return graph_replays_; }
  // How many steps an earlier step's kernel does as its epilogue (a Relu after a
  // BatchNorm or a residual Add; ExecutorOptions::fuse_epilogues).
  size_t fusedSteps() const { return fused_steps_; }
  // How many tensors the kernels keep channels-last (ExecutorOptions::
  // cuda_channels_last; kernels/cuda/layout.h).
  size_t channelsLastTensors() const { return channels_last_tensors_; }

 private:
  struct Lane;
  struct Step;
  struct Graph;
  struct Staging;
  void* address(int tensor) const;
  void load();
  void release() noexcept;
  void createLanes();
  void createStaging();
  void buildSteps();
  void chooseLayoutsAndFuse();
  bool buildNativeKernels();
  void buildPromotedKernels();
  void resetDeviceSteps();
  void allocateWorkspaces();
  void buildHostKernel(Step& step);
  void enqueue(bool optimizer_step);
  void enqueueStep(size_t index, std::vector<bool>& recorded);
  void runGraph(bool optimizer_step);
  void poisonAfter(size_t step);
  void collectStepTimes(bool optimizer_step);
  // Waits for every run so far; rethrows the first failure of a host step.
  void synchronize() const;
  void hostStepFailed(const std::string& what) noexcept;

  Regions regions_;
  std::vector<std::unique_ptr<Lane>> lanes_;  // per plan stream; lanes_[0] forks and joins
  std::vector<cudaEvent_t> events_;           // per plan event
  std::vector<Step> steps_;
  std::vector<std::vector<int>> dies_after_;  // arena tensors whose last use is step i
  std::vector<Staging> staging_;              // per plan feed, two pinned buffers
  size_t device_bytes_ = 0;
  size_t fused_steps_ = 0;
  size_t channels_last_tensors_ = 0;

  bool graphs_enabled_ = false;
  std::unique_ptr<Graph> graphs_[2];  // [optimizer_step]
  int runs_[2] = {0, 0};
  int64_t graph_replays_ = 0;
  StepTimes step_times_;    // ExecutorOptions::profile: runs after each kind's first
  StepTimes warmup_times_;  // the first run of each kind
  std::vector<double> last_run_seconds_;

  // A host step that throws cannot unwind through the CUDA driver's thread: its
  // error waits here for the next synchronisation or run().
  mutable std::mutex host_error_mu_;
  std::string host_error_;
  std::atomic<bool> host_failed_{false};
};

}  // namespace ds
