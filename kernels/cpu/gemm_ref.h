// A blocked double-precision GEMM for the f64 Gemm/MatMul kernels (oracles, so
// exactness matters more than speed): C = alpha * A·B (+ C), with A and B given
// by element strides so transposed operands need no copy of A; B is repacked
// row-major into a buffer sized once at construction when it is not already.
#pragma once

#include <cstdint>
#include <vector>

namespace ds::cpu {

class GemmF64 {
 public:
  GemmF64() = default;
  // a(i,p) = a[i*a_rs + p*a_cs], b(p,j) = b[p*b_rs + j*b_cs]; C is row-major [m, n].
  GemmF64(int64_t m, int64_t n, int64_t k, int64_t a_rs, int64_t a_cs, int64_t b_rs, int64_t b_cs);
  // C = alpha * A·B, plus the previous C when `accumulate`.
  void run(const double* a, const double* b, double* c, double alpha, bool accumulate);

 private:
  int64_t m_ = 0, n_ = 0, k_ = 0, a_rs_ = 0, a_cs_ = 0, b_rs_ = 0, b_cs_ = 0;
  std::vector<double> packed_;  // row-major copy of B (empty when B already is)
};

}  // namespace ds::cpu
