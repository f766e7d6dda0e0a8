// f16 and bf16 steps on the CPU, rounded exactly as a GPU kernel that computes in
// f32 rounds them: the 16-bit float inputs are widened to f32 (exact), the op's f32
// kernel runs, and its 16-bit outputs are rounded to nearest-even once. Mixed
// precision (passes/mixed_precision.h) thus means on the CPU what it means on the
// GPU: values stored in 16 bits, arithmetic and accumulation in f32.
//
// Ops that only move bytes (reshapes, concatenation, slicing, gathers, collectives,
// Cast itself) run on 16-bit tensors directly. The f32 copies live in one scratch
// buffer the executor allocates at load and every promoted step reuses (steps run
// one at a time), so running allocates nothing.
#pragma once

#include <cstddef>
#include <memory>

#include "kernels/cpu/kernel.h"

namespace ds::cpu {

// Whether the step has 16-bit float tensors and an op that computes on them.
bool needsPromotion(const KernelContext& ctx);
// The scratch bytes of one operand's f32 copy: rounded up to 256 bytes, so that
// every copy starts as aligned as an arena tensor (vector loads, cuDNN, cuBLAS).
size_t promotedCopyBytes(const TensorView& v);
// The f32 scratch bytes the step needs.
size_t promotionScratchBytes(const KernelContext& ctx);
// The step's kernel computing in f32 through `scratch` (promotionScratchBytes long).
std::unique_ptr<CpuKernel> promotedKernel(const KernelContext& ctx,
                                          const CpuKernelFactory& f32_factory, void* scratch);

}  // namespace ds::cpu
