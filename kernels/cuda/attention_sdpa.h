// FusedAttention(Grad) as cuDNN's fused flash attention (its SDPA graph, built with
// the cuDNN frontend's C++ graph API): the scores never leave the SMs. Q, K, V, Y
// and their gradients are read and written where they lie, [batch, T, heads, head]
// given to cuDNN as [batch, heads, T, head] with strides; L is cuDNN's softmax
// statistics (natural-log log-sum-exp of the scaled scores, [batch, heads, Tq, 1]),
// the same as the CPU kernel's. The backward is cuDNN's deterministic algorithm
// unless the run asked for the fastest (Device::benchmark, dsrun --cudnn-benchmark),
// as convolutions' algorithms are chosen.
#pragma once

#include <memory>
#include <string>

#include "kernels/cuda/kernel.h"

namespace ds::cuda {

// The step's kernel on cuDNN, or nullptr where cuDNN cannot run it: f32 operands,
// shapes cuDNN's engines do not support, no cuDNN handle (no GPU), or a build
// without the cuDNN frontend; `why`, if given, then says which. The caller then
// runs its cuBLAS kernels. Graphs are built once per geometry and handle.
std::unique_ptr<CudaKernel> cudnnAttentionKernel(const KernelContext& ctx, const Device& dev,
                                                 bool backward, std::string* why = nullptr);

// Forgets the graphs built on `handle`; call before destroying it (a later handle
// may get its address, and cuDNN's plans keep the handle they were built with).
void releaseCudnnAttentionGraphs(cudnnHandle_t handle);

}  // namespace ds::cuda
