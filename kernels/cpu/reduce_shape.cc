#include "kernels/cpu/reduce_shape.h"

#include <utility>

namespace ds::cpu {
namespace {

// Appends the offsets of every element of a sub-grid of `shape` (the dims `take`).
std::vector<int64_t> gridOffsets(const Shape& shape, const std::vector<bool>& take) {
  std::vector<int64_t> strides(shape.size(), 1), out{0};
  for (size_t d = shape.size(); d-- > 1;) strides[d - 1] = strides[d] * shape[d];
  for (size_t d = 0; d < shape.size(); ++d) {
    if (!take[d]) continue;
    std::vector<int64_t> next;
    next.reserve(out.size() * static_cast<size_t>(shape[d]));
    for (int64_t o : out)
      for (int64_t i = 0; i < shape[d]; ++i) next.push_back(o + i * strides[d]);
    out = std::move(next);
  }
  return out;
}

}  // namespace

ReduceShape reduceShape(const Shape& x, const std::vector<bool>& reduced) {
  // Blocks of consecutive (non-unit) dims with the same flag.
  std::vector<std::pair<int64_t, bool>> blocks;
  for (size_t d = 0; d < x.size(); ++d) {
    if (x[d] == 1) continue;
    if (!blocks.empty() && blocks.back().second == reduced[d])
      blocks.back().first *= x[d];
    else
      blocks.emplace_back(x[d], reduced[d]);
  }
  ReduceShape r;
  size_t b = 0;
  if (b < blocks.size() && !blocks[b].second) r.outer = blocks[b++].first;
  if (b < blocks.size() && blocks[b].second) r.reduced = blocks[b++].first;
  if (b < blocks.size() && !blocks[b].second) r.inner = blocks[b++].first;
  if (b == blocks.size()) return r;
  r.general = true;
  std::vector<bool> kept(reduced.size());
  for (size_t d = 0; d < kept.size(); ++d) kept[d] = !reduced[d];
  r.base = gridOffsets(x, kept);
  r.offsets = gridOffsets(x, reduced);
  r.reduced = static_cast<int64_t>(r.offsets.size());
  return r;
}

}  // namespace ds::cpu
