// FusedAttention's row kernels (kernels/cuda/attention_kernels.cc runs the products
// on cuBLAS): the probabilities of f32 scores, row by row, and the scores'
// gradient. One block per row of one batch element's [heads, Tq, Tk] scores; sums
// in double, as the CPU oracle's; the probabilities and dS are stored in the
// operands' dtype S for the products that read them (as flash attention does).
#include "kernels/cuda/device_util.h"

namespace ds::cuda {
namespace {

constexpr int kRowThreads = 256;

// Keys row r (query i = r % q_len) attends to: [0, keys).
__device__ inline int64_t rowKeys(int64_t r, int64_t q_len, int64_t kv_len, bool causal) {
  return causal ? r % q_len + 1 : kv_len;
}

// Forward (stats_out): P = softmax(S) and L = log Σ exp(S) of each row. Backward
// (stats_in): P = exp(S − L). Masked keys get probability 0.
template <typename S>
__global__ void attentionProbsKernel(const float* scores, S* probs, float* stats_out,
                                     const float* stats_in, int64_t q_len, int64_t kv_len,
                                     bool causal) {
  __shared__ double shared[32];
  const int64_t r = blockIdx.x, keys = rowKeys(r, q_len, kv_len, causal);
  const float* s = scores + r * kv_len;
  S* p = probs + r * kv_len;
  float max = 0.0f, inv = 1.0f;
  if (stats_in) {
    max = stats_in[r];
  } else {
    double m = -INFINITY;
    for (int64_t j = threadIdx.x; j < keys; j += blockDim.x) m = fmax(m, static_cast<double>(s[j]));
    max = static_cast<float>(blockMax(m, shared));
    double sum = 0.0;
    for (int64_t j = threadIdx.x; j < keys; j += blockDim.x) sum += expf(s[j] - max);
    sum = blockSum(sum, shared);
    inv = static_cast<float>(1.0 / sum);
    if (threadIdx.x == 0) stats_out[r] = max + static_cast<float>(::log(sum));
  }
  for (int64_t j = threadIdx.x; j < kv_len; j += blockDim.x)
    p[j] = fromFloat<S>(j < keys ? expf(s[j] - max) * inv : 0.0f);
}

// dS = P·(dP − D), D = Σ_e dY·Y of the row's query (in [Tq, heads, Dv] rows), over P.
template <typename S>
__global__ void attentionGradScoresKernel(const float* dp, S* p, const S* dy, const S* y,
                                          int64_t q_len, int64_t kv_len, int64_t heads,
                                          int64_t value_head, bool causal) {
  __shared__ double shared[32];
  const int64_t r = blockIdx.x, h = r / q_len, i = r % q_len;
  const int64_t keys = rowKeys(r, q_len, kv_len, causal);
  const S* dyi = dy + (i * heads + h) * value_head;
  const S* yi = y + (i * heads + h) * value_head;
  double d = 0.0;
  for (int64_t e = threadIdx.x; e < value_head; e += blockDim.x)
    d += static_cast<double>(toFloat(dyi[e])) * toFloat(yi[e]);
  const float df = static_cast<float>(blockSum(d, shared));
  const float* dpr = dp + r * kv_len;
  S* pr = p + r * kv_len;
  for (int64_t j = threadIdx.x; j < kv_len; j += blockDim.x)
    pr[j] = fromFloat<S>(j < keys ? toFloat(pr[j]) * (dpr[j] - df) : 0.0f);
}

}  // namespace

void attentionProbs(DType t, const float* scores, void* probs, float* stats_out,
                    const float* stats_in, int64_t rows, int64_t q_len, int64_t kv_len, bool causal,
                    cudaStream_t s) {
  if (rows == 0) return;
  byFloatType(t, [&](auto tag) {
    using S = decltype(tag);
    attentionProbsKernel<<<static_cast<unsigned>(rows), kRowThreads, 0, s>>>(
        scores, static_cast<S*>(probs), stats_out, stats_in, q_len, kv_len, causal);
  });
}

void attentionGradScores(DType t, const float* dp, void* p, const void* dy, const void* y,
                         int64_t rows, int64_t q_len, int64_t kv_len, int64_t heads,
                         int64_t value_head, bool causal, cudaStream_t s) {
  if (rows == 0) return;
  byFloatType(t, [&](auto tag) {
    using S = decltype(tag);
    attentionGradScoresKernel<<<static_cast<unsigned>(rows), kRowThreads, 0, s>>>(
        dp, static_cast<S*>(p), static_cast<const S*>(dy), static_cast<const S*>(y), q_len, kv_len,
        heads, value_head, causal);
  });
}

}  // namespace ds::cuda
