// One row-major product run as a cuBLASLt matmul with an epilogue (a linear layer's
// bias, a weight gradient's bias gradient): the descriptors and the algorithm,
// chosen once at load for the operands' addresses, freed with the kernel. As for
// cuBLAS (kernels/cuda/matmul_kernels.cc), row-major Y = op(A)·op(B) runs as the
// column-major Yᵀ = op(B)ᵀ·op(A)ᵀ: our B is cuBLAS's A, our A its B.
#pragma once

#include <cublasLt.h>

#include <cstdint>

#include "kernels/cuda/kernel.h"

namespace ds::cuda {

class LtProduct : public CudaKernel {
 public:
  ~LtProduct() override;
  LtProduct(const LtProduct&) = delete;
  LtProduct& operator=(const LtProduct&) = delete;

  size_t workspaceBytes() const override { return heuristic_.workspaceSize; }

 protected:
  // A matrix as cuBLAS sees it: column-major rows x cols, leading dimension ld.
  struct Layout {
    uint64_t rows, cols;
    int64_t ld;
  };

  LtProduct() = default;

  // f32 compute and scale, cuBLAS's transposes (of our B, then of our A), the epilogue.
  void describeOp(cublasOperation_t trans_b, cublasOperation_t trans_a,
                  cublasLtEpilogue_t epilogue);
  // Our B, our A and Y as cuBLAS sees them, all of `type`.
  void describeLayouts(cudaDataType_t type, Layout b, Layout a, Layout y);
  void setAttr(cublasLtMatmulDescAttributes_t attr, const void* value, size_t bytes);
  // The heuristic's best algorithm for operands and output at these addresses (fixed
  // for the plan's life), within 32 MiB of workspace, split-K sums in f32; false when
  // it has none.
  bool chooseAlgorithm(const Device& dev, const void* a, const void* b, const void* y);
  // Y = alpha·(the product), then the epilogue, on the device's stream.
  void matmul(const Device& dev, float alpha, const void* a, const void* b, void* y,
              void* workspace) const;

 private:
  cublasLtMatmulDesc_t op_ = nullptr;
  cublasLtMatrixLayout_t a_ = nullptr, b_ = nullptr, y_ = nullptr;  // our A, B and Y
  cublasLtMatmulPreference_t pref_ = nullptr;
  cublasLtMatmulHeuristicResult_t heuristic_{};
};

}  // namespace ds::cuda
