// Blocked f64 GEMM (see gemm_ref.h): row tiles run in parallel, each walks
// column and depth blocks so the B block stays in cache while rows reuse it.
#include "kernels/cpu/gemm_ref.h"

#include <algorithm>

namespace ds::cpu {

GemmF64::GemmF64(int64_t m, int64_t n, int64_t k, int64_t a_rs, int64_t a_cs, int64_t b_rs,
                 int64_t b_cs)
    : m_(m), n_(n), k_(k), a_rs_(a_rs), a_cs_(a_cs), b_rs_(b_rs), b_cs_(b_cs) {
  if (!(b_cs == 1 && b_rs == n)) packed_.resize(static_cast<size_t>(k * n));
}

void GemmF64::run(const double* a, const double* b, double* c, double alpha, bool accumulate) {
  const double* bp = b;
  if (!packed_.empty()) {
    double* dst = packed_.data();
    int64_t n = n_, b_rs = b_rs_, b_cs = b_cs_;
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < k_; ++p)
      for (int64_t j = 0; j < n; ++j) dst[p * n + j] = b[p * b_rs + j * b_cs];
    bp = dst;
  }
  constexpr int64_t kRows = 16, kDepth = 128, kCols = 512;
  int64_t tiles = (m_ + kRows - 1) / kRows;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < tiles; ++t) {
    int64_t i0 = t * kRows, i1 = std::min(m_, i0 + kRows);
    if (!accumulate) std::fill(c + i0 * n_, c + i1 * n_, 0.0);
    for (int64_t j0 = 0; j0 < n_; j0 += kCols) {
      int64_t j1 = std::min(n_, j0 + kCols);
      for (int64_t p0 = 0; p0 < k_; p0 += kDepth) {
        int64_t p1 = std::min(k_, p0 + kDepth);
        for (int64_t i = i0; i < i1; ++i) {
          double* crow = c + i * n_;
          for (int64_t p = p0; p < p1; ++p) {
            double av = alpha * a[i * a_rs_ + p * a_cs_];
            const double* brow = bp + p * n_;
            for (int64_t j = j0; j < j1; ++j) crow[j] += av * brow[j];
          }
        }
      }
    }
  }
}

}  // namespace ds::cpu
