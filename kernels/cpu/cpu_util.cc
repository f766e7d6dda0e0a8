// Non-template parts of the CPU kernel helpers (see cpu_util.h): walk collapsing,
// broadcast strides and the parallel byte copy.
#include "kernels/cpu/cpu_util.h"

#include "runtime/comm/communicator.h"

namespace ds::cpu {

DropoutStream dropoutStreamOf(const KernelContext& ctx) {
  return {ctx.seed, static_cast<uint64_t>(ctx.i("seed")), nodeHash(ctx.node_name),        -1,
          0,        ctx.comm ? ctx.comm->rank() : 0,      ctx.comm ? ctx.comm->size() : 1};
}

void copyBytes(void* dst, const void* src, size_t bytes) {
  if (dst == src || bytes == 0) return;
  constexpr int64_t kMinParallelBytes = int64_t{1} << 20;
  auto* d = static_cast<uint8_t*>(dst);
  const auto* s = static_cast<const uint8_t*>(src);
  parallelChunks(
      static_cast<int64_t>(bytes),
      [&](int64_t begin, int64_t end) {
        std::memcpy(d + begin, s + begin, static_cast<size_t>(end - begin));
      },
      kMinParallelBytes);
}

void collapseWalk(std::vector<int64_t>& dims, std::vector<std::vector<int64_t>>& strides) {
  std::vector<int64_t> out_dims;
  std::vector<std::vector<int64_t>> out_strides(strides.size());
  for (size_t d = 0; d < dims.size(); ++d) {
    if (dims[d] == 1) continue;
    bool merge = !out_dims.empty();
    for (size_t k = 0; merge && k < strides.size(); ++k)
      merge = out_strides[k].back() == strides[k][d] * dims[d];
    if (merge) {
      out_dims.back() *= dims[d];
      for (size_t k = 0; k < strides.size(); ++k) out_strides[k].back() = strides[k][d];
      continue;
    }
    out_dims.push_back(dims[d]);
    for (size_t k = 0; k < strides.size(); ++k) out_strides[k].push_back(strides[k][d]);
  }
  if (out_dims.empty()) {  // a scalar, or every dim of size 1
    out_dims.push_back(1);
    for (auto& s : out_strides) s.push_back(0);
  }
  dims = std::move(out_dims);
  strides = std::move(out_strides);
}

std::vector<int64_t> broadcastStrides(const Shape& in, const Shape& out) {
  std::vector<int64_t> strides(out.size(), 0);
  size_t offset = out.size() - in.size();
  int64_t stride = 1;
  for (size_t d = in.size(); d-- > 0;) {
    if (in[d] != 1) strides[d + offset] = stride;
    stride *= in[d];
  }
  return strides;
}

}  // namespace ds::cpu
