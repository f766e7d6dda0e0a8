#include "kernels/cpu/slice_geometry.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "ir/ops/shape_helpers.h"
#include "ir/tensor.h"
#include "kernels/cpu/cpu_util.h"

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

class PlaceKernel : public CpuKernel {
 public:
  PlaceKernel(const KernelContext& ctx, const SliceGeometry& g, double fill)
      : elem_(dtypeSize(ctx.input(0).dtype())),
        base_(g.base),
        walk_(ctx, ctx.input(0).shape(), {g.strides}),
        fill_(Tensor::fromDoubles(ctx.output(0).dtype(), {}, {fill})),
        zero_fill_(fill == 0 && !std::signbit(fill)) {}  // -0.0 has a bit set

  void run(const KernelContext& ctx) override {
    if (zero_fill_)
      std::memset(ctx.output(0).data, 0, ctx.output(0).bytes());
    else
      for (int64_t i = 0; i < ctx.output(0).numel(); ++i)
        std::memcpy(static_cast<uint8_t*>(ctx.output(0).data) + i * elem_, fill_.raw(), elem_);
    dispatchSize(elem_, [&](auto tag) {
      using E = typename decltype(tag)::type;
      const E* x = ctx.input(0).as<E>();
      E* y = ctx.output(0).as<E>() + base_;
      const int64_t s = walk_.innerStride(0);
      walk_.run([&](int64_t o, const std::array<int64_t, 1>& off, int64_t len) {
        for (int64_t j = 0; j < len; ++j) y[off[0] + j * s] = x[o + j];
      });
    });
  }

 private:
  size_t elem_;
  int64_t base_;
  StridedWalk<1> walk_;
  Tensor fill_;  // one element of the output's dtype
  bool zero_fill_;
};

}  // namespace

std::unique_ptr<CpuKernel> placeKernel(const KernelContext& ctx, const SliceGeometry& g,
                                       double fill) {
  return std::make_unique<PlaceKernel>(ctx, g, fill);
}

SliceGeometry padGeometry(const KernelContext& ctx, const Shape& padded) {
  const std::vector<int64_t>& pads = ctx.ints("pads");
  const auto rank = static_cast<int64_t>(padded.size());
  if (static_cast<int64_t>(pads.size()) != 2 * rank) ctx.fail("pads needs 2 x rank values");
  SliceGeometry g{0, stridesOf(padded)};
  for (int64_t d = 0; d < rank; ++d) g.base += pads[d] * g.strides[d];
  return g;
}

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
