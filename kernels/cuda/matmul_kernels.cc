// Gemm and MatMul on cuBLAS (CPU twin: kernels/cpu/matmul.cc), f32 with cuBLAS's
// default math (no TF32, set on the handle by the executor) so results stay
// within 1e-4 of the CPU. Row-major products run as the column-major product of
// the transposes: Y = A·B  <=>  Yᵀ = Bᵀ·Aᵀ, so B is passed first; transA/transB
// become cuBLAS transposes, never copies. MatMul batches
// run as one strided-batched call when each operand's batch is either broadcast
// whole (stride 0) or complete; other broadcasts loop over batches (launches only).
//
// f16/bf16 (Native16): cublasGemmEx with 16-bit operands, f32 compute and
// accumulation (CUBLAS_COMPUTE_32F, tensor cores), each output rounded once, as
// the CPU's promotion rounds. Gemm's C is added to the f32 product before that
// rounding: the GEMM writes f32 into the step's workspace and one kernel adds
// beta·C and rounds (gemmAddCRound). Mixed operand dtypes run promoted.
//
// A MatMul of a row-major A by 2-D weights takes the bias Add after it as its
// epilogue (CudaKernelRegistry::allowEpilogue; a linear layer's y = x·W + b): one
// cuBLASLt matmul with the BIAS epilogue, the bias added to the f32 product before
// its one rounding, so the product is never written and read back for the Add.
#include <optional>

#include "ir/ops/shape_helpers.h"
#include "kernels/cuda/cuda_util.h"
#include "kernels/cuda/lt_product.h"

