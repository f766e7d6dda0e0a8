// f16 and bf16 steps on the GPU for ops whose CUDA kernel computes in f32 only
// (CudaKernelRegistry Precision::F32Only): the twin of kernels/cpu/promote16.h,
// with the same rounding, so the CUDA backend and its CPU oracle mean the same by
// mixed precision. The step's 16-bit float inputs are widened to f32 (exact) into
// device scratch, the op's f32 kernel runs on the copies, and its 16-bit outputs
// are rounded to nearest-even once. Which ops only move bytes (never promoted) is
// the CPU's list (cpu::needsPromotion). The scratch is one allocation per stream
// the executor makes at load; steps of a stream run one at a time, so they share it.
#pragma once

#include <cstddef>
#include <memory>

#include "kernels/cuda/kernel.h"

namespace ds::cuda {

// The step's kernel computing in f32 through `scratch` (cpu::promotionScratchBytes
// long), built by `f32_factory` on views of the scratch.
std::unique_ptr<CudaKernel> promotedKernel(const KernelContext& ctx,
                                           const CudaKernelFactory& f32_factory, const Device& dev,
                                           void* scratch);

}  // namespace ds::cuda
