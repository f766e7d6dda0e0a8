// The device side of the CUDA backend: plain launch functions over raw device
// pointers, implemented in kernels/cuda/*.cu. Host-side kernel objects
// (kernels/cuda/*_kernels.cc) resolve attributes, shapes and dtypes once at plan
// load and call these from run(); keeping the .cu files free of project headers
// other than this one keeps nvcc's share of the build small. Every launch is
// asynchronous on `stream`; none allocates. Float math is f32 unless noted;
// statistics (norms, reductions, losses) accumulate in double, as the CPU oracle does.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "ir/dtype.h"
#include "kernels/dropout_rng.h"

namespace ds::cuda {

inline constexpr int kMaxWalkDims = 8;

// An element-wise walk over `numel` output elements in row-major order of
// `dims`; operand k's element offset is Σ index[d] * strides[k][d] plus base[k].
struct Walk {
  int rank = 1;
  int64_t numel = 0;
  int64_t dims[kMaxWalkDims] = {};
  int64_t strides[3][kMaxWalkDims] = {};
  int64_t base[3] = {};
};

// f16 and bf16: stored in 16 bits, computed in f32 and rounded to nearest-even once
// per output element (kernels/cuda/kernel.h, Precision).
inline bool isSixteenBitFloat(DType t) {
  return t == DType::F16 || t == DType::BF16;
}

enum class UnaryOp : int {
  Relu,
  LeakyRelu,
  Clip,
  Sigmoid,
  Tanh,
  Erf,
  GeluErf,
  GeluTanh,
  Sqrt,
  Neg,
  Exp,
  Log,
  Softplus
};
// Equal, Less and Greater write bool (isComparison).
enum class BinaryOp : int { Add, Sub, Mul, Div, Pow, Equal, Less, Greater };
inline bool isComparison(BinaryOp op) {
  return op == BinaryOp::Equal || op == BinaryOp::Less || op == BinaryOp::Greater;
}

// ---- elementwise.cu ----
// y = op(x) over n elements; f32, f16 or bf16 for every op, i64/i32 for Neg. alpha:
// LeakyRelu's slope or Clip's min; beta: Clip's max.
void unary(UnaryOp op, DType t, const void* x, void* y, int64_t n, float alpha, float beta,
           cudaStream_t s);
void logicalNot(const bool* x, bool* y, int64_t n, cudaStream_t s);
// Clip of n i64 or i32 elements, the bounds truncated and saturated to the type.
void clipInt(DType t, const void* x, void* y, int64_t n, double lo, double hi, cudaStream_t s);
// dx = y == 0 ? 0 : dy over n elements (Relu's gradient); f32, f16 or bf16.
void reluGrad(DType t, const void* dy, const void* y, void* dx, int64_t n, cudaStream_t s);
// dx = lo < x < hi ? dy : 0 over n elements (Clip's gradient); f32, f16 or bf16.
void clipGrad(DType t, const void* dy, const void* x, void* dx, int64_t n, float lo, float hi,
              cudaStream_t s);
// dx = x > 0 ? dy : alpha·dy over n elements (LeakyRelu's gradient); f32, f16 or bf16.
void leakyReluGrad(DType t, const void* dy, const void* x, void* dx, int64_t n, float alpha,
                   cudaStream_t s);
// dx = dy·Gelu'(x) (erf form, or the tanh approximation); floats.
void geluGrad(DType t, const void* dy, const void* x, void* dx, int64_t n, bool tanh,
              cudaStream_t s);
// o = op(a, b) with operands 1 and 2 of `w` broadcast (operand 0 is the output).
// Same-dtype a and b: f32, f16, bf16, i64 or i32 (Equal also bool, output bool);
// Pow: floats only. With `relu` (floats), negative results become 0: a fused Relu.
// With `relu_grad_mask` (floats, contiguous operands only), results where the mask
// is 0 become 0: a fused ReluGrad(o, mask).
void binary(BinaryOp op, DType t, const void* a, const void* b, void* o, const Walk& w,
            cudaStream_t s, bool relu = false, const void* relu_grad_mask = nullptr);
// o = c ? x : y, elements of `elem_size` bytes; operands 0..2 of `w` are c, x, y
// and the output is contiguous.
void where(size_t elem_size, const bool* c, const void* x, const void* y, void* o, const Walk& w,
           cudaStream_t s);
// Converts n elements (floats to integers truncate toward zero saturating, NaN -> 0;
// to f16/bf16 round to nearest-even, through f32 as the CPU's Cast does).
void cast(DType from, DType to, const void* x, void* y, int64_t n, cudaStream_t s);
// Training dropout (kernels/dropout_rng.h): element i is kept when
// dropoutKeep(key, i, threshold); the key is `*key_on_device` when that is not
// null (computed by dropoutKey below), else `key`.
void dropout(const float* x, float* y, bool* mask, int64_t n, uint64_t key,
             const uint64_t* key_on_device, uint64_t threshold, float scale, cudaStream_t s);
// The key of this run of a training-plan Dropout node, from the step feed: state
// holds {last step, micro-step} (starting at {-1, 0}) and is advanced on the
// device, so no step value needs to reach the host. `stream` names the node and
// the rank; its step and micro-step are filled in on the device.
void dropoutKey(const DropoutStream& stream, const int64_t* step, int64_t* state, uint64_t* key,
                cudaStream_t s);
// The key of run r of a Dropout node without a step input: mix64(seed + golden * r),
// with r counted on the device (runs: {r} starting at 0) so that a replayed CUDA
// graph draws a fresh mask on every run, as the CPU kernel does.
void dropoutRunKey(uint64_t seed, uint64_t* runs, uint64_t* key, cudaStream_t s);
void fillBits(size_t elem_size, uint64_t bits, void* y, int64_t n, cudaStream_t s);
// Copies `count` byte ranges in one launch: table holds {source, destination,
// bytes} per range, as int64 (device memory).
void copyBatch(const int64_t* table, int64_t count, cudaStream_t s);
// out[offset_0(i)] = in[offset_1(i)] over the walk (operand 0 is the output).
void stridedCopy(size_t elem_size, const void* in, void* out, const Walk& w, cudaStream_t s);
void trilu(size_t elem_size, const void* in, void* out, int64_t matrices, int64_t rows,
           int64_t cols, int64_t k, bool upper, cudaStream_t s);
// y[i] = start + i * delta with scalars read on the device; f32, i64 or i32.
void range(DType t, const void* start, const void* delta, void* y, int64_t n, cudaStream_t s);

// ---- reduce.cu ----
// Sums and softmax take x and y of float dtype t (f32, f16 or bf16; 16-bit values
// widened, each output rounded once from the f32 result).
// y[o, i] = scale * Σ_r x[(o * reduced + r) * inner + i] (double accumulation).
// Few long rows (inner 1), or few columns (inner > 1) over many rows, are split over
// reduceSplitParts() blocks each, whose partial sums go to `scratch`
// (reduceScratchDoubles()) and are added in order by a second kernel.
int64_t reduceSplitParts(int64_t outer, int64_t reduced, int64_t inner);
size_t reduceScratchDoubles(int64_t outer, int64_t reduced, int64_t inner);
// With `square`, the squares of x are summed (ReduceSumSquare). y has dtype yt: t,
// or f32 for a 16-bit t (the reductions' `to`).
void reduceBlocks(DType t, DType yt, const void* x, void* y, int64_t outer, int64_t reduced,
                  int64_t inner, double scale, double* scratch, cudaStream_t s,
                  bool square = false);
// y[o] = scale * Σ_r x[base[o] + offsets[r]] (or its square) with device tables
// (interleaved axes).
void reduceTable(DType t, DType yt, const void* x, void* y, const int64_t* base, int64_t outputs,
                 const int64_t* offsets, int64_t reduced, double scale, cudaStream_t s,
                 bool square = false);
// dX = Y·(dY − Σ dY·Y) over the middle dim of [outer, n, inner] (Softmax's gradient).
void softmaxGrad(DType t, const void* dy, const void* y, void* dx, int64_t outer, int64_t n,
                 int64_t inner, cudaStream_t s);
// (Log)Softmax over the middle dim of [outer, n, inner]; with `mask` (inner 1 only:
// Softmax's additive mask, `mask_rows` rows of n) of x + mask row (r % mask_rows).
void softmax(bool log, DType t, const void* x, const void* mask, int64_t mask_rows, void* y,
             int64_t outer, int64_t n, int64_t inner, cudaStream_t s);

// ---- attention.cu ----
// FusedAttention's rows: `rows` rows of kv_len f32 scores (one batch element's
// [heads, q_len, kv_len]; row r is query r % q_len), probabilities of dtype t (f32,
// f16 or bf16), keys after the query masked out if `causal`. Forward (stats_out):
// probs = softmax(scores), stats_out[r] = log Σ exp(scores); backward (stats_in):
// probs = exp(scores − stats_in[r]).
void attentionProbs(DType t, const float* scores, void* probs, float* stats_out,
                    const float* stats_in, int64_t rows, int64_t q_len, int64_t kv_len, bool causal,
                    cudaStream_t s);
// p = p·(dp − D) in place, D of row r = Σ_e dy·y over query r % q_len's head r / q_len
// (dy and y: [q_len, heads, value_head]).
void attentionGradScores(DType t, const float* dp, void* p, const void* dy, const void* y,
                         int64_t rows, int64_t q_len, int64_t kv_len, int64_t heads,
                         int64_t value_head, bool causal, cudaStream_t s);

// ---- reduce.cu: normalisation ----
// The data tensors (X, Y, dY, dX) have float dtype t (f32, f16 or bf16: 16-bit values
// widened, each output rounded once from the f32 kernel's result, as promotion
// would); parameters, statistics and parameter gradients are f32.
struct BatchNormArgs {
  int64_t n = 0, c = 0, inner = 0;
  double eps = 0.0, momentum = 0.0;
  bool relu = false;  // a fused Relu on Y (KernelContext::epilogue)
  // A fused residual Add before the Relu: Y = relu(round(BN(X)) + residual), each
  // rounding the unfused Add and Relu steps make (forward's `residual` argument).
  bool residual = false;
  // The running variance mixes in the unbiased batch variance (PyTorch's), not the
  // biased one (ONNX's): BatchNormalization's unbiased_running_var.
  bool unbiased_running_var = false;
};
// Training: batch statistics (biased variance) and optional running-stat outputs;
// inference: in_mean/in_var. `scratch` holds batchNormScratchDoubles(a, false)
// doubles (the backward's: (a, true)): per-channel values, then the partial sums
// of batchNormParts(a) blocks per channel.
int64_t batchNormParts(const BatchNormArgs& a);
size_t batchNormScratchDoubles(const BatchNormArgs& a, bool backward);
void batchNormForward(const BatchNormArgs& a, bool training, DType t, const void* x,
                      const float* scale, const float* bias, const float* in_mean,
                      const float* in_var, const void* residual, void* y, float* out_mean,
                      float* out_var, double* scratch, cudaStream_t s);
// dX, dScale, dBias from recomputed batch statistics.
// With `relu` (the output R of a Relu after the BatchNorm), dy is that Relu's
// gradient: the BatchNorm's is ReluGrad(dy, R) = (R == 0 ? 0 : dy), applied on read.
void batchNormBackward(const BatchNormArgs& a, DType t, const void* dy, const void* x,
                       const float* scale, const void* relu, void* dx, float* dscale, float* dbias,
                       double* scratch, cudaStream_t s);
// Rows of `inner` elements; scale/bias have `inner` elements (bias may be null);
// mean/inv_std outputs may be null.
void layerNormForward(DType t, const void* x, const float* scale, const float* bias, void* y,
                      float* mean, float* inv_std, int64_t outer, int64_t inner, double eps,
                      cudaStream_t s);
// `scratch` holds layerNormGradScratchDoubles(outer, inner) doubles: row statistics,
// then the parameter gradients' partial sums over layerNormGradParts(outer) row blocks.
int64_t layerNormGradParts(int64_t outer);
size_t layerNormGradScratchDoubles(int64_t outer, int64_t inner);
void layerNormBackward(DType t, const void* dy, const void* x, const float* scale, void* dx,
                       float* dscale, float* dbias, int64_t outer, int64_t inner, double eps,
                       double* scratch, cudaStream_t s);

// ---- reduce.cu: cross-entropy ----
struct CrossEntropyArgs {
  int64_t n = 0, c = 0, d = 0;  // scores [n, c, d]
  int64_t classes = 0;          // the first `classes` of c take part (padded scores)
  int64_t ignore_index = INT64_MIN;
  int reduction = 2;  // 0 none, 1 sum, 2 mean
  bool labels32 = false;
};
// Labels outside [0, c) that are not ignored make the loss NaN (the CPU kernel
// throws; a device kernel cannot). Scores (and log_prob, dScores) of float dtype t
// (f32, f16 or bf16: widened exactly, each output rounded from its f32 value);
// loss, dLoss and weights f32. `scratch` holds 2 * n * d doubles.
void crossEntropy(const CrossEntropyArgs& a, DType t, const void* scores, const void* labels,
                  const float* weights, float* loss, void* log_prob, double* scratch,
                  cudaStream_t s);
// `scratch` holds one double.
void crossEntropyGrad(const CrossEntropyArgs& a, DType t, const float* dloss, const void* scores,
                      const void* labels, const float* weights, void* dscores, double* scratch,
                      cudaStream_t s);

// ---- nn.cu ----
// A pooling window padded to 3 spatial dims (leading unit dims).
struct PoolArgs {
  int64_t planes = 0;  // N * C
  int64_t in[3] = {}, out[3] = {}, kernel[3] = {}, strides[3] = {}, dilations[3] = {},
          pad_begin[3] = {}, pad_end[3] = {};
  bool count_include_pad = false;
  // X, Y, dY and dX channels-last ([N, H, W, C], `channels` = C): the 2-D max
  // pooling kernels only (isPlainMaxPool2d).
  bool channels_last = false;
  int64_t channels = 1;
};
// Whether the 2-D max pooling kernels (32-bit index math, no dilation) run `a`.
bool isPlainMaxPool2d(const PoolArgs& a);
// MaxPool (max_pool) or AveragePool with x and y of float dtype t (f32, f16 or bf16).
void pool(const PoolArgs& a, bool max_pool, DType t, const void* x, void* y, cudaStream_t s);
// MaxPoolGrad (dY routed to each window's first maximum of x: row-major taps, NaN
// wins, as the CPU does) or AveragePoolGrad (x unused, may be null); dtype t as above.
// `scratch` holds poolGradScratchBytes(a, max_pool) bytes: a 2-D MaxPoolGrad without
// dilation first finds each window's maximum, then gathers.
size_t poolGradScratchBytes(const PoolArgs& a, bool max_pool);
void poolGrad(const PoolArgs& a, bool max_pool, DType t, const void* dy, const void* x, void* dx,
              void* scratch, cudaStream_t s);
// y[i, j] = beta * c[i or 0, j or 0] (Gemm's C broadcast into Y before Y += alpha A·B).
void gemmFillC(const float* c, float* y, int64_t m, int64_t n, int64_t c_rows, int64_t c_cols,
               float beta, cudaStream_t s);
// 16-bit Gemm's epilogue: y[i, j] = round(acc[i, j] + beta * c[i or 0, j or 0]) with
// acc the f32 product and c, y of dtype t (f16/bf16): one rounding, as promotion does.
void gemmAddCRound(DType t, const float* acc, const void* c, void* y, int64_t m, int64_t n,
                   int64_t c_rows, int64_t c_cols, float beta, cudaStream_t s);
// Gather of rows of `row_bytes` from data [outer, dim, row] by i64/i32 indices;
// negative indices wrap, out-of-range rows come out zero.
void gather(const void* data, const void* indices, bool indices32, void* out, int64_t outer,
            int64_t dim, int64_t count, int64_t row_bytes, cudaStream_t s);
// dData [outer, dim, inner] = Σ of dY rows per index, added in index order (the
// CPU's, to the bit), the rows shared among threads by index modulo a power of two.
void gatherGrad(const float* dy, const void* indices, bool indices32, float* dx, int64_t outer,
                int64_t dim, int64_t count, int64_t inner, cudaStream_t s);

// ---- nn.cu: optimizer steps ----
struct SgdArgs {
  double momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false;
  DType grad_type = DType::F32, round_to = DType::F32;  // as AdamArgs'
};
// Optional device scalars (null when absent): grad_scale multiplies the gradient
// (rounded to f32 first, as torch's grad.mul_ stores it); momentum / beta1 replaces
// the attribute for this step; a non-finite `check` (fp16 loss scaling's overflow
// check) skips the step, the outputs keeping the inputs' values.
void sgdStep(const SgdArgs& a, const float* p, const void* g, const float* lr, const int64_t* step,
             const float* buf, const float* grad_scale, const float* momentum, const float* check,
             float* p_out, float* buf_out, void* rounded, int64_t n, cudaStream_t s);
struct AdamArgs {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
  bool adam_w_mode = true, bias_correction = true;
  // Mixed precision's fused form: g of grad_type (f32, f16 or bf16), and with
  // round_to f16 or bf16 the updated parameter rounded to it into `rounded` (f32:
  // none). A 16-bit gradient and a rounded copy of two different 16-bit types are
  // not supported.
  DType grad_type = DType::F32, round_to = DType::F32;
};
void adamStep(const AdamArgs& a, const float* p, const void* g, const float* lr,
              const int64_t* step, const float* m, const float* v, const float* grad_scale,
              const float* beta1, const float* check, float* p_out, float* m_out, float* v_out,
              void* rounded, int64_t n, cudaStream_t s);
// Lion and Adagrad steps: one state each (Lion's exp_avg, Adagrad's sum); the
// optional scalars, the overflow check and the 16-bit forms as SgdStep's. Lion's
// beta1, when not null, replaces the attribute for this step (OneCycle).
struct LionArgs {
  double beta1 = 0.9, beta2 = 0.999, weight_decay = 0;
  DType grad_type = DType::F32, round_to = DType::F32;  // as AdamArgs'
};
void lionStep(const LionArgs& a, const float* p, const void* g, const float* lr, const float* m,
              const float* grad_scale, const float* beta1, const float* check, float* p_out,
              float* m_out, void* rounded, int64_t n, cudaStream_t s);
struct AdagradArgs {
  double eps = 1e-10, weight_decay = 0, lr_decay = 0, initial_accumulator_value = 0;
  DType grad_type = DType::F32, round_to = DType::F32;  // as AdamArgs'
};
void adagradStep(const AdagradArgs& a, const float* p, const void* g, const float* lr,
                 const int64_t* step, const float* sum, const float* grad_scale, const float* check,
                 float* p_out, float* sum_out, void* rounded, int64_t n, cudaStream_t s);
// LAMB (DeepSpeed's FusedLamb) on one whole parameter, deterministically: the moments
// and per-block sums of squares, their ordered sum into the trust ratio, then the
// step, in `workspace` of lambWorkspaceBytes(n); inputs and outputs as adamStep's.
struct LambArgs {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
  double max_coeff = 10, min_coeff = 0.01;
  bool bias_correction = true, eps_inside_sqrt = false;
  DType grad_type = DType::F32, round_to = DType::F32;  // as AdamArgs'
};
size_t lambWorkspaceBytes(int64_t n);
void lambStep(const LambArgs& a, const float* p, const void* g, const float* lr,
              const int64_t* step, const float* m, const float* v, const float* grad_scale,
              const float* beta1, const float* check, float* p_out, float* m_out, float* v_out,
              void* rounded, int64_t n, void* workspace, cudaStream_t s);
// coef = max_norm / (norm + 1e-6) when below 1, else 1 (DeepSpeed's clip_grad_norm_).
void clipCoef(const float* norm, float* coef, double max_norm, cudaStream_t s);

}  // namespace ds::cuda
