#include "kernels/cuda/lt_product.h"

#include <utility>

#include "kernels/cuda/cuda_util.h"

namespace ds::cuda {

LtProduct::~LtProduct() {
  if (pref_) cublasLtMatmulPreferenceDestroy(pref_);
  for (cublasLtMatrixLayout_t l : {a_, b_, y_})
    if (l) cublasLtMatrixLayoutDestroy(l);
  if (op_) cublasLtMatmulDescDestroy(op_);
}

void LtProduct::describeOp(cublasOperation_t trans_b, cublasOperation_t trans_a,
                           cublasLtEpilogue_t epilogue) {
  DS_CUBLAS_CHECK(cublasLtMatmulDescCreate(&op_, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  setAttr(CUBLASLT_MATMUL_DESC_TRANSA, &trans_b, sizeof(trans_b));
  setAttr(CUBLASLT_MATMUL_DESC_TRANSB, &trans_a, sizeof(trans_a));
  setAttr(CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue));
}

void LtProduct::describeLayouts(cudaDataType_t type, Layout b, Layout a, Layout y) {
  DS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&b_, type, b.rows, b.cols, b.ld));
  DS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&a_, type, a.rows, a.cols, a.ld));
  DS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&y_, type, y.rows, y.cols, y.ld));
}

void LtProduct::setAttr(cublasLtMatmulDescAttributes_t attr, const void* value, size_t bytes) {
  DS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op_, attr, value, bytes));
}

bool LtProduct::chooseAlgorithm(const Device& dev, const void* a, const void* b, const void* y) {
  constexpr size_t kMaxWorkspace = size_t{32} << 20;  // NVIDIA's advice for Hopper
  DS_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref_));
  auto prefer = [&](cublasLtMatmulPreferenceAttributes_t attr, const void* value, size_t bytes) {
    DS_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref_, attr, value, bytes));
  };
  prefer(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &kMaxWorkspace, sizeof(kMaxWorkspace));
  // Split-K partial sums add in f32, never in the 16-bit output type: one rounding,
  // as the cuBLAS handle's DISALLOW_REDUCED_PRECISION_REDUCTION asks of cuBLAS.
  const uint32_t reductions = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
  prefer(CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &reductions, sizeof(reductions));
  // Only algorithms the operands' addresses suit, as PyTorch asks: cuBLASLt
  // otherwise assumes 256-byte alignment.
  const std::pair<cublasLtMatmulPreferenceAttributes_t, const void*> aligned[] = {
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, b},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, a},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, y},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, y}};
  for (const auto& [attr, ptr] : aligned) {
    const uint32_t bytes = alignmentOf(ptr);
    prefer(attr, &bytes, sizeof(bytes));
  }
  int found = 0;
  const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(dev.cublaslt, op_, b_, a_, y_, y_,
                                                               pref_, 1, &heuristic_, &found);
  return status == CUBLAS_STATUS_SUCCESS && found > 0;
}

void LtProduct::matmul(const Device& dev, float alpha, const void* a, const void* b, void* y,
                       void* workspace) const {
  const float zero = 0.0f;
  DS_CUBLAS_CHECK(cublasLtMatmul(dev.cublaslt, op_, &alpha, b, b_, a, a_, &zero, y, y_, y, y_,
                                 &heuristic_.algo, workspace, heuristic_.workspaceSize,
                                 dev.stream));
}

}  // namespace ds::cuda