namespace ds::cuda {
namespace {

// Row-major Y[m, n] = alpha·op(A)·op(B) (+ beta·Y) as the column-major Yᵀ = op(B)ᵀ·op(A)ᵀ;
// A and B of dtype `t`, Y of `y_type`, f32 compute.
struct GemmCall {
  bool ta = false, tb = false;
  int64_t m = 0, n = 0, k = 0;
  DType t = DType::F32;
};

void gemmEx(const GemmCall& g, const Device& d, float alpha, const void* a, const void* b,
            float beta, void* y, cudaDataType_t y_type) {
  const cudaDataType_t t = cudaTypeOf(g.t);
  DS_CUBLAS_CHECK(cublasGemmEx(
      d.cublas, g.tb ? CUBLAS_OP_T : CUBLAS_OP_N, g.ta ? CUBLAS_OP_T : CUBLAS_OP_N,
      static_cast<int>(g.n), static_cast<int>(g.m), static_cast<int>(g.k), &alpha, b, t,
      static_cast<int>(g.tb ? g.k : g.n), a, t, static_cast<int>(g.ta ? g.m : g.k), &beta, y,
      y_type, static_cast<int>(g.n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

std::unique_ptr<CudaKernel> zeroKernel() {
  return launchKernel([](const KernelContext& c, const Device& d, void*) {
    DS_CUDA_CHECK(cudaMemsetAsync(c.output(0).data, 0, c.output(0).bytes(), d.stream));
  });
}

// 16-bit Gemm: without C (or beta 0) cuBLAS rounds its f32 result to Y; with C
// the f32 result goes to the workspace and gemmAddCRound adds beta·C and rounds.
std::unique_ptr<CudaKernel> gemm16Kernel(const GemmCall& g, float alpha, float beta, int64_t c_rows,
                                         int64_t c_cols) {
  if (beta == 0.0f) {
    if (g.k == 0) return zeroKernel();
    return launchKernel([=](const KernelContext& c, const Device& d, void*) {
      gemmEx(g, d, alpha, c.input(0).data, c.input(1).data, 0.0f, c.output(0).data,
             cudaTypeOf(g.t));
    });
  }
  const size_t acc_bytes = static_cast<size_t>(g.m * g.n) * sizeof(float);
  return launchKernel(
      [=](const KernelContext& c, const Device& d, void* ws) {
        auto* acc = static_cast<float*>(ws);
        if (g.k == 0) {
          DS_CUDA_CHECK(cudaMemsetAsync(acc, 0, acc_bytes, d.stream));
        } else {
          gemmEx(g, d, alpha, c.input(0).data, c.input(1).data, 0.0f, acc, CUDA_R_32F);
        }
        gemmAddCRound(g.t, acc, c.input(2).data, c.output(0).data, g.m, g.n, c_rows, c_cols, beta,
                      d.stream);
      },
      acc_bytes);
}

// Gemm(A, B[, C]): Y = alpha·op(A)·op(B) + beta·C with C broadcast to [M, N].
std::unique_ptr<CudaKernel> gemmKernel(const KernelContext& ctx, const Device&) {
  const std::optional<DType> dtype = uniformFloatDType(ctx);
  if (!dtype) return nullptr;  // mixed 16-bit operands: promoted
  if (*dtype == DType::F32) {
    requireF32(ctx, 0);
    requireF32(ctx, 1);
  }
  if (ctx.output(0).numel() == 0) return noopKernel();
  const Shape& a = ctx.input(0).shape();
  const bool ta = ctx.i("transA") != 0, tb = ctx.i("transB") != 0;
  const int64_t m = ta ? a[1] : a[0], k = ta ? a[0] : a[1], n = ctx.output(0).shape()[1];
  const auto alpha = static_cast<float>(ctx.f("alpha"));
  const auto beta = ctx.hasInput(2) ? static_cast<float>(ctx.f("beta")) : 0.0f;
  int64_t c_rows = 1, c_cols = 1;
  if (ctx.hasInput(2)) {
    Shape c = ctx.input(2).shape();
    while (c.size() < 2) c.insert(c.begin(), 1);
    c_rows = c[0];
    c_cols = c[1];
  }
  if (*dtype != DType::F32)
    return gemm16Kernel({ta, tb, m, n, k, *dtype}, alpha, beta, c_rows, c_cols);
  if (k == 0 && beta == 0.0f) return zeroKernel();
  return launchKernel([=](const KernelContext& c, const Device& d, void*) {
    float* y = c.output(0).as<float>();
    if (beta != 0.0f) gemmFillC(c.input(2).as<float>(), y, m, n, c_rows, c_cols, beta, d.stream);
    if (k == 0) return;
    const float add = beta != 0.0f ? 1.0f : 0.0f;
    DS_CUBLAS_CHECK(
        cublasSgemm(d.cublas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                    static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &alpha,
                    c.input(1).as<float>(), static_cast<int>(tb ? k : n), c.input(0).as<float>(),
                    static_cast<int>(ta ? m : k), &add, y, static_cast<int>(n)));
  });
}

// MatMul operands as batched matrices (1-D operands gain a unit dim; batch dims
// padded to the output's batch rank), as kernels/cpu/matmul.cc views them.
struct MatMulPlan {
  int64_t m = 1, n = 1, k = 1, batches = 1;
  bool trans_a = false, trans_b = false;  // stored as [.., k, m] / [.., n, k]
  float alpha = 1.0f;                     // Y = alpha·op(A)·op(B)
  int64_t a_stride = 0, b_stride = 0;     // strided-batched form, when `strided`
  bool strided = true;
  std::vector<int64_t> a_batch, b_batch;  // otherwise: per output batch, the operand's batch
};

MatMulPlan matmulPlan(const KernelContext& ctx) {
  Shape a = ctx.input(0).shape(), b = ctx.input(1).shape(), y;
  MatMulPlan p;
  // transA/transB: logical operands are the stored ones with the last two dims swapped.
  p.trans_a = ctx.attrs.count("transA") && ctx.i("transA") != 0;
  p.trans_b = ctx.attrs.count("transB") && ctx.i("transB") != 0;
  p.alpha = ctx.attrs.count("alpha") ? static_cast<float>(ctx.f("alpha")) : 1.0f;
  if ((p.trans_a && a.size() < 2) || (p.trans_b && b.size() < 2))
    ctx.fail("transA/transB need operands of rank 2 or more");
  if (p.trans_a) std::swap(a[a.size() - 1], a[a.size() - 2]);
  if (p.trans_b) std::swap(b[b.size() - 1], b[b.size() - 2]);
  if (a.size() == 1) a.insert(a.begin(), 1);
  if (b.size() == 1) b.push_back(1);
  size_t rank = std::max(a.size(), b.size());
  a.insert(a.begin(), rank - a.size(), 1);
  b.insert(b.begin(), rank - b.size(), 1);
  p.m = a[rank - 2];
  p.k = a[rank - 1];
  p.n = b[rank - 1];
  for (size_t d = 0; d + 2 < rank; ++d) y.push_back(std::max(a[d], b[d]));
  for (int64_t d : y) p.batches *= d;
  Shape a_batch(a.begin(), a.end() - 2), b_batch(b.begin(), b.end() - 2);
  int64_t a_count = numElements(a_batch), b_count = numElements(b_batch);
  // An operand batch is either one matrix for all (stride 0) or the output's batch.
  p.strided = (a_count == 1 || a_batch == y) && (b_count == 1 || b_batch == y);
  p.a_stride = a_count == 1 ? 0 : p.m * p.k;
  p.b_stride = b_count == 1 ? 0 : p.k * p.n;
  if (!p.strided) {
    p.a_batch = broadcastIndices(a_batch, y);
    p.b_batch = broadcastIndices(b_batch, y);
  } else if (p.b_stride == 0 && p.a_stride != 0 && !p.trans_a) {
    // One B for every batch of a row-major A: the batches' rows are one [batches·m, k]
    // matrix, so one product of M = batches·m (a linear layer over [N, T, C]) instead
    // of a strided batch of small ones.
    p.m *= p.batches;
    p.batches = 1;
    p.a_stride = 0;
  }
  return p;
}

// 16-bit MatMul: cublasGemm(StridedBatched)Ex, f32 compute, one rounding to Y.
std::unique_ptr<CudaKernel> matmul16Kernel(const MatMulPlan& p, DType dtype) {
  return launchKernel([p, dtype](const KernelContext& c, const Device& d, void*) {
    const float zero = 0.0f;
    const auto* a = static_cast<const uint16_t*>(c.input(0).data);  // 16-bit elements
    const auto* b = static_cast<const uint16_t*>(c.input(1).data);
    auto* y = static_cast<uint16_t*>(c.output(0).data);
    const cudaDataType_t t = cudaTypeOf(dtype);
    const int m = static_cast<int>(p.m), n = static_cast<int>(p.n), k = static_cast<int>(p.k);
    const cublasOperation_t op_a = p.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t op_b = p.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    const int lda = p.trans_a ? m : k, ldb = p.trans_b ? k : n;
    if (p.strided) {
      DS_CUBLAS_CHECK(cublasGemmStridedBatchedEx(d.cublas, op_b, op_a, n, m, k, &p.alpha, b, t, ldb,
                                                 p.b_stride, a, t, lda, p.a_stride, &zero, y, t, n,
                                                 p.m * p.n, static_cast<int>(p.batches),
                                                 CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      return;
    }
    for (int64_t i = 0; i < p.batches; ++i)
      DS_CUBLAS_CHECK(cublasGemmEx(d.cublas, op_b, op_a, n, m, k, &p.alpha,
                                   b + p.b_batch[i] * p.k * p.n, t, ldb,
                                   a + p.a_batch[i] * p.m * p.k, t, lda, &zero, y + i * p.m * p.n,
                                   t, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  });
}

// Whether the bias operand `b` of an Add after a MatMul producing `y` is a vector
// along y's last dim ([N] or [1, .., 1, N]).
bool isBiasOf(const TensorView& b, const TensorView& y) {
  if (!b.present() || b.dtype() != y.dtype() || b.rank() == 0 || b.rank() > y.rank()) return false;
  const Shape& s = b.shape();
  for (size_t d = 0; d + 1 < s.size(); ++d)
    if (s[d] != 1) return false;
  return s.back() == y.shape().back();
}

// MatMul takes a bias Add as its epilogue when it is one 2-D product: A row-major
// (its batch dims fold into its rows) by 2-D weights, in one float dtype.
bool matmulBiasRule(const KernelContext& mm, const cpu::Epilogue& next) {
  const std::optional<DType> t = uniformFloatDType(mm);
  return mm.epilogue.empty() && next.op == "Add" && t.has_value() && mm.input(0).rank() >= 2 &&
         mm.input(1).rank() == 2 && !(mm.attrs.count("transA") && mm.i("transA") != 0) &&
         mm.input(0).numel() > 0 && mm.input(1).numel() > 0 && isBiasOf(next.operand, mm.output(0));
}

// Y[m, n] = alpha·A[m, k]·op(B) + bias[n] as one cuBLASLt matmul (column-major
// Yᵀ = op(B)ᵀ·Aᵀ with the bias along Yᵀ's rows), f32 compute, one rounding of Y.
class LtBiasMatMul : public LtProduct {
 public:
  // The kernel, or nullptr where cuBLASLt has no algorithm for it (the caller then
  // runs the product and the Add unfused, as PyTorch falls back from addmm's
  // epilogue).
  static std::unique_ptr<LtBiasMatMul> tryCreate(const KernelContext& ctx, const Device& dev,
                                                 const MatMulPlan& p, DType t) {
    // cuBLASLt has no alignment preference for the bias and may read it in 16-byte
    // vectors (plan tensors are 256-byte aligned; a view into one may not be).
    if (!dev.cublaslt || alignmentOf(ctx.epilogue.at(0).operand.data) < 16) return nullptr;
    auto kernel = std::unique_ptr<LtBiasMatMul>(new LtBiasMatMul(p.alpha));
    try {
      kernel->describe(p, t);
      if (!kernel->chooseAlgorithm(dev, ctx.input(0).data, ctx.input(1).data, ctx.output(0).data))
        return nullptr;
    } catch (const std::exception&) {  // an unsupported layout: the descriptors are freed
      return nullptr;
    }
    return kernel;
  }

  void run(const KernelContext& c, const Device& dev, void* ws) override {
    const void* bias = c.epilogue.at(0).operand.data;
    setAttr(CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias));
    matmul(dev, alpha_, c.input(0).data, c.input(1).data, c.output(0).data, ws);
  }

 private:
  explicit LtBiasMatMul(float alpha) : alpha_(alpha) {}

  // B stored [k, n] is column-major n x k; stored [n, k] (trans_b), k x n transposed.
  // A's batches fold into its rows: m = batches·m.
  void describe(const MatMulPlan& p, DType t) {
    describeOp(p.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, CUBLASLT_EPILOGUE_BIAS);
    const auto n = static_cast<uint64_t>(p.n), k = static_cast<uint64_t>(p.k);
    const auto m = static_cast<uint64_t>(p.batches * p.m);
    const Layout b =
        p.trans_b ? Layout{k, n, static_cast<int64_t>(k)} : Layout{n, k, static_cast<int64_t>(n)};
    describeLayouts(cudaTypeOf(t), b, {k, m, static_cast<int64_t>(k)},
                    {n, m, static_cast<int64_t>(n)});
  }

  float alpha_;
};

std::unique_ptr<CudaKernel> withBiasAdd(const KernelContext& ctx,
                                        std::shared_ptr<CudaKernel> product);
std::unique_ptr<CudaKernel> productKernel(const MatMulPlan& p, DType dtype);

std::unique_ptr<CudaKernel> matmulKernel(const KernelContext& ctx, const Device& dev) {
  const std::optional<DType> dtype = uniformFloatDType(ctx);
  if (!dtype && !ctx.epilogue.empty()) ctx.fail("a fused bias needs the native kernel");
  if (!dtype) return nullptr;  // mixed 16-bit operands: promoted
  if (*dtype == DType::F32) {
    requireF32(ctx, 0);
    requireF32(ctx, 1);
  }
  if (ctx.output(0).numel() == 0) return noopKernel();
  MatMulPlan p = matmulPlan(ctx);
  if (!ctx.epilogue.empty()) {
    if (auto fused = LtBiasMatMul::tryCreate(ctx, dev, p, *dtype)) return fused;
    return withBiasAdd(ctx, productKernel(p, *dtype));
  }
  return productKernel(p, *dtype);
}

// The product, then the bias Add the fusion gave it, in one kernel: what the
// plan's two steps compute, to the bit (the Add reads the rounded product).
std::unique_ptr<CudaKernel> withBiasAdd(const KernelContext& ctx,
                                        std::shared_ptr<CudaKernel> product) {
  const Shape& y = ctx.output(0).shape();
  const Walk w = broadcastWalk(ctx, y, {y, ctx.epilogue.at(0).operand.shape()});
  const DType t = ctx.output(0).dtype();
  return launchKernel(
      [product, w, t](const KernelContext& c, const Device& d, void* ws) {
        product->run(c, d, ws);
        binary(BinaryOp::Add, t, c.output(0).data, c.epilogue[0].operand.data, c.output(0).data, w,
               d.stream);
      },
      product->workspaceBytes());
}

std::unique_ptr<CudaKernel> productKernel(const MatMulPlan& p, DType dtype) {
  if (p.k == 0) return zeroKernel();
  if (dtype != DType::F32) return matmul16Kernel(p, dtype);
  return launchKernel([p](const KernelContext& c, const Device& d, void*) {
    const float zero = 0.0f;
    const float* a = c.input(0).as<float>();
    const float* b = c.input(1).as<float>();
    float* y = c.output(0).as<float>();
    const int m = static_cast<int>(p.m), n = static_cast<int>(p.n), k = static_cast<int>(p.k);
    const cublasOperation_t op_a = p.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t op_b = p.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    const int lda = p.trans_a ? m : k, ldb = p.trans_b ? k : n;
    if (p.strided) {
      DS_CUBLAS_CHECK(cublasSgemmStridedBatched(d.cublas, op_b, op_a, n, m, k, &p.alpha, b, ldb,
                                                p.b_stride, a, lda, p.a_stride, &zero, y, n,
                                                p.m * p.n, static_cast<int>(p.batches)));
      return;
    }
    for (int64_t i = 0; i < p.batches; ++i)
      DS_CUBLAS_CHECK(cublasSgemm(d.cublas, op_b, op_a, n, m, k, &p.alpha,
                                  b + p.b_batch[i] * p.k * p.n, ldb, a + p.a_batch[i] * p.m * p.k,
                                  lda, &zero, y + i * p.m * p.n, n));
  });
}

}  // namespace

void registerMatMulKernels(CudaKernelRegistry& r) {
  r.add("Gemm", gemmKernel, Precision::Native16);
  r.add("MatMul", matmulKernel, Precision::Native16);
  r.allowEpilogue("MatMul", matmulBiasRule);
}

}  // namespace ds::cuda
