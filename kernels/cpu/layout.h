// The CPU backend's choice of physical layout. oneDNN's fast convolutions read and
// write channels-last ([N, H, W, C]) activations; a plan's tensors are NCHW, so a
// convolution between plain tensors pays a reorder in and out — on ResNet-50 more
// time than the convolutions' own arithmetic on some layers (bench/RESULTS.md).
// The executor therefore stores an intermediate 4-D f32 tensor channels-last when
// every step that touches it accepts that (CpuKernelRegistry::allowChannelsLast),
// and plain otherwise. Feeds, outputs and persistent tensors are always plain, so
// the choice is invisible outside the backend: the plan and its results are the
// same, only the bytes in the arena between two kernels differ.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "kernels/cpu/planned_step.h"

namespace ds::cpu {

// Which kernels take which operands channels-last, and which tensors are worth it:
// by default the CPU kernels' rules and f32 tensors (layoutMatters); the CUDA
// backend passes its own (kernels/cuda/layout.h).
struct LayoutPolicy {
  std::function<const ChannelsLastRule*(const std::string& op)> rule_of;
  std::function<bool(const TensorView&)> matters;
};

// Per plan tensor (`intermediate.size()` of them): whether it is stored
// channels-last. Only tensors with intermediate[t] (in the arena, neither a feed nor
// an output) that are
// f32, 4-D and have more than one spatial element are considered (with one,
// both layouts are the same bytes); such a tensor is chosen when the rule of every
// step that reads or writes it puts it in a group, and every tensor sharing a
// group with it, transitively, is chosen too.
std::vector<bool> chooseChannelsLast(const std::vector<PlannedStep>& steps,
                                     const std::vector<bool>& intermediate,
                                     const LayoutPolicy& policy = {});

// Whether a view is 4-D f32 with more than one spatial element.
bool layoutMatters(const TensorView& v);
// Whether a view is 4-D with more than one spatial element (any dtype).
bool hasSpatialLayout(const TensorView& v);

// Copies a channels-last [N, H, W, C] f32 tensor of logical shape `nchw` into
// plain NCHW order.
void channelsLastToPlain(const float* src, float* dst, const Shape& nchw);

// Rules for CpuKernelRegistry::allowChannelsLast.
// Input 0 and output 0 chosen independently (Conv, MaxPool): 4-D input only.
OperandGroups dataInOutSeparately(const KernelContext& ctx);
// Input 0 and output 0 together (BatchNormalization).
OperandGroups dataInOutTogether(const KernelContext& ctx);
// Every input and output together when all have the same shape (element-wise ops
// without broadcasting).
OperandGroups allOperandsWhenSameShape(const KernelContext& ctx);

}  // namespace ds::cpu
