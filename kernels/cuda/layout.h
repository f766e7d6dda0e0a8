// Channels-last (NHWC) activations on the CUDA backend. cuDNN's tensor-core
// convolutions read and write NHWC; given NCHW tensors they transpose in and out
// around every convolution, which PyTorch avoids with its channels_last memory
// format. The executor (ExecutorOptions::cuda_channels_last, dsrun --channels-last)
// makes the CPU backend's decision (kernels/cpu/layout.h) with the CUDA kernels'
// rules (CudaKernelRegistry::allowChannelsLast) over 16-bit 4-D tensors: a tensor
// is NHWC when every step that touches it accepts that. Convolutions take each data
// operand in either layout (converting the odd one through their workspace, and
// their NCHW filters to NHWC); BatchNorm and its gradient, element-wise ops,
// GlobalAveragePool and Expand take them as they come. f32 stays plain: its FMA
// convolutions gain nothing from NHWC. Feeds, outputs and persistent tensors stay
// plain, so the plan and its results are those of the plain layout, up to the
// order of cuDNN's sums.
#pragma once

#include <vector>

#include "ir/plan.h"
#include "kernels/cpu/planned_step.h"

namespace ds::cuda {

// Sets TensorView::channels_last on every step's operands (`steps`: one per step
// of a rank of `plan`, in order); returns how many tensors are NHWC.
size_t chooseChannelsLast(const planpb::Plan& plan, std::vector<cpu::PlannedStep>& steps);

// Strides of a 4-D view in its logical [N, C, H, W] order: NHWC's when it is
// channels-last, the packed row-major ones otherwise.
std::vector<int64_t> physicalStrides(const cpu::TensorView& v);

}  // namespace ds::cuda
