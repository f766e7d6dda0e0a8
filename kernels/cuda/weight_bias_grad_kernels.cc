// WeightBiasGrad(A, B){bias_input} -> (Y, S) on the GPU (CPU twin: kernels/cpu/matmul.cc):
// a linear layer's weight and bias gradients over its rows (passes/fuse_bias_grad.h).
// A [k, m] and B [k, n] share one float dtype; Y [m, n] = Aᵀ·B, which is what
// MatMul{transA = 1} computes, and S is the sum of the k rows of input `bias_input`
// ([m] for A, [n] for B), which is what ReduceSum{axes = [0]} computes. The rows
// summed are a layer's output gradient dY ([tokens, features], k the batch's tokens).
// Summing them inside the product, which streams dY through the SMs anyway, saves the
// bias gradient its own pass over dY in global memory.
//
// f16/bf16 run as one cuBLASLt matmul whose bias-gradient epilogue writes S, with f32
// compute and accumulation and one rounding of Y (S's accumulator is cuBLASLt's, not
// documented; the op cases compare S with the CPU's at 16-bit tolerance). Transformer Engine and
// apex compute a linear layer's wgrad and dbias the same way. Row-major Y = Aᵀ·B is the
// column-major product Yᵀ (n x m) = B·Aᵀ of the stored matrices: cuBLAS's A is our B
// (column-major n x k, not transposed) and cuBLAS's B is our A (column-major m x k,
// transposed). cuBLASLt sums A over k into a vector as long as D's rows (BGRADA) and B
// into one as long as D's columns (BGRADB). So the sum of our B's rows is BGRADA and the
// sum of our A's rows is BGRADB. cuBLASLt computes BGRADA only for a non-transposed A
// and BGRADB only for a transposed B, which is this arrangement.
//
// f32, and 16 bits where cuBLASLt cannot take the step (no algorithm for odd sizes, a
// misaligned S, an empty dim), run the MatMul and ReduceSum kernels one after the
// other. That computes what the two unfused steps computed, to the bit.
#include "kernels/cuda/weight_bias_grad_kernels.h"

#include <algorithm>
#include <optional>

#include "kernels/cuda/cuda_util.h"
#include "kernels/cuda/lt_product.h"
#include "kernels/weight_bias_grad_parts.h"

namespace ds::cuda {
namespace {

// Why the step cannot run as one cuBLASLt matmul; empty when it may (the heuristic
// still has to find an algorithm).
std::string ltObstacle(const KernelContext& ctx, const Device& dev) {
  const std::optional<DType> t = uniformFloatDType(ctx);
  if (!t || !isSixteenBitFloat(*t)) return "the operands are not all f16 or all bf16";
  if (!dev.cublaslt) return "no cuBLASLt handle";
  const int64_t k = ctx.input(0).shape()[0];
  if (k == 0 || ctx.input(0).shape()[1] == 0 || ctx.input(1).shape()[1] == 0) return "an empty dim";
  // Older cuBLASLt has no bias-gradient epilogue for k = 1 (nvmath-python checks this too).
  if (k == 1 && cublasLtGetVersion() < 120304) return "k = 1 needs cuBLASLt 12.3.4";
  // No alignment preference covers the bias output, and cuBLASLt may write it in
  // 16-byte vectors (plan tensors are 256-byte aligned; a view into one may not be).
  if (alignmentOf(ctx.output(1).data) < 16) return "S is not 16-byte aligned";
  return "";
}

// Y and S as one cuBLASLt matmul: column-major D = Yᵀ (n x m) = B (n x k) · Aᵀ, with
// the BGRADA (sum of B's rows) or BGRADB (sum of A's rows) epilogue writing S.
class LtWeightBiasGrad : public LtProduct {
 public:
  // The kernel, or nullptr (`why` says why) where a descriptor call fails or the
  // heuristic finds no algorithm: the caller then runs the product and the sum apart.
  static std::unique_ptr<LtWeightBiasGrad> tryCreate(const KernelContext& ctx, const Device& dev,
                                                     std::string* why) {
    auto kernel = std::unique_ptr<LtWeightBiasGrad>(new LtWeightBiasGrad);
    try {
      kernel->describe(ctx);
      if (kernel->chooseAlgorithm(dev, ctx.input(0).data, ctx.input(1).data, ctx.output(0).data))
        return kernel;
      if (why) *why = "cuBLASLt's heuristic has no algorithm";
    } catch (const std::exception& e) {  // the descriptors are freed with the kernel
      if (why) *why = e.what();
    }
    return nullptr;
  }

  void run(const KernelContext& c, const Device& dev, void* ws) override {
    setBiasPointer(c.output(1).data);
    matmul(dev, 1.0f, c.input(0).data, c.input(1).data, c.output(0).data, ws);
  }

