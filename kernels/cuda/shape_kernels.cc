// CUDA kernels of the shape and data-movement ops (CPU twins: kernels/cpu/shape_ops.cc,
// GatherGrad/SliceGrad in grad_misc.cc). Reshape-like ops are device copies;
// Transpose, Slice, Expand and SliceGrad are one strided-copy launch over a walk
// prepared at load; Concat and Split are 2-D memcpys (one per part), or one batched
// copy for many small parts (ZeRO's buckets of normalisation parameters); Gather,
// Trilu, Range and ConstantOfShape are small kernels; Shape copies dims uploaded
// at load. Data movement goes by element size, so every dtype works, and all but
// GatherGrad and Range (arithmetic: f32, 16-bit steps run promoted) are
// registered Native16.
#include <algorithm>
#include <cstring>
#include <limits>

#include "ir/ops/shape_helpers.h"
#include "kernels/cpu/cpu_util.h"
#include "kernels/cpu/slice_geometry.h"
#include "kernels/cuda/cuda_util.h"
#include "kernels/cuda/layout.h"

namespace ds::cuda {
namespace {

std::unique_ptr<CudaKernel> copyKernel(const KernelContext&, const Device&) {
  return launchKernel([](const KernelContext& c, const Device& dev, void*) {
    copyAsync(c.input(0), c.output(0), dev.stream);
  });
}

// Input 0 copied to output 0 along `w` (operand 0: output offsets, 1: input offsets).
std::unique_ptr<CudaKernel> walkCopyKernel(const KernelContext& ctx, Walk w) {
  size_t elem = dtypeSize(ctx.input(0).dtype());
  return launchKernel([w, elem](const KernelContext& c, const Device& dev, void*) {
    stridedCopy(elem, c.input(0).data, c.output(0).data, w, dev.stream);
  });
}

std::unique_ptr<CudaKernel> transposeKernel(const KernelContext& ctx, const Device&) {
  const Shape& x = ctx.input(0).shape();
  std::vector<int64_t> perm = ctx.ints("perm"), in_strides = stridesOf(x), strides;
  if (perm.empty())
    for (int64_t d = ctx.input(0).rank(); d-- > 0;) perm.push_back(d);
  if (perm.size() != x.size()) ctx.fail("perm has ", perm.size(), " entries for rank ", x.size());
  for (int64_t p : perm) strides.push_back(in_strides.at(static_cast<size_t>(p)));
  const Shape& y = ctx.output(0).shape();
  return walkCopyKernel(ctx, makeWalk(ctx, y, {stridesOf(y), strides}));
}

// A channels-last output (GlobalAveragePool's gradient) is walked in its own
// [N, H, W, C] order, so that writes are contiguous.
std::unique_ptr<CudaKernel> expandKernel(const KernelContext& ctx, const Device&) {
  const Shape& y = ctx.output(0).shape();
  std::vector<int64_t> dims = y, out = physicalStrides(ctx.output(0)),
                       in = cpu::broadcastStrides(ctx.input(0).shape(), y);
  if (ctx.output(0).channels_last)
    for (std::vector<int64_t>* v : {&dims, &out, &in}) *v = {(*v)[0], (*v)[2], (*v)[3], (*v)[1]};
  return walkCopyKernel(ctx, makeWalk(ctx, dims, {out, in}));
}

std::unique_ptr<CudaKernel> sliceKernel(const KernelContext& ctx, const Device&) {
  const Shape& y = ctx.output(0).shape();
  auto [base, strides] = cpu::sliceGeometry(ctx, ctx.input(0).shape(), y);
  Walk w = makeWalk(ctx, y, {stridesOf(y), strides});
  w.base[1] = base;
  return walkCopyKernel(ctx, w);
}

// SliceGrad(dY) -> dX: zeros, then dY written at the sliced positions.
std::unique_ptr<CudaKernel> sliceGradKernel(const KernelContext& ctx, const Device&) {
  const Shape& dy = ctx.input(0).shape();
  auto [base, strides] = cpu::sliceGeometry(ctx, ctx.output(0).shape(), dy);
  Walk w = makeWalk(ctx, dy, {strides, stridesOf(dy)});
  w.base[0] = base;
  size_t elem = dtypeSize(ctx.input(0).dtype());
  return launchKernel([w, elem](const KernelContext& c, const Device& dev, void*) {
    DS_CUDA_CHECK(cudaMemsetAsync(c.output(0).data, 0, c.output(0).bytes(), dev.stream));
    stridedCopy(elem, c.input(0).data, c.output(0).data, w, dev.stream);
  });
}

// Pad(X){pads, value} -> Y: Y filled with the value (zeros by a memset), then X
// written at its place (CPU twin: kernels/cpu/slice_geometry.h).
std::unique_ptr<CudaKernel> padKernel(const KernelContext& ctx, const Device&) {
  const Shape& x = ctx.input(0).shape();
  const cpu::SliceGeometry g = cpu::padGeometry(ctx, ctx.output(0).shape());
  Walk w = makeWalk(ctx, x, {g.strides, stridesOf(x)});
  w.base[0] = g.base;
  const Tensor fill = Tensor::fromDoubles(ctx.output(0).dtype(), {}, {ctx.f("value")});
  uint64_t bits = 0;
  std::memcpy(&bits, fill.raw(), fill.bytes());
  const size_t elem = fill.bytes();
  return launchKernel([w, bits, elem](const KernelContext& c, const Device& dev, void*) {
    if (bits == 0)
      DS_CUDA_CHECK(cudaMemsetAsync(c.output(0).data, 0, c.output(0).bytes(), dev.stream));
    else
      fillBits(elem, bits, c.output(0).data, c.output(0).numel(), dev.stream);
    stridedCopy(elem, c.input(0).data, c.output(0).data, w, dev.stream);
  });
}

// Concat (split = false) and Split: whole viewed as [outer, row bytes]; part k owns
// block_k bytes of each row.
std::unique_ptr<CudaKernel> concatKernel(const KernelContext& ctx, bool split) {
  const std::vector<TensorView>& parts = split ? ctx.outputs : ctx.inputs;
  const TensorView& whole = split ? ctx.input(0) : ctx.output(0);
  int64_t rank = whole.rank(), axis = ctx.i("axis"), outer = 1;
  if (axis < -rank || axis >= rank) ctx.fail("axis ", axis, " is out of range for rank ", rank);
  if (axis < 0) axis += rank;
  for (int64_t d = 0; d < axis; ++d) outer *= whole.shape()[d];
  std::vector<size_t> blocks;
  size_t row = 0;
  for (const TensorView& v : parts) {
    if (!v.present()) ctx.fail("all inputs and outputs must be present");
    blocks.push_back(outer == 0 ? 0 : v.bytes() / static_cast<size_t>(outer));
    row += blocks.back();
  }
  // Many small parts of a flat buffer: one launch instead of a copy per part (each
  // costs a few microseconds however small). The views' addresses are fixed.
  constexpr size_t kBatchedParts = 16, kSmallPart = size_t{64} << 10;
  if (outer == 1 && parts.size() >= kBatchedParts &&
      *std::max_element(blocks.begin(), blocks.end()) <= kSmallPart) {
    std::vector<int64_t> table;
    auto* w = static_cast<uint8_t*>(whole.data);
    size_t at = 0;
    for (size_t k = 0; k < parts.size(); at += blocks[k++]) {
      const auto part = reinterpret_cast<int64_t>(parts[k].data);
      const auto in_whole = reinterpret_cast<int64_t>(w + at);
      table.insert(table.end(), {split ? in_whole : part, split ? part : in_whole,
                                 static_cast<int64_t>(blocks[k])});
    }
    auto uploaded = std::make_shared<DeviceBuffer>(DeviceBuffer::upload(table));
    const auto count = static_cast<int64_t>(parts.size());
    return launchKernel([uploaded, count](const KernelContext&, const Device& dev, void*) {
      copyBatch(uploaded->as<int64_t>(), count, dev.stream);
    });
  }
  return launchKernel(
      [split, outer, blocks, row](const KernelContext& c, const Device& dev, void*) {
        const std::vector<TensorView>& ps = split ? c.outputs : c.inputs;
        auto* w = static_cast<uint8_t*>(split ? c.input(0).data : c.output(0).data);
        size_t at = 0;
        for (size_t k = 0; k < ps.size(); at += blocks[k++]) {
          if (blocks[k] == 0) continue;
          auto* p = static_cast<uint8_t*>(ps[k].data);
          auto h = static_cast<size_t>(outer);
          // One row: a plain copy (a 2-D copy's pitch is capped at 2 GiB).
          if (h == 1)
            DS_CUDA_CHECK(cudaMemcpyAsync(split ? p : w + at, split ? w + at : p, blocks[k],
                                          cudaMemcpyDeviceToDevice, dev.stream));
          else if (split)
            DS_CUDA_CHECK(cudaMemcpy2DAsync(p, blocks[k], w + at, row, blocks[k], h,
                                            cudaMemcpyDeviceToDevice, dev.stream));
          else
            DS_CUDA_CHECK(cudaMemcpy2DAsync(w + at, row, p, blocks[k], blocks[k], h,
                                            cudaMemcpyDeviceToDevice, dev.stream));
        }
      });
}

// data [outer, dim, inner] and indices [count]; `data_index` is the data's position.
struct GatherGeometry {
  int64_t outer = 1, dim = 1, inner = 1;
  bool indices32 = false;
};

GatherGeometry gatherGeometry(const KernelContext& ctx, const Shape& data) {
  GatherGeometry g;
  auto rank = static_cast<int64_t>(data.size());
  int64_t axis = ctx.i("axis");
  if (axis < -rank || axis >= rank) ctx.fail("axis ", axis, " is out of range for rank ", rank);
  if (axis < 0) axis += rank;
  for (int64_t d = 0; d < rank; ++d) (d < axis ? g.outer : d == axis ? g.dim : g.inner) *= data[d];
  DType it = ctx.input(1).dtype();
  if (it != DType::I64 && it != DType::I32)
    ctx.fail("indices dtype ", dtypeName(it), " is not supported");
  g.indices32 = it == DType::I32;
  return g;
}

std::unique_ptr<CudaKernel> gatherKernel(const KernelContext& ctx, const Device&) {
  GatherGeometry g = gatherGeometry(ctx, ctx.input(0).shape());
  int64_t count = ctx.input(1).numel();
  int64_t row_bytes = g.inner * static_cast<int64_t>(dtypeSize(ctx.input(0).dtype()));
  return launchKernel([g, count, row_bytes](const KernelContext& c, const Device& dev, void*) {
    gather(c.input(0).data, c.input(1).data, g.indices32, c.output(0).data, g.outer, g.dim, count,
           row_bytes, dev.stream);
  });
}

std::unique_ptr<CudaKernel> gatherGradKernel(const KernelContext& ctx, const Device&) {
  requireF32(ctx, 0);
  GatherGeometry g = gatherGeometry(ctx, ctx.output(0).shape());
  int64_t count = ctx.input(1).numel();
  return launchKernel([g, count](const KernelContext& c, const Device& dev, void*) {
    gatherGrad(c.input(0).as<float>(), c.input(1).data, g.indices32, c.output(0).as<float>(),
               g.outer, g.dim, count, g.inner, dev.stream);
  });
}

std::unique_ptr<CudaKernel> triluKernel(const KernelContext& ctx, const Device&) {
  const Shape& x = ctx.input(0).shape();
  if (x.size() < 2) ctx.fail("input must have rank >= 2");
  const int64_t rows = x[x.size() - 2], cols = x[x.size() - 1], k = ctx.i("k");
  const int64_t matrices = rows * cols == 0 ? 0 : ctx.input(0).numel() / (rows * cols);
  const bool upper = ctx.i("upper") != 0;
  const size_t elem = dtypeSize(ctx.input(0).dtype());
  return launchKernel([=](const KernelContext& c, const Device& dev, void*) {
    trilu(elem, c.input(0).data, c.output(0).data, matrices, rows, cols, k, upper, dev.stream);
  });
}

std::unique_ptr<CudaKernel> shapeKernel(const KernelContext& ctx, const Device&) {
  const Shape& x = ctx.input(0).shape();
  auto [start, end] = shapeOpRange(ctx.i("start"), ctx.i("end"), ctx.input(0).rank());
  std::vector<int64_t> dims(x.begin() + start, x.begin() + end);
  if (static_cast<int64_t>(dims.size()) != ctx.output(0).numel())
    ctx.fail("output must have ", dims.size(), " elements");
  auto values = std::make_shared<DeviceBuffer>(DeviceBuffer::upload(dims));
  return launchKernel([values](const KernelContext& c, const Device& dev, void*) {
    if (c.output(0).bytes() > 0)
      DS_CUDA_CHECK(cudaMemcpyAsync(c.output(0).data, values->get(), c.output(0).bytes(),
                                    cudaMemcpyDeviceToDevice, dev.stream));
  });
}

std::unique_ptr<CudaKernel> rangeKernel(const KernelContext& ctx, const Device&) {
  DType t = ctx.input(0).dtype();
  if (t != DType::F32 && t != DType::I64 && t != DType::I32)
    ctx.fail("dtype ", dtypeName(t), " is not supported by the CUDA kernel");
  return launchKernel([t](const KernelContext& c, const Device& dev, void*) {
    range(t, c.input(0).data, c.input(2).data, c.output(0).data, c.output(0).numel(), dev.stream);
  });
}

std::unique_ptr<CudaKernel> constantOfShapeKernel(const KernelContext& ctx, const Device&) {
  const Tensor& value = ctx.t("value");
  if (value.numel() != 1 || value.dtype() != ctx.output(0).dtype())
    ctx.fail("attribute 'value' must hold one ", dtypeName(ctx.output(0).dtype()), " element");
  uint64_t bits = 0;
  std::memcpy(&bits, value.raw(), value.bytes());
  const size_t elem = value.bytes();
  return launchKernel([bits, elem](const KernelContext& c, const Device& dev, void*) {
    fillBits(elem, bits, c.output(0).data, c.output(0).numel(), dev.stream);
  });
}

}  // namespace

void registerShapeKernels(CudaKernelRegistry& r) {
  constexpr Precision k16 = Precision::Native16;  // bytes moved as they are
  for (const char* op : {"Reshape", "Flatten", "Squeeze", "Unsqueeze"}) r.add(op, copyKernel, k16);
  r.add("Transpose", transposeKernel, k16);
  r.add("Slice", sliceKernel, k16);
  r.add("SliceGrad", sliceGradKernel, k16);  // zero bits are +0 in every float dtype
  r.add("Expand", expandKernel, k16);
  r.allowChannelsLast("Expand", [](const KernelContext& ctx) -> cpu::OperandGroups {
    if (ctx.output(0).rank() != 4) return {};
    return {{{true, 0}}};  // the input keeps its own (plain) layout
  });
  r.add(
      "Concat", [](const KernelContext& ctx, const Device&) { return concatKernel(ctx, false); },
      k16);
  r.add(
      "Split", [](const KernelContext& ctx, const Device&) { return concatKernel(ctx, true); },
      k16);
  r.add("Gather", gatherKernel, k16);
  r.add("GatherGrad", gatherGradKernel);
  r.add("Trilu", triluKernel, k16);
  r.add("Pad", padKernel, k16);  // the fill rounded to the output's dtype, as on the CPU
  r.add("Shape", shapeKernel, k16);
  r.add("Range", rangeKernel);
  // Its 'value' attribute has the output's dtype, so it cannot run promoted.
  r.add("ConstantOfShape", constantOfShapeKernel, k16);
}

}  // namespace ds::cuda
