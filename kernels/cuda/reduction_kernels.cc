// CUDA kernels of the reduction-shaped ops (CPU twins: kernels/cpu/reduction.cc,
// norm.cc, loss.cc, grad_norm.cc, grad_loss.cc, GlobalAveragePool in pool.cc):
// ReduceSum/Mean/SumSquare, (Log)Softmax, SoftmaxGrad, BatchNormalization(Grad),
// LayerNormalization(Grad), GlobalAveragePool and SoftmaxCrossEntropyLoss(Grad), all f32 with
// double accumulation. Per-step scratch (statistics) lives in the shared workspace. The sums
// (ReduceSum/Mean, GlobalAveragePool), (Log)Softmax(Grad) and the norms also run on f16 and bf16
// storage (Native16) with the f32 kernels' math and one rounding per output (the norms: 16-bit X,
// Y, dY, dX with the f32 parameters and statistics mixed precision gives them); the losses read
// 16-bit scores with an f32 loss.
#include <algorithm>
#include <array>
#include <initializer_list>
#include <optional>

#include "ir/ops/shape_helpers.h"
#include "kernels/cpu/layout.h"
#include "kernels/cpu/nn.h"
#include "kernels/cpu/reduce_shape.h"
#include "kernels/cuda/cuda_util.h"