 private:
  LtWeightBiasGrad() = default;

  // Our B [k, n] is column-major n x k, not transposed; our A [k, m] is m x k,
  // transposed; Y is n x m.
  void describe(const KernelContext& ctx) {
    const Shape& a = ctx.input(0).shape();
    const auto k = static_cast<uint64_t>(a[0]), m = static_cast<uint64_t>(a[1]);
    const auto n = static_cast<uint64_t>(ctx.input(1).shape()[1]);
    describeOp(CUBLAS_OP_N, CUBLAS_OP_T,
               ctx.i("bias_input") == 0 ? CUBLASLT_EPILOGUE_BGRADB : CUBLASLT_EPILOGUE_BGRADA);
    // S's address before the heuristic, in case it considers the bias's alignment
    // (ltObstacle checks 16 bytes regardless); S keeps the D type, the default
    // BIAS_DATA_TYPE.
    setBiasPointer(ctx.output(1).data);
    describeLayouts(cudaTypeOf(ctx.output(0).dtype()), {n, k, static_cast<int64_t>(n)},
                    {m, k, static_cast<int64_t>(m)}, {n, m, static_cast<int64_t>(n)});
  }

  void setBiasPointer(void* sum) { setAttr(CUBLASLT_MATMUL_DESC_BIAS_POINTER, &sum, sizeof(sum)); }
};

// Y and S as the MatMul and ReduceSum kernels compute them, one after the other on
// the stream, sharing the workspace. The parts keep their own contexts, which the
// parts' kernels may hold on to, for the kernel's life.
class ComposedWeightBiasGrad : public CudaKernel {
 public:
  // nullptr where a part's factory declines the step's dtypes: the step then runs promoted.
  static std::unique_ptr<CudaKernel> create(const KernelContext& ctx, const Device& dev) {
    auto kernel = std::unique_ptr<ComposedWeightBiasGrad>(new ComposedWeightBiasGrad(ctx, dev));
    if (!kernel->product_ || !kernel->sum_) return nullptr;
    return kernel;
  }
  ComposedWeightBiasGrad(const ComposedWeightBiasGrad&) = delete;
  ComposedWeightBiasGrad& operator=(const ComposedWeightBiasGrad&) = delete;

  size_t workspaceBytes() const override {
    return std::max(product_->workspaceBytes(), sum_->workspaceBytes());
  }

  // The parts' contexts hold the step's views, the same on every run.
  void run(const KernelContext&, const Device& dev, void* ws) override {
    product_->run(parts_.product, dev, ws);
    sum_->run(parts_.sum, dev, ws);
  }

 private:
  ComposedWeightBiasGrad(const KernelContext& ctx, const Device& dev)
      : parts_(weightBiasGradParts(ctx)),
        product_(part(parts_.product, dev)),
        sum_(part(parts_.sum, dev)) {}

  static std::unique_ptr<CudaKernel> part(const KernelContext& ctx, const Device& dev) {
    return CudaKernelRegistry::instance().find(ctx.op)->factory(ctx, dev);
  }

  WeightBiasGradParts parts_;
  std::unique_ptr<CudaKernel> product_, sum_;
};

std::unique_ptr<CudaKernel> weightBiasGradKernel(const KernelContext& ctx, const Device& dev) {
  const std::optional<DType> dtype = uniformFloatDType(ctx);
  if (!dtype) return nullptr;  // mixed 16-bit operands: promoted
  if (*dtype == DType::F32) {
    requireF32(ctx, 0);
    requireF32(ctx, 1);
  } else {
    std::string why;
    if (auto fused = ltWeightBiasGradKernel(ctx, dev, &why)) return fused;
    // Said once per reason, so that a slower run is not a mystery.
    if (dev.cublaslt)
      noteOnce("WeightBiasGrad: " + why, "cuBLASLt declined WeightBiasGrad '" + ctx.node_name +
                                             "' (" + why +
                                             "); it and any like it run the product and the "
                                             "bias sum apart");
  }
  return ComposedWeightBiasGrad::create(ctx, dev);
}

}  // namespace

std::unique_ptr<CudaKernel> ltWeightBiasGradKernel(const KernelContext& ctx, const Device& dev,
                                                   std::string* why) {
  if (std::string obstacle = ltObstacle(ctx, dev); !obstacle.empty()) {
    if (why) *why = obstacle;
    return nullptr;
  }
  return LtWeightBiasGrad::tryCreate(ctx, dev, why);
}

void registerWeightBiasGradKernels(CudaKernelRegistry& r) {
  r.add("WeightBiasGrad", weightBiasGradKernel, Precision::Native16);
}

}  // namespace ds::cuda
