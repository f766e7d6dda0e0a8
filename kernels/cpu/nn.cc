// Registration of the neural-network CPU kernels (Conv, Gemm/MatMul, pooling,
// normalisation, cross-entropy); each family lives in its own file.
#include "kernels/cpu/nn.h"

namespace ds::cpu {

DType requireF32OrF64(const KernelContext& ctx, size_t i) {
  DType t = ctx.input(i).dtype();
  if (t != DType::F32 && t != DType::F64)
    ctx.fail("input ", i, " has dtype ", dtypeName(t), "; the CPU kernel supports f32 and f64");
  return t;
}

void registerNnKernels(CpuKernelRegistry& r) {
  registerConvKernels(r);
  registerMatMulKernels(r);
  registerPoolKernels(r);
  registerNormKernels(r);
  registerLossKernels(r);
  registerAttentionKernels(r);
}

}  // namespace ds::cpu
