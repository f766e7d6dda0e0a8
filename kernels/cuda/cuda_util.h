// Host-side helpers of the CUDA backend: status checks for the CUDA runtime,
// cuDNN and cuBLAS that throw a one-line ds::Error naming the call, its file:line
// and a hint; device buffers owned by kernels (constant index tables made at
// load); and the broadcast walks element-wise launches take.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ir/error.h"
#include "kernels/cuda/kernel.h"
#include "kernels/cuda/launch.h"

namespace ds::cuda {

[[noreturn]] void throwCudaError(const char* call, const char* status, const char* file, int line);

const char* cublasStatusName(cublasStatus_t status);

#define DS_CUDA_CHECK(call)                                                                  \
  do {                                                                                       \
    cudaError_t ds_status_ = (call);                                                         \
    if (ds_status_ != cudaSuccess)                                                           \
      ::ds::cuda::throwCudaError(#call, cudaGetErrorString(ds_status_), __FILE__, __LINE__); \
  } while (0)

#define DS_CUDNN_CHECK(call)                                                                  \
  do {                                                                                        \
    cudnnStatus_t ds_status_ = (call);                                                        \
    if (ds_status_ != CUDNN_STATUS_SUCCESS)                                                   \
      ::ds::cuda::throwCudaError(#call, cudnnGetErrorString(ds_status_), __FILE__, __LINE__); \
  } while (0)

#define DS_CUBLAS_CHECK(call)                                                               \
  do {                                                                                      \
    cublasStatus_t ds_status_ = (call);                                                     \
    if (ds_status_ != CUBLAS_STATUS_SUCCESS)                                                \
      ::ds::cuda::throwCudaError(#call, ::ds::cuda::cublasStatusName(ds_status_), __FILE__, \
                                 __LINE__);                                                 \
  } while (0)

// A device allocation owned by a kernel, made once at plan load.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  // Uploads `values` (synchronously: this runs at load).
  static DeviceBuffer upload(const std::vector<int64_t>& values);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* get() const { return data_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }

  // The process's live buffers, each its own cudaMalloc, outside the executor's
  // declared regions: counted for its memory report (the plan does not hold them).
  struct Live {
    int64_t buffers = 0, bytes = 0;
  };
  static Live live();

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// A walk over `dims` in which operand k advances by strides[k][d] (operand 0 is
// the output): size-1 and mergeable dims collapsed; fails the step when more than
// kMaxWalkDims remain.
Walk makeWalk(const KernelContext& ctx, std::vector<int64_t> dims,
              std::vector<std::vector<int64_t>> strides);
// The walk of a contiguous output of shape `out` and inputs broadcast to it.
Walk broadcastWalk(const KernelContext& ctx, const Shape& out, const std::vector<Shape>& inputs);

// Fails at load unless input `i` is f32 (the CUDA kernels compute in f32).
void requireF32(const KernelContext& ctx, size_t i);
// The storage dtype of a step for kernels that take one float dtype throughout:
// F32 when no tensor is 16-bit (the f32 path checks its own dtypes), f16 or bf16
// when every tensor has it, nullopt for a mix involving 16 bits (run promoted).
std::optional<DType> uniformFloatDType(const KernelContext& ctx);
bool hasOutput(const KernelContext& ctx, size_t i);
// cuBLAS's type of f16, bf16 and (otherwise) f32 elements.
inline cudaDataType_t cudaTypeOf(DType t) {
  return t == DType::F16 ? CUDA_R_16F : t == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F;
}
// The largest power of two up to 256 dividing `p`'s address (cuBLASLt's alignment
// preferences: it otherwise assumes 256).
inline uint32_t alignmentOf(const void* p) {
  uint32_t a = 256;
  while (a > 1 && reinterpret_cast<uintptr_t>(p) % a != 0) a /= 2;
  return a;
}
// A kernel that does nothing (steps with empty outputs).
std::unique_ptr<CudaKernel> noopKernel();
// Writes "dsrun: note: " + message on stderr the first time `key` is seen in the
// process: a kernel that declines its fast path says why once, not per step.
void noteOnce(const std::string& key, const std::string& message);
// Copies the input to the output on the stream (nothing when they alias); either
// may be pinned host memory (optimizer offload's copies).
void copyAsync(const TensorView& from, const TensorView& to, cudaStream_t stream);

}  // namespace ds::cuda
