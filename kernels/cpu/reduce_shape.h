// Reduction geometry shared by the CPU and CUDA reduction kernels: the input's
// dims collapsed into [outer, reduced, inner] blocks, or offset tables when reduced
// and kept dims interleave, computed once when a kernel is built.
#pragma once

#include <cstdint>
#include <vector>

#include "ir/tensor.h"

namespace ds::cpu {

// Reduction geometry: out[o, i] = sum_r in[(o * R + r) * I + i] (rows when I == 1),
// or, when reduced and kept dims interleave, sum_r in[base[o] + offsets[r]].
struct ReduceShape {
  int64_t outer = 1, reduced = 1, inner = 1;
  bool general = false;
  std::vector<int64_t> base, offsets;
};

// The geometry of reducing `x` over the dims flagged in `reduced`.
ReduceShape reduceShape(const Shape& x, const std::vector<bool>& reduced);

}  // namespace ds::cpu
