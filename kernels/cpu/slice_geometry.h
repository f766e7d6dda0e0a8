// Where a Slice's elements lie in its data tensor, shared by the Slice and SliceGrad
// kernels of every backend (the shape rule is ir/ops/shape_helpers.cc).
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/cpu/kernel.h"

namespace ds::cpu {

struct SliceGeometry {
  int64_t base = 0;              // element offset of the first taken element in X
  std::vector<int64_t> strides;  // per dim of the slice: element stride in X
};

// The geometry of the step's Slice attributes (starts, ends, axes, steps, ONNX
// clamping) over X of shape `x`; `taken` is the slice's shape, checked against it.
// Bad attributes fail naming the node.
SliceGeometry sliceGeometry(const KernelContext& ctx, const Shape& x, const Shape& taken);

}  // namespace ds::cpu