namespace ds::cuda {
namespace {

// The reduction's blocks or offset tables, as the CPU kernels compute them.
using ReduceGeometry = cpu::ReduceShape;
ReduceGeometry reduceGeometry(const Shape& x, const std::vector<bool>& reduced) {
  return cpu::reduceShape(x, reduced);
}

// The storage dtype of a sum or softmax: f32 (checked), or f16/bf16 when input and
// output share it; nullopt for another 16-bit step, which then runs promoted.
std::optional<DType> storageDType(const KernelContext& ctx) {
  const DType t = ctx.input(0).dtype();
  if (!isSixteenBitFloat(t) && !isSixteenBitFloat(ctx.output(0).dtype())) {
    requireF32(ctx, 0);
    return DType::F32;
  }
  if (ctx.output(0).dtype() != t) return std::nullopt;
  return t;
}

// ReduceSum (kind Sum), ReduceMean, ReduceSumSquare (the squares summed as read).
enum class Reduction { Sum, Mean, SumSquare };

CudaKernelFactory reduceFactory(Reduction kind) {
  return [kind](const KernelContext& ctx, const Device&) -> std::unique_ptr<CudaKernel> {
    const std::vector<int64_t>& axes = ctx.ints("axes");
    const int64_t rank = ctx.input(0).rank();
    const bool noop = axes.empty() && ctx.i("noop_with_empty_axes") != 0;
    const bool square = kind == Reduction::SumSquare;
    const DType out = ctx.output(0).dtype();
    // A 16-bit sum into f32 (`to`) reads the 16-bit input itself.
    const bool widening = out == DType::F32 && isSixteenBitFloat(ctx.input(0).dtype());
    if (noop && !square && !widening)
      return launchKernel([](const KernelContext& c, const Device& d, void*) {
        copyAsync(c.input(0), c.output(0), d.stream);
      });
    const std::optional<DType> t = widening ? ctx.input(0).dtype() : storageDType(ctx);
    if (!t) return nullptr;
    const DType dtype = *t;
    // Nothing reduced (ReduceSumSquare's noop: each element squared) when noop.
    std::vector<bool> reduced(static_cast<size_t>(rank), axes.empty() && !noop);
    for (int64_t a : axes) {
      if (a < -rank || a >= rank) ctx.fail("axis ", a, " is out of range for rank ", rank);
      reduced[a < 0 ? a + rank : a] = true;
    }
    ReduceGeometry g = reduceGeometry(ctx.input(0).shape(), reduced);
    if (!g.general && g.reduced == 1) {  // one element per output: a thread each, not a block
      g.inner *= g.outer;
      g.outer = 1;
    }
    const double scale = kind == Reduction::Mean ? 1.0 / static_cast<double>(g.reduced) : 1.0;
    if (!g.general) {
      const size_t scratch = reduceScratchDoubles(g.outer, g.reduced, g.inner);
      return launchKernel(
          [g, scale, dtype, out, square](const KernelContext& c, const Device& d, void* ws) {
            reduceBlocks(dtype, out, c.input(0).data, c.output(0).data, g.outer, g.reduced, g.inner,
                         scale, static_cast<double*>(ws), d.stream, square);
          },
          scratch * sizeof(double));
    }
    auto base = std::make_shared<DeviceBuffer>(DeviceBuffer::upload(g.base));
    auto offsets = std::make_shared<DeviceBuffer>(DeviceBuffer::upload(g.offsets));
    const auto outputs = static_cast<int64_t>(g.base.size());
    return launchKernel([base, offsets, outputs, g, scale, dtype, out, square](
                            const KernelContext& c, const Device& d, void*) {
      reduceTable(dtype, out, c.input(0).data, c.output(0).data, base->as<int64_t>(), outputs,
                  offsets->as<int64_t>(), g.reduced, scale, d.stream, square);
    });
  };
}

std::unique_ptr<CudaKernel> globalAveragePoolKernel(const KernelContext& ctx, const Device&) {
  const std::optional<DType> t = storageDType(ctx);
  if (!t) return nullptr;
  const DType dtype = *t;
  const Shape& s = ctx.input(0).shape();
  int64_t planes = s[0] * s[1], size = planes == 0 ? 0 : ctx.input(0).numel() / planes;
  // Plain: [N·C, H·W] rows; channels-last: [N, H·W, C], the middle axis reduced.
  const int64_t outer = ctx.input(0).channels_last ? s[0] : planes;
  const int64_t inner = ctx.input(0).channels_last ? s[1] : 1;
  const size_t scratch = reduceScratchDoubles(outer, size, inner);
  return launchKernel(
      [outer, size, inner, dtype](const KernelContext& c, const Device& d, void* ws) {
        reduceBlocks(dtype, dtype, c.input(0).data, c.output(0).data, outer, size, inner,
                     1.0 / static_cast<double>(size), static_cast<double*>(ws), d.stream);
      },
      scratch * sizeof(double));
}

// Input 0 as [outer, n, inner] around the step's "axis" attribute.
std::array<int64_t, 3> aroundAxis(const KernelContext& ctx) {
  const Shape& x = ctx.input(0).shape();
  int64_t rank = ctx.input(0).rank(), axis = ctx.i("axis");
  if (axis < -rank || axis >= rank) ctx.fail("axis ", axis, " is out of range for rank ", rank);
  if (axis < 0) axis += rank;
  std::array<int64_t, 3> g = {1, 1, 1};
  for (int64_t d = 0; d < rank; ++d) g[d < axis ? 0 : d == axis ? 1 : 2] *= x[d];
  return g;
}

CudaKernelFactory softmaxFactory(bool log) {
  return [log](const KernelContext& ctx, const Device&) -> std::unique_ptr<CudaKernel> {
    const std::optional<DType> t = storageDType(ctx);
    if (!t) return nullptr;
    const DType dtype = *t;
    const auto [outer, n, inner] = aroundAxis(ctx);
    int64_t mask_rows = 0;
    if (ctx.hasInput(1)) {
      if (ctx.input(1).dtype() != dtype) return nullptr;  // mixed 16-bit: promoted
      mask_rows = softmaxMaskRows(ctx.input(0).shape(), ctx.input(1).shape());
      if (mask_rows == 0 || inner != 1) ctx.fail("the mask does not fit the input");
    }
    return launchKernel([=](const KernelContext& c, const Device& d, void*) {
      softmax(log, dtype, c.input(0).data, mask_rows ? c.input(1).data : nullptr, mask_rows,
              c.output(0).data, outer, n, inner, d.stream);
    });
  };
}

// SoftmaxGrad(dY, Y) -> dX.
std::unique_ptr<CudaKernel> softmaxGradKernel(const KernelContext& ctx, const Device&) {
  const std::optional<DType> t = storageDType(ctx);
  if (!t) return nullptr;
  const DType dtype = *t;
  const auto [outer, n, inner] = aroundAxis(ctx);
  return launchKernel([=](const KernelContext& c, const Device& d, void*) {
    softmaxGrad(dtype, c.input(0).data, c.input(1).data, c.output(0).data, outer, n, inner,
                d.stream);
  });
}

const float* optionalF32(const KernelContext& ctx, size_t i) {
  return ctx.hasInput(i) ? ctx.input(i).as<float>() : nullptr;
}

float* optionalOutput(const KernelContext& ctx, size_t i) {
  return hasOutput(ctx, i) ? ctx.output(i).as<float>() : nullptr;
}

// The storage dtype of a normalisation's data tensors (the inputs `data_inputs`: X,
// or dY and X (and a Relu's output); output 0: Y or dX) when every other tensor (parameters,
// statistics, their gradients) is f32: F32 for a step without 16-bit tensors (the
// f32 path checks its own dtypes), f16 or bf16 when all data tensors have it;
// nullopt for any other mix with 16 bits (16-bit parameters, say), run promoted.
std::optional<DType> normStorageDType(const KernelContext& ctx,
                                      std::initializer_list<size_t> data_inputs) {
  const DType t = ctx.output(0).dtype();
  bool any16 = false, fits = isSixteenBitFloat(t);
  auto check = [&](const TensorView& v, bool data) {
    if (!v.present()) return;
    any16 = any16 || isSixteenBitFloat(v.dtype());
    fits = fits && v.dtype() == (data ? t : DType::F32);
  };
  for (size_t i = 0; i < ctx.inputs.size(); ++i)
    check(ctx.inputs[i], std::find(data_inputs.begin(), data_inputs.end(), i) != data_inputs.end());
  for (size_t i = 0; i < ctx.outputs.size(); ++i) check(ctx.outputs[i], i == 0);
  if (!any16) return DType::F32;
  return fits ? std::optional<DType>(t) : std::nullopt;
}

// X as [n, c, inner] with the channel in the middle: [N, C, H·W], or for a
// channels-last X [N·H·W, C, 1] (the kernels' column mode).
BatchNormArgs batchNormGeometry(const KernelContext& ctx, const TensorView& x) {
  const Shape& s = x.shape();
  BatchNormArgs a;
  a.n = s[0];
  a.c = s[1];
  a.inner = a.n * a.c == 0 ? 0 : x.numel() / (a.n * a.c);
  if (x.channels_last) {
    a.n *= a.inner;
    a.inner = 1;
  }
  // Planes put the channel on the grid's y dimension.
  if (a.inner > 1 && a.c > 65535)
    ctx.fail(a.c, " channels with spatial dims: the CUDA kernels take at most 65535");
  return a;
}

// BatchNormalization(X, scale, B, mean, var) -> Y[, running mean, running var].
std::unique_ptr<CudaKernel> batchNormKernel(const KernelContext& ctx, const Device&) {
  const std::optional<DType> t = normStorageDType(ctx, {0});
  if (!t && !ctx.epilogue.empty()) ctx.fail("a fused epilogue needs the native kernel");
  if (!t) return nullptr;
  if (*t == DType::F32)
    for (size_t i = 0; i < 5; ++i) requireF32(ctx, i);
  const DType dtype = *t;
  BatchNormArgs a = batchNormGeometry(ctx, ctx.input(0));
  a.eps = ctx.f("epsilon");
  a.momentum = ctx.f("momentum");
  // batchNormEpilogueRule accepted [Relu], [Add] or [Add, Relu].
  for (const cpu::Epilogue& e : ctx.epilogue) (e.op == "Relu" ? a.relu : a.residual) = true;
  a.unbiased_running_var = ctx.i("unbiased_running_var") != 0;
  const bool training = ctx.i("training_mode") != 0;
  return launchKernel(
      [a, training, dtype](const KernelContext& c, const Device& d, void* ws) {
        batchNormForward(a, training, dtype, c.input(0).data, c.input(1).as<float>(),
                         c.input(2).as<float>(), c.input(3).as<float>(), c.input(4).as<float>(),
                         a.residual ? c.epilogue[0].operand.data : nullptr, c.output(0).data,
                         optionalOutput(c, 1), optionalOutput(c, 2), static_cast<double*>(ws),
                         d.stream);
      },
      batchNormScratchDoubles(a, false) * sizeof(double));
}

// BatchNormalization takes a following Relu, or a residual Add (its other operand
// of Y's shape and dtype: no broadcast) and then optionally a Relu, as its epilogue
// when it runs natively: ResNet's bn -> add -> relu is one pass over the activation.
bool batchNormEpilogueRule(const KernelContext& bn, const cpu::Epilogue& next) {
  if (!normStorageDType(bn, {0}).has_value()) return false;
  const std::vector<cpu::Epilogue>& done = bn.epilogue;
  if (next.op == "Relu") return done.empty() || (done.size() == 1 && done[0].op == "Add");
  return next.op == "Add" && done.empty() && next.operand.data != nullptr &&
         next.operand.type == bn.output(0).type &&
         next.operand.channels_last == bn.output(0).channels_last;
}

// BatchNormalizationGrad(dY, X, scale[, R]) -> dX, dScale, dBias.
std::unique_ptr<CudaKernel> batchNormGradKernel(const KernelContext& ctx, const Device&) {
  const std::optional<DType> t = normStorageDType(ctx, {0, 1, 3});
  if (!t) return nullptr;
  if (*t == DType::F32)
    for (size_t i = 0; i < ctx.inputs.size(); ++i)
      if (ctx.hasInput(i)) requireF32(ctx, i);
  const DType dtype = *t;
  BatchNormArgs a = batchNormGeometry(ctx, ctx.input(1));
  a.eps = ctx.f("epsilon");
  return launchKernel(
      [a, dtype](const KernelContext& c, const Device& d, void* ws) {
        batchNormBackward(a, dtype, c.input(0).data, c.input(1).data, c.input(2).as<float>(),
                          c.hasInput(3) ? c.input(3).data : nullptr, c.output(0).data,
                          c.output(1).as<float>(), c.output(2).as<float>(),
                          static_cast<double*>(ws), d.stream);
      },
      batchNormScratchDoubles(a, true) * sizeof(double));
}

// Rows and row length of a LayerNormalization over [axis, rank); scale and bias
// must cover the whole normalised shape (no broadcasting on the GPU yet).
std::pair<int64_t, int64_t> layerNormRows(const KernelContext& ctx, const TensorView& x,
                                          const TensorView& scale, const TensorView* bias) {
  const Shape& s = x.shape();
  int64_t axis = ctx.i("axis");
  if (axis < 0) axis += static_cast<int64_t>(s.size());
  int64_t inner = 1;
  for (size_t d = static_cast<size_t>(axis); d < s.size(); ++d) inner *= s[d];
  if (scale.numel() != inner || (bias && bias->present() && bias->numel() != inner))
    ctx.fail("scale and bias must have the normalised shape's ", inner,
             " elements (broadcast scale is not supported by the CUDA kernel)");
  return {inner == 0 ? 0 : x.numel() / inner, inner};
}

std::unique_ptr<CudaKernel> layerNormKernel(const KernelContext& ctx, const Device&) {
  const std::optional<DType> t = normStorageDType(ctx, {0});
  if (!t) return nullptr;
  if (*t == DType::F32) {
    requireF32(ctx, 0);
    requireF32(ctx, 1);
  }
  const DType dtype = *t;
  TensorView none;
  auto [outer, inner] =
      layerNormRows(ctx, ctx.input(0), ctx.input(1), ctx.hasInput(2) ? &ctx.input(2) : &none);
  const double eps = ctx.f("epsilon");
  return launchKernel([outer, inner, eps, dtype](const KernelContext& c, const Device& d, void*) {
    layerNormForward(dtype, c.input(0).data, c.input(1).as<float>(), optionalF32(c, 2),
                     c.output(0).data, optionalOutput(c, 1), optionalOutput(c, 2), outer, inner,
                     eps, d.stream);
  });
}

// LayerNormalizationGrad(dY, X, Scale) -> dX, dScale, dBias.
std::unique_ptr<CudaKernel> layerNormGradKernel(const KernelContext& ctx, const Device&) {
  const std::optional<DType> t = normStorageDType(ctx, {0, 1});
  if (!t) return nullptr;
  if (*t == DType::F32)
    for (size_t i = 0; i < 3; ++i) requireF32(ctx, i);
  const DType dtype = *t;
  auto [outer, inner] = layerNormRows(ctx, ctx.input(1), ctx.input(2), nullptr);
  const double eps = ctx.f("epsilon");
  return launchKernel(
      [outer, inner, eps, dtype](const KernelContext& c, const Device& d, void* ws) {
        layerNormBackward(dtype, c.input(0).data, c.input(1).data, c.input(2).as<float>(),
                          c.output(0).data, c.output(1).as<float>(), c.output(2).as<float>(), outer,
                          inner, eps, static_cast<double*>(ws), d.stream);
      },
      layerNormGradScratchDoubles(outer, inner) * sizeof(double));
}

CrossEntropyArgs crossEntropyArgs(const KernelContext& ctx, const TensorView& scores,
                                  const TensorView& labels) {
  const Shape& s = scores.shape();
  CrossEntropyArgs a;
  a.n = s[0];
  a.c = s[1];
  a.d = a.n * a.c == 0 ? 0 : scores.numel() / (a.n * a.c);
  a.classes = cpu::paddedClasses(ctx, a.c);
  a.ignore_index = ctx.i("ignore_index");
  const std::string& red = ctx.s("reduction");
  a.reduction = red == "none" ? 0 : red == "sum" ? 1 : 2;
  a.labels32 = labels.dtype() == DType::I32;
  if (!a.labels32 && labels.dtype() != DType::I64) ctx.fail("labels must be i32 or i64");
  return a;
}

// The scores' dtype: f32 (checked), or f16/bf16 with an f32 loss and weights, as
// mixed precision leaves them (ir/ops/reduction.cc); `loss_side` the f32 operands.
DType scoresDType(const KernelContext& ctx, const TensorView& scores,
                  std::initializer_list<const TensorView*> loss_side) {
  const DType t = scores.dtype();
  if (!isSixteenBitFloat(t) && t != DType::F32)
    ctx.fail("scores have dtype ", dtypeName(t), "; the CUDA kernel supports f32, f16 and bf16");
  for (const TensorView* v : loss_side)
    if (v->present() && v->dtype() != DType::F32)
      ctx.fail("loss-side operands must be f32, one is ", dtypeName(v->dtype()));
  return t;
}

// SoftmaxCrossEntropyLoss(scores, labels[, weights]) -> loss[, log_prob].
std::unique_ptr<CudaKernel> crossEntropyKernel(const KernelContext& ctx, const Device&) {
  TensorView none;
  const DType t =
      scoresDType(ctx, ctx.input(0), {&ctx.output(0), ctx.hasInput(2) ? &ctx.input(2) : &none});
  CrossEntropyArgs a = crossEntropyArgs(ctx, ctx.input(0), ctx.input(1));
  return launchKernel(
      [a, t](const KernelContext& c, const Device& d, void* ws) {
        crossEntropy(a, t, c.input(0).data, c.input(1).data, optionalF32(c, 2),
                     c.output(0).as<float>(), hasOutput(c, 1) ? c.output(1).data : nullptr,
                     static_cast<double*>(ws), d.stream);
      },
      2 * static_cast<size_t>(a.n * a.d) * sizeof(double));
}

// SoftmaxCrossEntropyLossGrad(dLoss, scores, labels[, weights]) -> dScores.
std::unique_ptr<CudaKernel> crossEntropyGradKernel(const KernelContext& ctx, const Device&) {
  TensorView none;
  const DType t =
      scoresDType(ctx, ctx.input(1), {&ctx.input(0), ctx.hasInput(3) ? &ctx.input(3) : &none});
  CrossEntropyArgs a = crossEntropyArgs(ctx, ctx.input(1), ctx.input(2));
  return launchKernel(
      [a, t](const KernelContext& c, const Device& d, void* ws) {
        crossEntropyGrad(a, t, c.input(0).as<float>(), c.input(1).data, c.input(2).data,
                         optionalF32(c, 3), c.output(0).data, static_cast<double*>(ws), d.stream);
      },
      sizeof(double));
}

}  // namespace

void registerReductionKernels(CudaKernelRegistry& r) {
  constexpr Precision k16 = Precision::Native16;
  r.add("ReduceSum", reduceFactory(Reduction::Sum), k16);
  r.add("ReduceMean", reduceFactory(Reduction::Mean), k16);
  r.add("ReduceSumSquare", reduceFactory(Reduction::SumSquare), k16);
  r.add("Softmax", softmaxFactory(false), k16);
  r.add("LogSoftmax", softmaxFactory(true), k16);
  r.add("SoftmaxGrad", softmaxGradKernel, k16);
  r.add("GlobalAveragePool", globalAveragePoolKernel, k16);
  r.add("BatchNormalization", batchNormKernel, k16);
  r.allowEpilogue("BatchNormalization", batchNormEpilogueRule);
  r.add("BatchNormalizationGrad", batchNormGradKernel, k16);
  // dY, X, the optional Relu output R and dX share X's layout.
  r.allowChannelsLast("BatchNormalization", cpu::dataInOutTogether);
  r.allowChannelsLast("BatchNormalizationGrad", [](const KernelContext& ctx) -> cpu::OperandGroups {
    if (ctx.input(1).rank() != 4) return {};
    std::vector<cpu::Operand> group = {{false, 0}, {false, 1}, {true, 0}};
    if (ctx.hasInput(3)) group.push_back({false, 3});
    return {group};
  });
  r.allowChannelsLast("GlobalAveragePool", [](const KernelContext& ctx) -> cpu::OperandGroups {
    if (ctx.input(0).rank() != 4) return {};
    return {{{false, 0}}};  // Y [N, C, 1, 1] is the same bytes in both layouts
  });
  r.add("LayerNormalization", layerNormKernel, k16);
  r.add("LayerNormalizationGrad", layerNormGradKernel, k16);
  r.add("SoftmaxCrossEntropyLoss", crossEntropyKernel, k16);
  r.add("SoftmaxCrossEntropyLossGrad", crossEntropyGradKernel, k16);
}

}  // namespace ds::cuda
