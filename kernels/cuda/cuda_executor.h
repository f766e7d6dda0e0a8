// Executes one rank of a plan on a GPU, the CUDA twin of runtime/cpu_executor.h:
// at load, one device allocation for the arena, one for the persistent region
// (initial data copied up) and one workspace shared by the steps, one stream with
// its cuBLAS and cuDNN handles, and one CudaKernel per step (descriptors,
// algorithms and tables prepared then). run() only enqueues kernels on the stream:
// no allocation and no synchronisation; reading an output or tensor waits for it.
// (It lives in kernels/cuda/ rather than runtime/ so that ds_runtime stays free of
// CUDA; it builds only where nvcc is found, with DS_HAVE_CUDA defined.)
#pragma once

#include <memory>
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
  Tensor output(size_t i) const override;
  Tensor readTensor(int index) const override;
  void writeTensor(int index, const Tensor& value) override;

  // Bytes of device memory the executor holds (arena, persistent, workspace).
  size_t deviceBytes() const;

 private:
  struct Step;
  void* address(int tensor) const;
  void load();
  void release() noexcept;
  void createDevice();
  void buildSteps();
  void poisonAfter(size_t step);

  cuda::Device device_;
  uint8_t* arena_ = nullptr;
  uint8_t* persistent_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::vector<Step> steps_;
  std::vector<std::vector<int>> dies_after_;  // arena tensors whose last use is step i
};

}  // namespace ds
