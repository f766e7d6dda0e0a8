// Epilogue fusion on the CUDA backend: the CPU executor's decision
// (kernels/cpu/fusion.h) with the CUDA kernels' rules (CudaKernelRegistry::
// allowEpilogue): a BatchNorm or a residual Add applies the Relu right after it,
// saving a kernel and a pass over the activation. Separate from the executor so
// that the decision can be tested without a GPU.
#pragma once

#include <vector>

#include "ir/plan.h"
#include "kernels/cpu/planned_step.h"

namespace ds::cuda {

// Fuses `steps` (one per step of a rank of `plan`, in order, with contexts at the
// addresses the kernels will use) in place; returns how many steps were absorbed.
size_t fuseEpilogues(const planpb::Plan& plan, std::vector<cpu::PlannedStep>& steps);

}  // namespace ds::cuda
