// Gemm and MatMul on cuBLAS (CPU twin: kernels/cpu/matmul.cc), f32 with cuBLAS's
// default math (no TF32, set on the handle by the executor) so results stay
// within 1e-4 of the CPU. Row-major products run as the column-major product of
// the transposes: Y = A·B  <=>  Yᵀ = Bᵀ·Aᵀ, so B is passed first; transA/transB
// become cuBLAS transposes, never copies. MatMul batches
// run as one strided-batched call when each operand's batch is either broadcast
// whole (stride 0) or complete; other broadcasts loop over batches (launches only).
#include "ir/ops/shape_helpers.h"
#include "kernels/cuda/cuda_util.h"

namespace ds::cuda {
namespace {

std::unique_ptr<CudaKernel> zeroKernel() {
  return launchKernel([](const KernelContext& c, const Device& d, void*) {
    DS_CUDA_CHECK(cudaMemsetAsync(c.output(0).data, 0, c.output(0).bytes(), d.stream));
  });
}

// Gemm(A, B[, C]): Y = alpha·op(A)·op(B) + beta·C with C broadcast to [M, N].
std::unique_ptr<CudaKernel> gemmKernel(const KernelContext& ctx, const Device&) {
  requireF32(ctx, 0);
  requireF32(ctx, 1);
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
  }
  return p;
}

std::unique_ptr<CudaKernel> matmulKernel(const KernelContext& ctx, const Device&) {
  requireF32(ctx, 0);
  requireF32(ctx, 1);
  if (ctx.output(0).numel() == 0) return noopKernel();
  MatMulPlan p = matmulPlan(ctx);
  if (p.k == 0) return zeroKernel();
  return launchKernel([p](const KernelContext& c, const Device& d, void*) {
    const float one = 1.0f, zero = 0.0f;
    const float* a = c.input(0).as<float>();
    const float* b = c.input(1).as<float>();
    float* y = c.output(0).as<float>();
    const int m = static_cast<int>(p.m), n = static_cast<int>(p.n), k = static_cast<int>(p.k);
    const cublasOperation_t op_a = p.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t op_b = p.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    const int lda = p.trans_a ? m : k, ldb = p.trans_b ? k : n;
    if (p.strided) {
      DS_CUBLAS_CHECK(cublasSgemmStridedBatched(d.cublas, op_b, op_a, n, m, k, &one, b, ldb,
                                                p.b_stride, a, lda, p.a_stride, &zero, y, n,
                                                p.m * p.n, static_cast<int>(p.batches)));
      return;
    }
    for (int64_t i = 0; i < p.batches; ++i)
      DS_CUBLAS_CHECK(cublasSgemm(d.cublas, op_b, op_a, n, m, k, &one, b + p.b_batch[i] * p.k * p.n,
                                  ldb, a + p.a_batch[i] * p.m * p.k, lda, &zero, y + i * p.m * p.n,
                                  n));
  });
}

}  // namespace

void registerMatMulKernels(CudaKernelRegistry& r) {
  r.add("Gemm", gemmKernel);
  r.add("MatMul", matmulKernel);
}

}  // namespace ds::cuda
