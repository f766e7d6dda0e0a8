#include "kernels/cpu/promote16.h"

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "ir/optimizer_ops.h"
#include "ir/tensor.h"

namespace ds::cpu {
namespace {

bool is16BitFloat(DType t) {
  return t == DType::F16 || t == DType::BF16;
}

bool movesBytesOnly(const std::string& op) {
  static const std::set<std::string> ops = {
      "Cast",      "Reshape",       "Flatten",   "Squeeze", "Unsqueeze", "Transpose", "Concat",
      "Split",     "Slice",         "Gather",    "Expand",  "Identity",  "ZerosLike", "AllReduce",
      "AllGather", "ReduceScatter", "Broadcast", "Shape",   "Copy"};
  return ops.count(op) != 0;
}

// fn(begin, end) over [0, n), split between the threads when n is large.
template <typename F>
void convertInChunks(int64_t n, F&& fn) {
  constexpr int64_t kChunk = 65536;
#pragma omp parallel for if (n > kChunk)
  for (int64_t begin = 0; begin < n; begin += kChunk) fn(begin, std::min(n, begin + kChunk));
}

void widen(const TensorView& from, float* to) {
  const auto* bits = from.as<uint16_t>();
  const bool half = from.dtype() == DType::F16;
  const int64_t n = from.numel();
  if (half) {
    convertInChunks(n, [&](int64_t begin, int64_t end) {
      halvesToFloats(bits + begin, to + begin, end - begin);
    });
    return;
  }
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) to[i] = bf16ToFloat(bits[i]);
}

void round(const float* from, const TensorView& to) {
  auto* bits = to.as<uint16_t>();
  const bool half = to.dtype() == DType::F16;
  const int64_t n = to.numel();
  if (half) {
    convertInChunks(n, [&](int64_t begin, int64_t end) {
      floatsToHalves(from + begin, bits + begin, end - begin);
    });
    return;
  }
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) bits[i] = floatToBf16(from[i]);
}

class PromotedKernel : public CpuKernel {
 public:
  PromotedKernel(const KernelContext& ctx, const CpuKernelFactory& factory, void* scratch)
      : inner_ctx_(ctx) {
    auto* at = static_cast<uint8_t*>(scratch);
    auto promote = [&](TensorView& v, std::vector<std::pair<TensorView, float*>>* list) {
      if (!v.present() || !is16BitFloat(v.dtype())) return;
      auto* f32 = reinterpret_cast<float*>(at);
      at += promotedCopyBytes(v);
      list->push_back({v, f32});
      v.data = f32;
      v.type.dtype = DType::F32;
    };
    for (TensorView& v : inner_ctx_.inputs) promote(v, &inputs_);
    for (TensorView& v : inner_ctx_.outputs) promote(v, &outputs_);
    inner_ = factory(inner_ctx_);
  }

  void run(const KernelContext&) override {
    for (const auto& [view, f32] : inputs_) widen(view, f32);
    inner_->run(inner_ctx_);
    for (const auto& [view, f32] : outputs_) round(f32, view);
  }

 private:
  KernelContext inner_ctx_;
  std::vector<std::pair<TensorView, float*>> inputs_, outputs_;  // 16-bit view, f32 copy
  std::unique_ptr<CpuKernel> inner_;
};

// Steps whose kernels read and write their 16-bit operands themselves: mixed
// precision's fused optimizer steps of f32 masters (optimizer.cc; a 16-bit parameter's
// step runs promoted like any other) and sums of 16-bit values into f32 (the
// reductions' `to`, reduction.cc: the gradient norm).
bool handles16BitItself(const KernelContext& ctx) {
  const std::string& op = ctx.op;
  if (isOptimizerStep(op)) return ctx.input(0).dtype() == DType::F32;
  const bool sum = op == "ReduceSum" || op == "ReduceMean" || op == "ReduceSumSquare";
  return sum && is16BitFloat(ctx.input(0).dtype()) && ctx.output(0).dtype() == DType::F32;
}

}  // namespace

bool needsPromotion(const KernelContext& ctx) {
  if (movesBytesOnly(ctx.op) || handles16BitItself(ctx)) return false;
  for (const auto* list : {&ctx.inputs, &ctx.outputs})
    for (const TensorView& v : *list)
      if (v.present() && is16BitFloat(v.dtype())) return true;
  return false;
}

size_t promotedCopyBytes(const TensorView& v) {
  constexpr size_t kAlignment = 256;
  const size_t bytes = static_cast<size_t>(v.numel()) * sizeof(float);
  return (bytes + kAlignment - 1) / kAlignment * kAlignment;
}

size_t promotionScratchBytes(const KernelContext& ctx) {
  size_t bytes = 0;
  for (const auto* list : {&ctx.inputs, &ctx.outputs})
    for (const TensorView& v : *list)
      if (v.present() && is16BitFloat(v.dtype())) bytes += promotedCopyBytes(v);
  return bytes;
}

std::unique_ptr<CpuKernel> promotedKernel(const KernelContext& ctx,
                                          const CpuKernelFactory& f32_factory, void* scratch) {
  return std::make_unique<PromotedKernel>(ctx, f32_factory, scratch);
}

}  // namespace ds::cpu
