// The CUDA kernel interface, mirroring kernels/cpu/kernel.h. A plan step is
// described by the same backend-independent KernelContext (op, attributes with
// every default filled in, tensor views), whose data pointers are device
// addresses here. The executor builds one CudaKernel per step at plan load —
// where cuDNN descriptors and algorithms, cuBLAS parameters, broadcast walks and
// index tables are prepared — and run() only enqueues work on the executor's
// stream: no allocation, no synchronisation.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kernels/cpu/kernel.h"

namespace ds::cuda {

using cpu::KernelContext;
using cpu::TensorView;

// The executor's stream and library handles (all bound to the stream), made once.
struct Device {
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  cublasLtHandle_t cublaslt = nullptr;  // matrix products with a bias epilogue
  cudnnHandle_t cudnn = nullptr;
  // Choose algorithms by timing them (ExecutorOptions::cudnn_benchmark).
  bool benchmark = false;
};

class CudaKernel {
 public:
  virtual ~CudaKernel() = default;
  // Device scratch needed during run(). Steps run one after another on one
  // stream, so the executor gives all of them the same workspace, sized for the
  // largest request.
  virtual size_t workspaceBytes() const { return 0; }
  // Enqueues the step; the context's views are the same on every call.
  virtual void run(const KernelContext& ctx, const Device& dev, void* workspace) = 0;
};

// Builds a kernel for a step (once, at plan load).
using CudaKernelFactory =
    std::function<std::unique_ptr<CudaKernel>(const KernelContext&, const Device&)>;

using LaunchFn = std::function<void(const KernelContext&, const Device&, void* workspace)>;
// Wraps a launch function (usually a lambda holding what the factory resolved).
std::unique_ptr<CudaKernel> launchKernel(LaunchFn fn, size_t workspace_bytes = 0);

// Which dtypes a factory is handed. Mixed-precision plans store activations and
// weights in f16/bf16 (passes/mixed_precision.h). A step with 16-bit float tensors
// whose op's factory is F32Only runs promoted (kernels/cuda/promote16.h): its
// 16-bit inputs are widened to f32 scratch, the f32 kernel runs, and its 16-bit
// outputs are rounded once, exactly as the CPU oracle does (kernels/cpu/promote16.h).
// A Native16 factory sees the 16-bit step itself and may return nullptr for one it
// cannot run natively, which then runs promoted.
enum class Precision { F32Only, Native16 };

class CudaKernelRegistry {
 public:
  struct Entry {
    CudaKernelFactory factory;
    Precision precision = Precision::F32Only;
  };
  static const CudaKernelRegistry& instance();
  void add(const std::string& op, CudaKernelFactory factory,
           Precision precision = Precision::F32Only);
  // Declares that `op`'s kernel applies the epilogues `rule` accepts
  // (KernelContext::epilogue; the executor fuses as kernels/cpu/fusion.h says). A
  // factory handed a step with an epilogue must run it natively, never return null.
  void allowEpilogue(const std::string& op, cpu::EpilogueRule rule);
  // Declares that `op`'s kernel takes channels-last operands as `rule` says
  // (TensorView::channels_last; the executor chooses as kernels/cuda/layout.h says).
  void allowChannelsLast(const std::string& op, cpu::ChannelsLastRule rule);
  const Entry* find(const std::string& op) const;
  // nullptr: the op's kernel applies no epilogue.
  const cpu::EpilogueRule* epilogueRule(const std::string& op) const;
  // nullptr: the op's kernel takes every operand in the plain layout.
  const cpu::ChannelsLastRule* channelsLastRule(const std::string& op) const;
  std::vector<std::string> ops() const;

 private:
  std::map<std::string, Entry> entries_;
  std::map<std::string, cpu::EpilogueRule> epilogues_;
  std::map<std::string, cpu::ChannelsLastRule> channels_last_;
};

// Kernel families; CudaKernelRegistry::instance() calls each once.
void registerElementwiseKernels(CudaKernelRegistry& r);     // elementwise_kernels.cc
void registerShapeKernels(CudaKernelRegistry& r);           // shape_kernels.cc
void registerReductionKernels(CudaKernelRegistry& r);       // reduction_kernels.cc (+ norms, loss)
void registerConvKernels(CudaKernelRegistry& r);            // conv_kernels.cc (cuDNN)
void registerMatMulKernels(CudaKernelRegistry& r);          // matmul_kernels.cc (cuBLAS)
void registerWeightBiasGradKernels(CudaKernelRegistry& r);  // weight_bias_grad_kernels.cc
void registerAttentionKernels(CudaKernelRegistry& r);       // attention_kernels.cc (cuBLAS)
void registerNnKernels(CudaKernelRegistry& r);  // nn_kernels.cc (pooling, gather, optimizers)
void registerCollectiveKernels(CudaKernelRegistry& r);  // collective_kernels.cc

}  // namespace ds::cuda
