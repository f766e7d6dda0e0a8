// CUDA kernels of the element-wise ops (the CPU twins are kernels/cpu/elementwise.cc
// and Exp in grad_misc.cc): unary math on f32/f16/bf16 (Neg also on integers),
// broadcasting binary arithmetic on f32/f16/bf16/i64/i32, Equal, Pow (floats),
// Where (any dtype), Cast, Identity and Dropout (the CPU's counter-based masks,
// bit for bit). 16-bit floats are computed in f32 and rounded once, as the CPU's
// promotion does, so all but Dropout are registered Native16; a 16-bit step they
// cannot take (mixed operand dtypes) returns nullptr and runs promoted.
#include "kernels/cpu/cpu_util.h"
#include "kernels/cpu/layout.h"
#include "kernels/cuda/cuda_util.h"
#include "kernels/dropout_rng.h"

namespace ds::cuda {
namespace {

bool isComputeFloat(DType t) {
  return t == DType::F32 || isSixteenBitFloat(t);
}

CudaKernelFactory unaryFactory(UnaryOp op, bool integers = false) {
  return [op, integers](const KernelContext& ctx, const Device&) {
    DType t = ctx.input(0).dtype();
    bool ok = isComputeFloat(t) || (integers && (t == DType::I64 || t == DType::I32));
    if (!ok) ctx.fail("dtype ", dtypeName(t), " is not supported by the CUDA kernel");
    float alpha = 0.0f, beta = 0.0f;
    if (op == UnaryOp::LeakyRelu) alpha = static_cast<float>(ctx.f("alpha"));
    if (op == UnaryOp::Clip) {
      alpha = static_cast<float>(ctx.f("min"));
      beta = static_cast<float>(ctx.f("max"));
    }
    return launchKernel([op, t, alpha, beta](const KernelContext& c, const Device& dev, void*) {
      unary(op, t, c.input(0).data, c.output(0).data, c.output(0).numel(), alpha, beta, dev.stream);
    });
  };
}

// Clip: floats through the unary kernel, i64/i32 (index arithmetic) by clipInt.
std::unique_ptr<CudaKernel> clipKernel(const KernelContext& ctx, const Device& dev) {
  const DType t = ctx.input(0).dtype();
  if (t != DType::I64 && t != DType::I32) return unaryFactory(UnaryOp::Clip)(ctx, dev);
  return launchKernel(
      [t, lo = ctx.f("min"), hi = ctx.f("max")](const KernelContext& c, const Device& d, void*) {
        clipInt(t, c.input(0).data, c.output(0).data, c.output(0).numel(), lo, hi, d.stream);
      });
}

std::unique_ptr<CudaKernel> geluKernel(const KernelContext& ctx, const Device& dev) {
  const std::string& approximate = ctx.s("approximate");
  if (approximate == "tanh") return unaryFactory(UnaryOp::GeluTanh)(ctx, dev);
  if (approximate != "none") ctx.fail("approximate '", approximate, "' is not supported");
  return unaryFactory(UnaryOp::GeluErf)(ctx, dev);
}

std::unique_ptr<CudaKernel> notKernel(const KernelContext& ctx, const Device&) {
  if (ctx.input(0).dtype() != DType::Bool) ctx.fail("input must be bool");
  return launchKernel([](const KernelContext& c, const Device& dev, void*) {
    logicalNot(c.input(0).as<bool>(), c.output(0).as<bool>(), c.output(0).numel(), dev.stream);
  });
}

std::unique_ptr<CudaKernel> copyKernel(const KernelContext&, const Device&) {
  return launchKernel([](const KernelContext& c, const Device& dev, void*) {
    copyAsync(c.input(0), c.output(0), dev.stream);
  });
}

std::unique_ptr<CudaKernel> reluGradKernel(const KernelContext& ctx, const Device&) {
  DType t = ctx.input(0).dtype();
  if (!isComputeFloat(t)) ctx.fail("dtype ", dtypeName(t), " is not supported by the CUDA kernel");
  return launchKernel([t](const KernelContext& c, const Device& dev, void*) {
    reluGrad(t, c.input(0).data, c.input(1).data, c.output(0).data, c.output(0).numel(),
             dev.stream);
  });
}

std::unique_ptr<CudaKernel> clipGradKernel(const KernelContext& ctx, const Device&) {
  DType t = ctx.input(0).dtype();
  if (!isComputeFloat(t)) ctx.fail("dtype ", dtypeName(t), " is not supported by the CUDA kernel");
  const auto lo = static_cast<float>(ctx.f("min")), hi = static_cast<float>(ctx.f("max"));
  return launchKernel([t, lo, hi](const KernelContext& c, const Device& dev, void*) {
    clipGrad(t, c.input(0).data, c.input(1).data, c.output(0).data, c.output(0).numel(), lo, hi,
             dev.stream);
  });
}

std::unique_ptr<CudaKernel> leakyReluGradKernel(const KernelContext& ctx, const Device&) {
  DType t = ctx.input(0).dtype();
  if (!isComputeFloat(t)) ctx.fail("dtype ", dtypeName(t), " is not supported by the CUDA kernel");
  const auto alpha = static_cast<float>(ctx.f("alpha"));
  return launchKernel([t, alpha](const KernelContext& c, const Device& dev, void*) {
    leakyReluGrad(t, c.input(0).data, c.input(1).data, c.output(0).data, c.output(0).numel(), alpha,
                  dev.stream);
  });
}

std::unique_ptr<CudaKernel> geluGradKernel(const KernelContext& ctx, const Device&) {
  DType t = ctx.input(0).dtype();
  if (!isComputeFloat(t)) ctx.fail("dtype ", dtypeName(t), " is not supported by the CUDA kernel");
  const std::string& approximate = ctx.s("approximate");
  if (approximate != "none" && approximate != "tanh")
    ctx.fail("approximate '", approximate, "' is not supported");
  return launchKernel(
      [t, tanh = approximate == "tanh"](const KernelContext& c, const Device& dev, void*) {
        geluGrad(t, c.input(0).data, c.input(1).data, c.output(0).data, c.output(0).numel(), tanh,
                 dev.stream);
      });
}

CudaKernelFactory binaryFactory(BinaryOp op) {
  return [op](const KernelContext& ctx, const Device&) -> std::unique_ptr<CudaKernel> {
    DType t = ctx.input(0).dtype();
    // A 16-bit operand with one of another dtype (Pow's f32 exponent): both promoted.
    DType u = ctx.input(1).dtype();
    if ((isSixteenBitFloat(t) || isSixteenBitFloat(u)) && u != t) return nullptr;
    bool ok = isComputeFloat(t) || (op != BinaryOp::Pow && (t == DType::I64 || t == DType::I32)) ||
              (op == BinaryOp::Equal && t == DType::Bool);
    if (!ok || ctx.input(1).dtype() != t)
      ctx.fail("dtypes ", dtypeName(t), " and ", dtypeName(ctx.input(1).dtype()),
               " are not supported by the CUDA kernel");
    Walk w =
        broadcastWalk(ctx, ctx.output(0).shape(), {ctx.input(0).shape(), ctx.input(1).shape()});
    // addEpilogueRule accepted a Relu, or a ReluGrad (same-shape operands: contiguous).
    const bool relu = !ctx.epilogue.empty() && ctx.epilogue[0].op == "Relu";
    const bool relu_grad = !ctx.epilogue.empty() && ctx.epilogue[0].op == "ReluGrad";
    if (relu_grad && !(w.rank == 1 && w.strides[1][0] == 1 && w.strides[2][0] == 1))
      ctx.fail("a fused ReluGrad needs same-shape operands");
    return launchKernel(
        [op, t, w, relu, relu_grad](const KernelContext& c, const Device& dev, void*) {
          binary(op, t, c.input(0).data, c.input(1).data, c.output(0).data, w, dev.stream, relu,
                 relu_grad ? c.epilogue[0].operand.data : nullptr);
        });
  };
}

// Add takes a following Relu as its epilogue (ResNet's residual sums) when it
// computes on floats of one dtype, as binaryFactory then runs it natively; or a
// ReluGrad whose dY it computes (the backward's gradient sums at a residual block's
// input, then that block's input Relu), when nothing broadcasts (and the sum is not
// a single element, whose walk collapses to stride 0: not the contiguous kernel).
bool addEpilogueRule(const KernelContext& add, const cpu::Epilogue& next) {
  const DType t = add.output(0).dtype();
  if (!add.epilogue.empty() || !isComputeFloat(t) || add.input(0).dtype() != t ||
      add.input(1).dtype() != t)
    return false;
  if (next.op == "Relu") return true;
  const Shape& y = add.output(0).shape();
  return next.op == "ReluGrad" && next.slot == 0 && next.operand.type == add.output(0).type &&
         add.input(0).shape() == y && add.input(1).shape() == y && add.output(0).numel() > 1;
}

std::unique_ptr<CudaKernel> whereKernel(const KernelContext& ctx, const Device&) {
  // Where's walk operands are c, x, y (the output is contiguous).
  std::vector<std::vector<int64_t>> strides;
  for (size_t k = 0; k < 3; ++k)
    strides.push_back(cpu::broadcastStrides(ctx.input(k).shape(), ctx.output(0).shape()));
  Walk w = makeWalk(ctx, ctx.output(0).shape(), std::move(strides));
  size_t elem = dtypeSize(ctx.input(1).dtype());
  return launchKernel([w, elem](const KernelContext& c, const Device& dev, void*) {
    where(elem, c.input(0).as<bool>(), c.input(1).data, c.input(2).data, c.output(0).data, w,
          dev.stream);
  });
}

std::unique_ptr<CudaKernel> castKernel(const KernelContext& ctx, const Device& dev) {
  DType from = ctx.input(0).dtype(), to = ctx.output(0).dtype();
  if (from == to) return copyKernel(ctx, dev);
  return launchKernel([from, to](const KernelContext& c, const Device& d, void*) {
    cast(from, to, c.input(0).data, c.output(0).data, c.output(0).numel(), d.stream);
  });
}

// Dropout: a copy (mask all true) unless training_mode=1 and ratio > 0. The masks
// are the CPU kernel's, bit for bit (kernels/dropout_rng.h): with the step input
// (training plans) the key follows (run seed, node seed, node, step, micro-step)
// and is computed on the device from the step feed; without it run r of the
// kernel uses (seed attribute, r), r counted on the device. Both keys live on the
// device because a captured CUDA graph replays the kernels' arguments as they were.
class DropoutKernel : public CudaKernel {
 public:
  explicit DropoutKernel(const KernelContext& ctx)
      : ratio_(ctx.f("ratio")),
        seed_(static_cast<uint64_t>(ctx.i("seed"))),
        training_(ctx.i("training_mode") != 0),
        stream_(dropoutStreamOf(ctx)) {
    requireF32(ctx, 0);
    if (!(ratio_ >= 0.0 && ratio_ < 1.0)) ctx.fail("ratio ", ratio_, " must lie in [0, 1)");
    if (ctx.hasInput(1) && !(ctx.input(1).dtype() == DType::I64 && ctx.input(1).numel() == 1))
      ctx.fail("the step input must be an i64 scalar");
    state_ = DeviceBuffer(2 * sizeof(int64_t) + sizeof(uint64_t));
    // With a step input: {last step, micro-step}, no step seen yet; without: {runs}.
    const int64_t start[2] = {ctx.hasInput(1) ? -1 : 0, 0};
    DS_CUDA_CHECK(cudaMemcpy(state_.get(), start, sizeof(start), cudaMemcpyHostToDevice));
  }

