#include "kernels/cpu/slice_geometry.h"

#include <algorithm>
#include <limits>

#include "ir/ops/shape_helpers.h"

namespace ds::cpu {
namespace {

// One axis with ONNX clamping: first index and element count for a dim of size `dim`.
void clampAxis(int64_t dim, int64_t start, int64_t end, int64_t step, int64_t& first,
               int64_t& count) {
  if (start < 0) start += dim;
  if (end < 0) end += dim;
  first = 0;
  count = 0;
  if (dim == 0) return;
  if (step > 0) {
    first = std::clamp<int64_t>(start, 0, dim);
    end = std::clamp<int64_t>(end, 0, dim);
    count = end > first ? (end - first - 1) / step + 1 : 0;
  } else {
    first = std::clamp<int64_t>(start, 0, dim - 1);
    end = std::clamp<int64_t>(end, -1, dim - 1);
    int64_t back =
        step == std::numeric_limits<int64_t>::min() ? std::numeric_limits<int64_t>::max() : -step;
    count = first > end ? (first - end - 1) / back + 1 : 0;
  }
}

}  // namespace

SliceGeometry sliceGeometry(const KernelContext& ctx, const Shape& x, const Shape& taken) {
  const auto& starts = ctx.ints("starts");
  const auto& ends = ctx.ints("ends");
  const auto& axes = ctx.ints("axes");
  const auto& steps = ctx.ints("steps");
  const auto rank = static_cast<int64_t>(x.size());
  if (ends.size() != starts.size() || (!axes.empty() && axes.size() != starts.size()) ||
      (!steps.empty() && steps.size() != starts.size()))
    ctx.fail("starts, ends, axes and steps must have the same length");
  const std::vector<int64_t> x_strides = stridesOf(x);
  SliceGeometry g{0, x_strides};
  for (size_t i = 0; i < starts.size(); ++i) {
    int64_t axis = axes.empty() ? static_cast<int64_t>(i) : axes[i];
    if (axis < -rank || axis >= rank) ctx.fail("axis ", axis, " is out of range for rank ", rank);
    if (axis < 0) axis += rank;
    int64_t step = steps.empty() ? 1 : steps[i], first = 0, count = 0;
    if (step == 0) ctx.fail("slice step is 0");
    clampAxis(x[axis], starts[i], ends[i], step, first, count);
    if (count != taken[axis])
      ctx.fail("axis ", axis, " takes ", count, " elements but the slice has ", taken[axis]);
    g.base += first * x_strides[axis];
    g.strides[axis] = x_strides[axis] * step;
  }
  return g;
}

}  // namespace ds::cpu
