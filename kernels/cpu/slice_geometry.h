// Where a Slice's elements lie in its data tensor, shared by the Slice and SliceGrad
// kernels of every backend (the shape rule is ir/ops/shape_helpers.cc), and where a
// Pad's input lies in its output: the same placement, with a fill value around it.
#pragma once

#include <cstdint>
#include <memory>
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

// Where Pad's input lies in its output `padded` (the pads attribute).
SliceGeometry padGeometry(const KernelContext& ctx, const Shape& padded);

// Fills output 0 with `fill` (in its dtype), then writes input 0 (contiguous) at
// `g`'s places in it: SliceGrad (fill 0) and Pad.
std::unique_ptr<CpuKernel> placeKernel(const KernelContext& ctx, const SliceGeometry& g,
                                       double fill);

}  // namespace ds::cpu
