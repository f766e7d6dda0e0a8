// Sliding-window geometry shared by the Conv and pooling kernels: the step's
// strides, dilations and begin/end pads per spatial dim with auto_pad resolved
// (the output shape is already known, so SAME_* padding follows from it), and a
// padded-to-3-D view so the loops handle 1-D, 2-D and 3-D windows alike.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/cpu/kernel.h"

namespace ds::cpu {

struct Window {
  int64_t n = 0, c_in = 0, c_out = 0;  // batch and channel counts of input/output
  // Per spatial dim (as many as the op has, 1 to 3).
  std::vector<int64_t> in, out, kernel, strides, dilations, pad_begin, pad_end;

  size_t spatial() const { return in.size(); }
  int64_t inSize() const;   // product of `in`
  int64_t outSize() const;  // product of `out`
  // The same window with leading unit dims added up to 3 spatial dims.
  Window as3d() const;
};

// Resolves the window of a step whose input 0 is [N, C, in...] and output 0 is
// [N, C', out...], for the given kernel extent per spatial dim.
Window resolveWindow(const KernelContext& ctx, const std::vector<int64_t>& kernel);

// For one spatial dim of a pooling window: per output index, the taps [lo, hi)
// that fall inside the input and the number of taps inside the padded extent
// (AveragePool's divisor with count_include_pad). Shared by forward and backward.
struct TapTable {
  std::vector<int64_t> lo, hi, padded;
};
TapTable tapTable(const Window& w, size_t d);

}  // namespace ds::cpu
