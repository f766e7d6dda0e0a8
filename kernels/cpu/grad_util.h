// Shared pieces of the backward CPU kernels (kernels/cpu/grad_*.cc): the
// per-file registration functions registerTrainingKernels calls, and the forward
// window of a backward step. A backward step's tensors are the forward op's in
// another order (dY is input 0, dX an output), so forwardWindow builds the
// forward shapes into a context that resolveWindow reads, reusing its auto_pad,
// dilation and padding rules unchanged.
#pragma once

#include <vector>

#include "kernels/cpu/kernel.h"
#include "kernels/cpu/window.h"

namespace ds::cpu {

void registerConvGradKernels(CpuKernelRegistry& r);  // grad_conv.cc
void registerPoolGradKernels(CpuKernelRegistry& r);  // grad_pool.cc
void registerNormGradKernels(CpuKernelRegistry& r);  // grad_norm.cc
void registerLossGradKernels(CpuKernelRegistry& r);  // grad_loss.cc
void registerMiscGradKernels(CpuKernelRegistry& r);  // grad_misc.cc

// The window of the forward op whose input 0 is `x` and output 0 is `y`, with the
// step's attributes and the given kernel extent per spatial dim.
inline Window forwardWindow(const KernelContext& ctx, const Shape& x, const Shape& y,
                            const std::vector<int64_t>& kernel) {
  KernelContext fwd;
  fwd.op = ctx.op;
  fwd.node_name = ctx.node_name;
  fwd.attrs = ctx.attrs;
  fwd.inputs = {TensorView{nullptr, {ctx.input(0).dtype(), x}}};
  fwd.outputs = {TensorView{nullptr, {ctx.input(0).dtype(), y}}};
  return resolveWindow(fwd, kernel);
}

}  // namespace ds::cpu
