// FusedAttention and FusedAttentionGrad on the GPU (CPU twin: kernels/cpu/attention.cc),
// f32, f16 and bf16 (Native16). 16-bit steps run as cuDNN's fused flash attention
// where cuDNN supports them (kernels/cuda/attention_sdpa.h); the rest, here, one
// batch element at a time: its [heads, Tq, Tk]
// scores are computed in f32 into the workspace by a strided-batched cuBLAS product
// over the heads, which reads Q, K and V where they lie in [B, T, heads, D] (row
// stride heads·D, head stride D: no transposes); attention.cu turns them into
// probabilities of the operands' dtype, and a second product writes Y in place.
// The gradient recomputes the probabilities from L, then
//   dV = Pᵀ·dY,  dP = dY·Vᵀ (f32),  dS = P·(dP − D),  dQ = scale·dS·K,  dK = scale·dSᵀ·Q.
// Packed Q, K and V (and their packed gradient) are read and written where they lie
// too, with a row stride of 3·heads·D. The workspace holds one batch element's
// scores in f32 and in the operands' dtype.
#include <string>

#include "kernels/attention_dims.h"
#include "kernels/cuda/attention_sdpa.h"
#include "kernels/cuda/cuda_util.h"

namespace ds::cuda {
namespace {

// One row-major operand of a head-batched product: element (row, col) of head h at
// data + h·head_stride + row·ld + col; `trans` reads it transposed.
struct Operand {
  const void* data;
  int64_t ld, head_stride;
  bool trans = false;
};

// Row-major C[h] = alpha·op(A[h])·op(B[h]) over the heads, as the column-major
// Cᵀ = op(B)ᵀ·op(A)ᵀ (A and B of dtype t, C of c_type; f32 compute).
void headProducts(const Device& d, DType t, int64_t heads, int64_t m, int64_t n, int64_t k,
                  float alpha, const Operand& a, const Operand& b, void* c, cudaDataType_t c_type,
                  int64_t ldc, int64_t c_head_stride) {
  const float beta = 0.0f;
  const cudaDataType_t ab = cudaTypeOf(t);
  DS_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      d.cublas, b.trans ? CUBLAS_OP_T : CUBLAS_OP_N, a.trans ? CUBLAS_OP_T : CUBLAS_OP_N,
      static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &alpha, b.data, ab,
      static_cast<int>(b.ld), b.head_stride, a.data, ab, static_cast<int>(a.ld), a.head_stride,
      &beta, c, c_type, static_cast<int>(ldc), c_head_stride, static_cast<int>(heads),
      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// Byte offsets of batch element b and the workspace's layout.
struct Geometry {
  AttentionDims dims;
  DType t;
  size_t elem;

  explicit Geometry(const KernelContext& ctx)
      : dims(attentionDimsOf(ctx)),
        t(ctx.input(ctx.op == "FusedAttentionGrad" ? 1 : 0).dtype()),
        elem(dtypeSize(t)) {
    if (t != DType::F32 && !isSixteenBitFloat(t))
      ctx.fail("attention on ", dtypeName(t), " is not supported on CUDA (f32, f16, bf16)");
  }
  int64_t rows() const { return dims.heads * dims.q_len; }
  int64_t scores() const { return rows() * dims.kv_len; }
  size_t workspaceBytes() const { return static_cast<size_t>(scores()) * (sizeof(float) + elem); }
  float* f32Scores(void* ws) const { return static_cast<float*>(ws); }
  void* probs(void* ws) const { return static_cast<char*>(ws) + scores() * sizeof(float); }
  // The input (or output) `first + which` of Q, K, V (which 0, 1, 2), or the packed one.
  const void* operand(const std::vector<TensorView>& views, size_t first, size_t which) const {
    return views.at(dims.packed ? first : first + which).data;
  }
  // Batch element b of an operand of `len` tokens `row` elements apart from `offset`,
  // as its head view (head size n).
  Operand at(const void* base, int64_t b, int64_t len, int64_t row, int64_t offset,
             int64_t n) const {
    return {static_cast<const char*>(base) + static_cast<size_t>(offset + b * len * row) * elem,
            row, n};
  }
  Operand q(const void* base, int64_t b) const {
    return at(base, b, dims.q_len, dims.q_row, dims.q_offset, dims.head);
  }
  Operand k(const void* base, int64_t b) const {
    return at(base, b, dims.kv_len, dims.k_row, dims.k_offset, dims.head);
  }
  Operand v(const void* base, int64_t b) const {
    return at(base, b, dims.kv_len, dims.v_row, dims.v_offset, dims.value_head);
  }
  Operand y(const void* base, int64_t b) const {
    return at(base, b, dims.q_len, dims.y_row(), 0, dims.value_head);
  }
  Operand scoresOperand(const void* data) const {
    return {data, dims.kv_len, dims.q_len * dims.kv_len};
  }

  // Scores (f32, in the workspace) of batch element b: scale·Q·Kᵀ per head.
  void computeScores(const Device& d, const void* q_base, const void* k_base, int64_t b,
                     void* ws) const {
    Operand kt = k(k_base, b);
    kt.trans = true;
    headProducts(d, t, dims.heads, dims.q_len, dims.kv_len, dims.head,
                 static_cast<float>(dims.scale), q(q_base, b), kt, f32Scores(ws), CUDA_R_32F,
                 dims.kv_len, dims.q_len * dims.kv_len);
  }
  // Writes op(A)·op(B) per head into `out`'s batch element b (a [B, T, heads, n] operand).
  void intoOperand(const Device& d, int64_t m, int64_t n, int64_t k, float alpha, const Operand& a,
                   const Operand& bop, const Operand& out) const {
    headProducts(d, t, dims.heads, m, n, k, alpha, a, bop, const_cast<void*>(out.data),
                 cudaTypeOf(t), out.ld, out.head_stride);
  }
};

// The step on cuDNN's fused attention, or nullptr. A 16-bit step that cuDNN declines
// runs here, several times slower and with a [heads, Tq, Tk] workspace: said once
// per reason on stderr, so that a slow run is not a mystery.
std::unique_ptr<CudaKernel> onCudnn(const KernelContext& ctx, const Device& dev, bool backward) {
  std::string why;
  std::unique_ptr<CudaKernel> fused = cudnnAttentionKernel(ctx, dev, backward, &why);
  if (fused || dev.cudnn == nullptr || !isSixteenBitFloat(ctx.input(backward ? 1 : 0).dtype()))
    return fused;
  noteOnce("attention: " + why, "cuDNN's fused attention declined " + ctx.op + " '" +
                                    ctx.node_name + "' (" + why +
                                    "); it and any like it run on cuBLAS, slower");
  return nullptr;
}

std::unique_ptr<CudaKernel> attentionKernel(const KernelContext& ctx, const Device& dev) {
  if (auto fused = onCudnn(ctx, dev, false)) return fused;
  const Geometry g(ctx);
  return launchKernel(
      [g](const KernelContext& c, const Device& d, void* ws) {
        const AttentionDims& n = g.dims;
        auto* stats = static_cast<float*>(c.output(1).data);
        const void *q = g.operand(c.inputs, 0, 0), *k = g.operand(c.inputs, 0, 1);
        const void* v = g.operand(c.inputs, 0, 2);
        for (int64_t b = 0; b < n.batch; ++b) {
          g.computeScores(d, q, k, b, ws);
          attentionProbs(g.t, g.f32Scores(ws), g.probs(ws), stats + b * g.rows(), nullptr, g.rows(),
                         n.q_len, n.kv_len, n.causal, d.stream);
          g.intoOperand(d, n.q_len, n.value_head, n.kv_len, 1.0f, g.scoresOperand(g.probs(ws)),
                        g.v(v, b), g.y(c.output(0).data, b));
        }
      },
      g.workspaceBytes());
}

std::unique_ptr<CudaKernel> attentionGradKernel(const KernelContext& ctx, const Device& dev) {
  if (auto fused = onCudnn(ctx, dev, true)) return fused;
  const Geometry g(ctx);
  return launchKernel(
      [g](const KernelContext& c, const Device& d, void* ws) {
        const AttentionDims& n = g.dims;
        const size_t after = n.packed ? 2 : 4;  // Y, then L
        const void *dy = c.input(0).data, *q = g.operand(c.inputs, 1, 0);
        const void *k = g.operand(c.inputs, 1, 1), *v = g.operand(c.inputs, 1, 2);
        const void* y = c.input(after).data;
        const auto* stats = static_cast<const float*>(c.input(after + 1).data);
        const void *dq = g.operand(c.outputs, 0, 0), *dk = g.operand(c.outputs, 0, 1);
        const void* dv = g.operand(c.outputs, 0, 2);
        const float scale = static_cast<float>(n.scale);
        for (int64_t b = 0; b < n.batch; ++b) {
          g.computeScores(d, q, k, b, ws);
          attentionProbs(g.t, g.f32Scores(ws), g.probs(ws), nullptr, stats + b * g.rows(), g.rows(),
                         n.q_len, n.kv_len, n.causal, d.stream);
          Operand pt = g.scoresOperand(g.probs(ws));
          pt.trans = true;  // dV = Pᵀ·dY
          g.intoOperand(d, n.kv_len, n.value_head, n.q_len, 1.0f, pt, g.y(dy, b), g.v(dv, b));
          Operand vt = g.v(v, b);
          vt.trans = true;  // dP = dY·Vᵀ, f32 over the scores
          headProducts(d, g.t, n.heads, n.q_len, n.kv_len, n.value_head, 1.0f, g.y(dy, b), vt,
                       g.f32Scores(ws), CUDA_R_32F, n.kv_len, n.q_len * n.kv_len);
          attentionGradScores(g.t, g.f32Scores(ws), g.probs(ws), g.y(dy, b).data, g.y(y, b).data,
                              g.rows(), n.q_len, n.kv_len, n.heads, n.value_head, n.causal,
                              d.stream);
          const Operand ds = g.scoresOperand(g.probs(ws));
          g.intoOperand(d, n.q_len, n.head, n.kv_len, scale, ds, g.k(k, b),
                        g.q(dq, b));  // dQ = scale·dS·K
          Operand dst = ds;
          dst.trans = true;  // dK = scale·dSᵀ·Q
          g.intoOperand(d, n.kv_len, n.head, n.q_len, scale, dst, g.q(q, b), g.k(dk, b));
        }
      },
      g.workspaceBytes());
}

}  // namespace

void registerAttentionKernels(CudaKernelRegistry& r) {
  r.add("FusedAttention", attentionKernel, Precision::Native16);
  r.add("FusedAttentionGrad", attentionGradKernel, Precision::Native16);
}

}  // namespace ds::cuda
