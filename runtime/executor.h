// The backend-independent face of a plan executor. A backend (CPU, CUDA) executes
// one rank of a plan; the trainer, checkpoints and tools talk to it only through
// this interface: feeds and outputs by name, persistent tensors by plan index.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "ir/plan.h"
#include "ir/tensor.h"
#include "kernels/cpu/kernel.h"

namespace ds {

class Communicator;        // runtime/comm/communicator.h
class DeviceCommunicator;  // runtime/comm/device_communicator.h

struct ExecutorOptions {
  int rank = 0;
  // Fill each arena tensor with 0xFF (NaN for floats) right after its last use, so a
  // memory plan that lets two live tensors overlap corrupts results visibly.
  bool poison_freed = false;
  // Seed of the plan's random ops (training-mode Dropout), mixed with each node's
  // own seed attribute; dsrun --seed.
  uint64_t seed = 0;
  // This rank's communicator (runtime/launch.h makes one per rank); collective steps
  // need it unless the plan has a single rank.
  Communicator* comm = nullptr;
  // CUDA backend: the collectives on device memory for the plan's collective steps
  // (NCCL, or the local device transport); `comm` stays the host-side one (metrics,
  // checkpoints). Needed unless the plan has a single rank.
  DeviceCommunicator* device_comm = nullptr;
  // CUDA backend: capture the step as a CUDA graph at the first run and replay it
  // (dsrun --no-cuda-graph turns it off).
  bool cuda_graph = true;
  // CUDA backend: pick each convolution's algorithm by timing cuDNN's candidates at
  // load, as torch.backends.cudnn.benchmark does, instead of from cuDNN's heuristics
  // (dsrun --cudnn-benchmark), taking the fastest, deterministic or not; also
  // cuDNN's non-deterministic attention backward. Faster steps, but results can
  // differ in the last bits between runs.
  bool cudnn_benchmark = false;
  // CPU backend: keep 4-D activations channels-last between kernels that accept
  // it (kernels/cpu/layout.h); off only to compare against the plain layout.
  bool channels_last = true;
  // CUDA backend: keep 16-bit 4-D activations channels-last (NHWC) between kernels
  // that accept it, as PyTorch's channels_last memory format does for cuDNN
  // (kernels/cuda/layout.h; dsrun --channels-last). Off by default until its speed
  // is measured on a GPU (bench/RESULTS.md).
  bool cuda_channels_last = false;
  // Let kernels apply the element-wise steps that follow them (kernels/cpu/fusion.h;
  // the CUDA backend: a Relu after a BatchNorm or an Add); off only to compare
  // against unfused execution.
  bool fuse_epilogues = true;
  // Time every step of every run (Executor::stepTimes; dsrun --profile).
  bool profile = false;
};

class Executor {
 public:
  Executor(const PlanFile& plan, ExecutorOptions options);
  virtual ~Executor() = default;
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  const PlanFile& plan() const { return plan_; }
  int rank() const { return options_.rank; }
  // This rank's communicator; nullptr for a one-rank plan run without one.
  Communicator* communicator() const { return options_.comm; }

  // Feeds (inputs and labels), by name; a wrong name, dtype or shape is a ds::Error
  // naming the feed with expected and actual.
  std::vector<std::string> feedNames() const;
  TensorType feedType(const std::string& name) const;
  virtual void setFeed(const std::string& name, const Tensor& value) = 0;

  // Runs the rank's EVERY_MICRO_STEP steps and, when `optimizer_step`, then its
  // OPTIMIZER_STEP steps; fails naming any feed that was never set. Gradient
  // accumulation over G micro-steps is G-1 calls run(false) and one run(true).
  virtual void run(bool optimizer_step = true) = 0;
  // Returns when every run so far has finished: a device backend's run() only
  // enqueues work (timing needs this); the CPU's run() has finished already.
  virtual void waitForRuns() const {}

  size_t numOutputs() const;
  std::string outputName(size_t i) const;
  // The output's index, or -1 when the plan has no output of that name.
  int outputIndex(const std::string& name) const;
  virtual Tensor output(size_t i) const = 0;

  // Any plan tensor by index (persistent state for checkpoints, outputs, feeds).
  virtual Tensor readTensor(int index) const = 0;
  // Overwrites a persistent tensor (resuming from a checkpoint).
  virtual void writeTensor(int index, const Tensor& value) = 0;

  // With ExecutorOptions::profile: per step of this rank, the seconds spent in it
  // summed over the `runs` runs so far (micro-steps, for training). Empty when not
  // profiling, or when the backend cannot time single steps. The CUDA backend
  // leaves out the first run of each kind (with and without the optimizer step):
  // warm-up, where CUDA loads kernel code and libraries pick kernels; it reports
  // those only when no other run was made.
  struct StepTimes {
    std::vector<double> seconds;
    int64_t runs = 0;
  };
  virtual StepTimes stepTimes() const { return {}; }
  // With ExecutorOptions::profile: per step of this rank, the seconds it took in the
  // last run, warm-up or not (0 for the optimizer-step phase of a run without it);
  // empty before the first run, when not profiling, or when the backend cannot time
  // single steps. The wall-clock breakdown (runtime/wall_clock.h) sums them by part.
  virtual std::vector<double> lastRunSeconds() const { return {}; }

 protected:
  // The position of `name` in the plan's feeds; a ds::Error listing them if absent.
  int feedIndex(const std::string& name) const;
  // Checks `value` against feed `name`'s type, records the feed as set and returns
  // its plan tensor, which the backend then fills.
  int acceptFeed(const std::string& name, const Tensor& value);
  // Fails naming the first feed that was never set.
  void requireAllFed() const;
  // Whether plan tensor `index` holds the same bytes in every run (TensorView::constant).
  bool isConstant(int index) const { return constant_[static_cast<size_t>(index)]; }

  // This rank's initial bytes of plan tensor `index` (its shard of a sharded
  // tensor); empty when the tensor has no initial value.
  std::span<const uint8_t> initialValue(int index) const;
  // The backend's allocations, one per planpb::Storage; host ones only for offload.
  struct Regions {
    uint8_t* arena = nullptr;
    uint8_t* persistent = nullptr;
    uint8_t* host_arena = nullptr;
    uint8_t* host_persistent = nullptr;
  };
  // Where plan tensor `index` lives, given the backend's allocations.
  uint8_t* tensorAddress(int index, const Regions& regions) const;
  // What a kernel of `step` sees: op, node, attributes, run options, and its tensors
  // as views at the backend's addresses. Backends build one per step at load.
  cpu::KernelContext stepContext(const planpb::Step& step, const Regions& regions) const;
  // Per step of this rank, the arena tensors read for the last time there (graph
  // outputs excluded: they are read after the run), for --poison-freed.
  std::vector<std::vector<int>> lastUses() const;

  const PlanFile& plan_;
  const ExecutorOptions options_;

 private:
  std::vector<bool> fed_;       // per plan feed
  std::vector<bool> constant_;  // per plan tensor: the same in every run (TensorView)
};

}  // namespace ds