  void run(const KernelContext& ctx, const Device& dev, void*) override {
    const int64_t n = ctx.output(0).numel();
    bool* mask = hasOutput(ctx, 1) ? ctx.output(1).as<bool>() : nullptr;
    if (!training_ || ratio_ == 0.0) {
      copyAsync(ctx.input(0), ctx.output(0), dev.stream);
      if (mask) DS_CUDA_CHECK(cudaMemsetAsync(mask, 1, static_cast<size_t>(n), dev.stream));
      return;
    }
    auto* state = state_.as<int64_t>();
    auto* key = reinterpret_cast<uint64_t*>(state + 2);
    if (ctx.hasInput(1))
      dropoutKey(stream_, ctx.input(1).as<int64_t>(), state, key, dev.stream);
    else
      dropoutRunKey(seed_, reinterpret_cast<uint64_t*>(state), key, dev.stream);
    const auto threshold = static_cast<uint64_t>(ratio_ * 4294967296.0);
    dropout(ctx.input(0).as<float>(), ctx.output(0).as<float>(), mask, n, 0, key, threshold,
            static_cast<float>(1.0 / (1.0 - ratio_)), dev.stream);
  }

 private:
  double ratio_;
  uint64_t seed_;
  bool training_;
  DropoutStream stream_;  // the node and rank; step and micro-step come on the device
  DeviceBuffer state_;    // {last step, micro-step} or {runs}, then the key; on the device
};

}  // namespace

void registerElementwiseKernels(CudaKernelRegistry& r) {
  constexpr Precision k16 = Precision::Native16;
  r.add("Relu", unaryFactory(UnaryOp::Relu), k16);
  r.add("ReluGrad", reluGradKernel, k16);
  r.add("ClipGrad", clipGradKernel, k16);
  r.add("LeakyReluGrad", leakyReluGradKernel, k16);
  r.add("GeluGrad", geluGradKernel, k16);
  r.add("LeakyRelu", unaryFactory(UnaryOp::LeakyRelu), k16);
  r.add("Clip", clipKernel, k16);
  r.add("Sigmoid", unaryFactory(UnaryOp::Sigmoid), k16);
  r.add("Tanh", unaryFactory(UnaryOp::Tanh), k16);
  r.add("Erf", unaryFactory(UnaryOp::Erf), k16);
  r.add("Gelu", geluKernel, k16);
  r.add("Sqrt", unaryFactory(UnaryOp::Sqrt), k16);
  r.add("Neg", unaryFactory(UnaryOp::Neg, true), k16);
  r.add("Exp", unaryFactory(UnaryOp::Exp), k16);
  r.add("Log", unaryFactory(UnaryOp::Log), k16);
  r.add("Softplus", unaryFactory(UnaryOp::Softplus), k16);
  r.add("Not", notKernel);
  r.add("Identity", copyKernel, k16);
  r.add("Add", binaryFactory(BinaryOp::Add), k16);
  r.allowEpilogue("Add", addEpilogueRule);
  r.add("Sub", binaryFactory(BinaryOp::Sub), k16);
  r.add("Mul", binaryFactory(BinaryOp::Mul), k16);
  r.add("Div", binaryFactory(BinaryOp::Div), k16);
  r.add("Pow", binaryFactory(BinaryOp::Pow), k16);
  r.add("Equal", binaryFactory(BinaryOp::Equal), k16);
  r.add("Less", binaryFactory(BinaryOp::Less), k16);
  r.add("Greater", binaryFactory(BinaryOp::Greater), k16);
  r.add("Where", whereKernel, k16);  // selects bits: exact for every dtype
  r.add("Cast", castKernel, k16);
  r.add("Dropout", [](const KernelContext& ctx, const Device&) -> std::unique_ptr<CudaKernel> {
    return std::make_unique<DropoutKernel>(ctx);
  });
  // Without broadcasting these walk every operand in the same flat order, so they
  // run on channels-last operands unchanged (kernels/cuda/layout.h).
  for (const char* op :
       {"Relu",     "ReluGrad", "Clip", "ClipGrad", "LeakyReluGrad", "GeluGrad", "LeakyRelu",
        "Sigmoid",  "Tanh",     "Erf",  "Gelu",     "Sqrt",          "Neg",      "Exp",
        "Identity", "Add",      "Sub",  "Mul",      "Div",           "Pow",      "Cast"})
    r.allowChannelsLast(op, cpu::allOperandsWhenSameShape);
}

}  // namespace ds::cuda
