// CUDA kernels of pooling forward and backward (CPU twins: kernels/cpu/pool.cc,
// grad_pool.cc) and of the optimizer ops SgdStep, AdamStep, LionStep, AdagradStep,
// LambStep, ClipCoef, ZerosLike and Copy (optimizer.cc).
// Pooling windows are resolved with the CPU's window rules (kernels/cpu/window.h)
// and handed to the device as a 3-D window; pooling also runs on f16/bf16 storage
// (Native16: f32 math, one rounding per output). The learning rate and step number
// are read on the device from their feeds, so run() never synchronises.
#include <optional>

#include "kernels/cpu/grad_util.h"
#include "kernels/cpu/window.h"
#include "kernels/cuda/cuda_util.h"

namespace ds::cuda {
namespace {

// The storage dtype of a pooling step: f32 (checked), or f16/bf16 when all its
// tensors have it; nullopt for another 16-bit step, which then runs promoted.
std::optional<DType> poolDType(const KernelContext& ctx) {
  std::optional<DType> t = uniformFloatDType(ctx);
  if (t == DType::F32) requireF32(ctx, 0);
  return t;
}

// `x`: the step's X (or dX), whose layout the pooling follows.
PoolArgs poolArgs(const cpu::Window& window, bool count_include_pad, const TensorView& x) {
  cpu::Window w = window.as3d();
  PoolArgs a;
  a.planes = w.n * w.c_in;
  a.channels = w.c_in;
  a.channels_last = x.channels_last;
  for (size_t d = 0; d < 3; ++d) {
    a.in[d] = w.in[d];
    a.out[d] = w.out[d];
    a.kernel[d] = w.kernel[d];
    a.strides[d] = w.strides[d];
    a.dilations[d] = w.dilations[d];
    a.pad_begin[d] = w.pad_begin[d];
    a.pad_end[d] = w.pad_end[d];
  }
  a.count_include_pad = count_include_pad;
  return a;
}

PoolArgs forwardPoolArgs(const KernelContext& ctx, bool max_pool) {
  cpu::Window w = cpu::resolveWindow(ctx, ctx.ints("kernel_shape"));
  if (w.spatial() > 3) ctx.fail("more than 3 spatial dims");
  return poolArgs(w, !max_pool && ctx.i("count_include_pad") != 0, ctx.input(0));
}

PoolArgs gradPoolArgs(const KernelContext& ctx, bool max_pool) {
  cpu::Window w = cpu::forwardWindow(ctx, ctx.output(0).shape(), ctx.input(0).shape(),
                                     ctx.ints("kernel_shape"));
  if (w.spatial() > 3) ctx.fail("more than 3 spatial dims");
  return poolArgs(w, !max_pool && ctx.i("count_include_pad") != 0, ctx.output(0));
}

template <bool kMax>
std::unique_ptr<CudaKernel> makePool(const KernelContext& ctx, const Device&) {
  const std::optional<DType> t = poolDType(ctx);
  if (!t) return nullptr;
  PoolArgs a = forwardPoolArgs(ctx, kMax);
  if (a.channels_last && !(kMax && isPlainMaxPool2d(a))) ctx.fail("channels-last pooling");
  return launchKernel([a, dtype = *t](const KernelContext& c, const Device& d, void*) {
    pool(a, kMax, dtype, c.input(0).data, c.output(0).data, d.stream);
  });
}

// MaxPoolGrad(dY, X) -> dX and AveragePoolGrad(dY) -> dX.
template <bool kMax>
std::unique_ptr<CudaKernel> makePoolGrad(const KernelContext& ctx, const Device&) {
  const std::optional<DType> t = poolDType(ctx);
  if (!t) return nullptr;
  PoolArgs a = gradPoolArgs(ctx, kMax);
  if (a.channels_last && !(kMax && isPlainMaxPool2d(a))) ctx.fail("channels-last pooling");
  return launchKernel(
      [a, dtype = *t](const KernelContext& c, const Device& d, void* ws) {
        poolGrad(a, kMax, dtype, c.input(0).data, kMax ? c.input(1).data : nullptr,
                 c.output(0).data, ws, d.stream);
      },
      poolGradScratchBytes(a, kMax));
}

// The optional f32 scalar input i on the device, or null when absent.
const float* optionalScalar(const KernelContext& c, size_t i) {
  return c.hasInput(i) ? c.input(i).as<float>() : nullptr;
}

// A step factory's prelude: false for a 16-bit parameter, which runs promoted (no
// kernel of its own); else an f32 parameter, and mixed precision's fused form
// (passes/fuse_optimizer_casts.h): the gradient's type and that of the rounded copy
// (output `rounded`, f32: none), two different 16-bit types failing, as no kernel
// mixes them.
bool readStepTypes(const KernelContext& ctx, size_t rounded, DType* grad_type, DType* round_to) {
  if (isSixteenBitFloat(ctx.input(0).dtype())) return false;
  requireF32(ctx, 0);
  *grad_type = ctx.input(1).dtype();
  *round_to = ctx.outputs.size() > rounded ? ctx.output(rounded).dtype() : DType::F32;
  if (isSixteenBitFloat(*grad_type) && isSixteenBitFloat(*round_to) && *grad_type != *round_to)
    ctx.fail("a ", dtypeName(*grad_type), " gradient rounded to ", dtypeName(*round_to),
             " is not supported");
  return true;
}

// SgdStep(param, grad, lr, step[, velocity][, grad_scale][, momentum][, overflow_check])
// -> param'[, velocity'][, rounded]. The overflow check (fp16 plans' loss scaling) is
// read on the device: a non-finite value skips the step.
std::unique_ptr<CudaKernel> sgdKernel(const KernelContext& ctx, const Device&) {
  SgdArgs a;
  const size_t updated = ctx.hasInput(4) ? 2 : 1;
  if (!readStepTypes(ctx, updated, &a.grad_type, &a.round_to)) return nullptr;
  a.momentum = ctx.f("momentum");
  a.dampening = ctx.f("dampening");
  a.weight_decay = ctx.f("weight_decay");
  a.nesterov = ctx.i("nesterov") != 0;
  return launchKernel([a, updated](const KernelContext& c, const Device& d, void*) {
    const float* buf = c.hasInput(4) ? c.input(4).as<float>() : nullptr;
    float* buf_out = buf ? c.output(1).as<float>() : nullptr;
    void* rounded = c.outputs.size() > updated ? c.output(updated).data : nullptr;
    sgdStep(a, c.input(0).as<float>(), c.input(1).data, c.input(2).as<float>(),
            c.input(3).as<int64_t>(), buf, optionalScalar(c, 5), optionalScalar(c, 6),
            optionalScalar(c, 7), c.output(0).as<float>(), buf_out, rounded, c.input(0).numel(),
            d.stream);
  });
}

// AdamStep(param, grad, lr, step, m, v[, grad_scale][, beta1][, overflow_check])
// -> param', m', v'[, rounded].
std::unique_ptr<CudaKernel> adamKernel(const KernelContext& ctx, const Device&) {
  AdamArgs a;
  if (!readStepTypes(ctx, 3, &a.grad_type, &a.round_to)) return nullptr;
  a.beta1 = ctx.f("beta1");
  a.beta2 = ctx.f("beta2");
  a.eps = ctx.f("eps");
  a.weight_decay = ctx.f("weight_decay");
  a.adam_w_mode = ctx.i("adam_w_mode") != 0;
  a.bias_correction = ctx.i("bias_correction") != 0;
  return launchKernel([a](const KernelContext& c, const Device& d, void*) {
    void* rounded = c.outputs.size() > 3 ? c.output(3).data : nullptr;
    adamStep(a, c.input(0).as<float>(), c.input(1).data, c.input(2).as<float>(),
             c.input(3).as<int64_t>(), c.input(4).as<float>(), c.input(5).as<float>(),
             optionalScalar(c, 6), optionalScalar(c, 7), optionalScalar(c, 8),
             c.output(0).as<float>(), c.output(1).as<float>(), c.output(2).as<float>(), rounded,
             c.input(0).numel(), d.stream);
  });
}

// LionStep(param, grad, lr, step, exp_avg[, grad_scale][, beta1][, overflow_check])
// -> param', exp_avg'[, rounded].
std::unique_ptr<CudaKernel> lionKernel(const KernelContext& ctx, const Device&) {
  LionArgs a;
  if (!readStepTypes(ctx, 2, &a.grad_type, &a.round_to)) return nullptr;
  a.beta1 = ctx.f("beta1");
  a.beta2 = ctx.f("beta2");
  a.weight_decay = ctx.f("weight_decay");
  return launchKernel([a](const KernelContext& c, const Device& d, void*) {
    void* rounded = c.outputs.size() > 2 ? c.output(2).data : nullptr;
    lionStep(a, c.input(0).as<float>(), c.input(1).data, c.input(2).as<float>(),
             c.input(4).as<float>(), optionalScalar(c, 5), optionalScalar(c, 6),
             optionalScalar(c, 7), c.output(0).as<float>(), c.output(1).as<float>(), rounded,
             c.input(0).numel(), d.stream);
  });
}

// AdagradStep(param, grad, lr, step, sum[, grad_scale][, ][, overflow_check])
// -> param', sum'[, rounded].
std::unique_ptr<CudaKernel> adagradKernel(const KernelContext& ctx, const Device&) {
  AdagradArgs a;
  if (!readStepTypes(ctx, 2, &a.grad_type, &a.round_to)) return nullptr;
  a.eps = ctx.f("eps");
  a.weight_decay = ctx.f("weight_decay");
  a.lr_decay = ctx.f("lr_decay");
  a.initial_accumulator_value = ctx.f("initial_accumulator_value");
  return launchKernel([a](const KernelContext& c, const Device& d, void*) {
    void* rounded = c.outputs.size() > 2 ? c.output(2).data : nullptr;
    adagradStep(a, c.input(0).as<float>(), c.input(1).data, c.input(2).as<float>(),
                c.input(3).as<int64_t>(), c.input(4).as<float>(), optionalScalar(c, 5),
                optionalScalar(c, 7), c.output(0).as<float>(), c.output(1).as<float>(), rounded,
                c.input(0).numel(), d.stream);
  });
}

// LambStep(param, grad, lr, step, m, v[, grad_scale][, beta1][, overflow_check])
// -> param', m', v'[, rounded].
std::unique_ptr<CudaKernel> lambKernel(const KernelContext& ctx, const Device&) {
  LambArgs a;
  if (!readStepTypes(ctx, 3, &a.grad_type, &a.round_to)) return nullptr;
  a.beta1 = ctx.f("beta1");
  a.beta2 = ctx.f("beta2");
  a.eps = ctx.f("eps");
  a.weight_decay = ctx.f("weight_decay");
  a.max_coeff = ctx.f("max_coeff");
  a.min_coeff = ctx.f("min_coeff");
  a.bias_correction = ctx.i("bias_correction") != 0;
  a.eps_inside_sqrt = ctx.i("eps_inside_sqrt") != 0;
  return launchKernel(
      [a](const KernelContext& c, const Device& d, void* workspace) {
        void* rounded = c.outputs.size() > 3 ? c.output(3).data : nullptr;
        lambStep(a, c.input(0).as<float>(), c.input(1).data, c.input(2).as<float>(),
                 c.input(3).as<int64_t>(), c.input(4).as<float>(), c.input(5).as<float>(),
                 optionalScalar(c, 6), optionalScalar(c, 7), optionalScalar(c, 8),
                 c.output(0).as<float>(), c.output(1).as<float>(), c.output(2).as<float>(), rounded,
                 c.input(0).numel(), workspace, d.stream);
      },
      lambWorkspaceBytes(ctx.input(0).numel()));
}

std::unique_ptr<CudaKernel> clipCoefKernel(const KernelContext& ctx, const Device&) {
  const double max_norm = ctx.f("max_norm");
  return launchKernel([max_norm](const KernelContext& c, const Device& d, void*) {
    clipCoef(c.input(0).as<float>(), c.output(0).as<float>(), max_norm, d.stream);
  });
}

std::unique_ptr<CudaKernel> zerosLikeKernel(const KernelContext&, const Device&) {
  return launchKernel([](const KernelContext& c, const Device& d, void*) {
    DS_CUDA_CHECK(cudaMemsetAsync(c.output(0).data, 0, c.output(0).bytes(), d.stream));
  });
}

// Copy between device memory and pinned host memory (offload), either way: the
// direction follows from the addresses (unified addressing).
std::unique_ptr<CudaKernel> copyKernel(const KernelContext&, const Device&) {
  return launchKernel([](const KernelContext& c, const Device& d, void*) {
    if (c.output(0).data == c.input(0).data) return;
    DS_CUDA_CHECK(cudaMemcpyAsync(c.output(0).data, c.input(0).data, c.input(0).bytes(),
                                  cudaMemcpyDefault, d.stream));
  });
}

}  // namespace

void registerNnKernels(CudaKernelRegistry& r) {
  constexpr Precision k16 = Precision::Native16;
  r.add("MaxPool", makePool<true>, k16);
  r.add("AveragePool", makePool<false>, k16);
  r.add("MaxPoolGrad", makePoolGrad<true>, k16);
  r.add("AveragePoolGrad", makePoolGrad<false>, k16);
  // 2-D max pooling takes X, Y (MaxPoolGrad: dY, X, dX) channels-last, together.
  r.allowChannelsLast("MaxPool", [](const KernelContext& ctx) -> cpu::OperandGroups {
    if (ctx.input(0).rank() != 4 || ctx.outputs.size() != 1 ||
        !isPlainMaxPool2d(forwardPoolArgs(ctx, true)))
      return {};
    return {{{false, 0}, {true, 0}}};
  });
  r.allowChannelsLast("MaxPoolGrad", [](const KernelContext& ctx) -> cpu::OperandGroups {
    if (ctx.output(0).rank() != 4 || !isPlainMaxPool2d(gradPoolArgs(ctx, true))) return {};
    return {{{false, 0}, {false, 1}, {true, 0}}};
  });
  r.add("SgdStep", sgdKernel, Precision::Native16);          // as AdamStep
  r.add("AdamStep", adamKernel, Precision::Native16);        // its 16-bit gradient and rounded copy
  r.add("LionStep", lionKernel, Precision::Native16);        // as AdamStep
  r.add("AdagradStep", adagradKernel, Precision::Native16);  // as AdamStep
  r.add("LambStep", lambKernel, Precision::Native16);        // as AdamStep
  r.add("ClipCoef", clipCoefKernel);
  r.add("ZerosLike", zerosLikeKernel, Precision::Native16);  // bytes only: any dtype
  r.add("Copy", copyKernel, Precision::Native16);
}

}  // namespace ds::cuda
