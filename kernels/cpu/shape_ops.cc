// CPU kernels of the shape ops. Reshape, Flatten, (Un)Squeeze are byte copies;
// Transpose, Slice and Expand walk the output with precomputed input strides
// (Transpose tiles when the innermost dims swap); Concat, Split and Gather copy
// contiguous blocks; Trilu, Shape, Range and ConstantOfShape fill, and Pad fills
// around its input (slice_geometry.h). Data movement
// is by element size, so every dtype is supported.
#include <algorithm>
#include <limits>

#include "ir/ops/shape_helpers.h"
#include "kernels/cpu/cpu_util.h"
#include "kernels/cpu/slice_geometry.h"

namespace ds::cpu {
namespace {

constexpr int64_t kSerial = std::numeric_limits<int64_t>::max();
constexpr int64_t kMinParallelBytes = int64_t{1} << 18;

// Runs fn(begin, end) over [0, n) items of `item_bytes` each, in parallel when large.
template <typename F>
void parallelItems(int64_t n, int64_t item_bytes, F&& fn) {
  int64_t min = n * std::max<int64_t>(item_bytes, 1) > kMinParallelBytes ? 0 : kSerial;
  parallelChunks(n, std::forward<F>(fn), min);
}

std::unique_ptr<CpuKernel> copyKernel(const KernelContext&) {
  return statelessKernel([](const KernelContext& ctx) {
    copyBytes(ctx.output(0).data, ctx.input(0).data, ctx.output(0).bytes());
  });
}

// Copies the output of a one-operand walk: each segment reads `len` elements of
// stride innerStride(0) (possibly 0 or negative) from `in` + offset.
template <typename E>
void copyWalk(const StridedWalk<1>& walk, const E* in, E* out) {
  const int64_t s = walk.innerStride(0);
  walk.run(
      [&](int64_t o, const std::array<int64_t, 1>& i, int64_t len) {
        const E* src = in + i[0];
        E* dst = out + o;
        if (s == 1)
          std::memcpy(dst, src, static_cast<size_t>(len) * sizeof(E));
        else if (s == 0)
          std::fill(dst, dst + len, *src);
        else
          for (int64_t j = 0; j < len; ++j) dst[j] = src[j * s];
      },
      walk.numel() * static_cast<int64_t>(sizeof(E)) > kMinParallelBytes ? 0 : kSerial);
}

// A walk-based copy: Expand and Slice; `base` is the input offset of output element 0.
class WalkCopyKernel : public CpuKernel {
 public:
  WalkCopyKernel(StridedWalk<1> walk, int64_t base, size_t elem)
      : walk_(std::move(walk)), base_(base), elem_(elem) {}
  void run(const KernelContext& ctx) override {
    dispatchSize(elem_, [&](auto tag) {
      using E = typename decltype(tag)::type;
      copyWalk(walk_, ctx.input(0).as<E>() + base_, ctx.output(0).as<E>());
    });
  }

 private:
  StridedWalk<1> walk_;
  int64_t base_;
  size_t elem_;
};

std::unique_ptr<CpuKernel> expandKernel(const KernelContext& ctx) {
  auto walk = broadcastWalk<1>(ctx, ctx.output(0).shape(), {ctx.input(0).shape()});
  return std::make_unique<WalkCopyKernel>(std::move(walk), 0, dtypeSize(ctx.input(0).dtype()));
}

std::unique_ptr<CpuKernel> sliceKernel(const KernelContext& ctx) {
  SliceGeometry g = sliceGeometry(ctx, ctx.input(0).shape(), ctx.output(0).shape());
  StridedWalk<1> walk(ctx, ctx.output(0).shape(), {g.strides});
  return std::make_unique<WalkCopyKernel>(std::move(walk), g.base, dtypeSize(ctx.input(0).dtype()));
}

// Transpose. When the output's innermost dim is also the input's, segments are
// contiguous copies; otherwise the dims p (input-contiguous) and last are copied
// in square tiles so both sides stay in cache.
class TransposeKernel : public CpuKernel {
 public:
  explicit TransposeKernel(const KernelContext& ctx) : elem_(dtypeSize(ctx.input(0).dtype())) {
    const Shape& x = ctx.input(0).shape();
    const Shape& y = ctx.output(0).shape();
    std::vector<int64_t> perm = ctx.ints("perm"), in_strides = stridesOf(x);
    if (perm.empty())
      for (int64_t d = ctx.input(0).rank(); d-- > 0;) perm.push_back(d);
    if (perm.size() != x.size()) ctx.fail("perm has ", perm.size(), " entries for rank ", x.size());
    std::vector<std::vector<int64_t>> strides(2);
    strides[0] = stridesOf(y);  // operand 0: output offsets, operand 1: input offsets
    for (int64_t p : perm) strides[1].push_back(in_strides.at(static_cast<size_t>(p)));
    std::vector<int64_t> dims = y;
    collapseWalk(dims, strides);
    tiled_ = strides[1].back() != 1 && dims.size() >= 2;
    if (!tiled_) {
      walk_ = StridedWalk<2>(ctx, dims, strides);
      return;
    }
    size_t p = std::find(strides[1].begin(), strides[1].end(), 1) - strides[1].begin();
    rows_ = dims[p];
    cols_ = dims.back();
    row_out_ = strides[0][p];
    col_in_ = strides[1].back();
    dims.erase(dims.end() - 1);
    dims.erase(dims.begin() + static_cast<int64_t>(p));
    for (auto& s : strides) s.erase(s.end() - 1), s.erase(s.begin() + static_cast<int64_t>(p));
    walk_ = StridedWalk<2>(ctx, dims, strides);
  }

  void run(const KernelContext& ctx) override {
    dispatchSize(elem_, [&](auto tag) {
      using E = typename decltype(tag)::type;
      const E* in = ctx.input(0).as<E>();
      E* out = ctx.output(0).as<E>();
      if (tiled_) return runTiled(in, out);
      const int64_t s = walk_.innerStride(1);
      walk_.run([&](int64_t, const std::array<int64_t, 2>& off, int64_t len) {
        const E* src = in + off[1];
        E* dst = out + off[0];
        if (s == 1) return (void)std::memcpy(dst, src, static_cast<size_t>(len) * sizeof(E));
        for (int64_t j = 0; j < len; ++j) dst[j] = src[j * s];
      });
    });
  }

 private:
  static constexpr int64_t kBlock = 32;

  // Block (r0, c0) of the 2-D transpose at (in, out): out[r, c] = in[r + c * col_in].
  template <typename E>
  void block(const E* in, E* out, int64_t r0, int64_t c0) const {
    const int64_t r1 = std::min(rows_, r0 + kBlock), c1 = std::min(cols_, c0 + kBlock);
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t c = c0; c < c1; ++c) out[r * row_out_ + c] = in[r + c * col_in_];
  }

  template <typename E>
  void runTiled(const E* in, E* out) const {
    const int64_t rb = (rows_ + kBlock - 1) / kBlock, cb = (cols_ + kBlock - 1) / kBlock;
    const int64_t outer = walk_.numel(), inner_stride_out = walk_.innerStride(0),
                  inner_stride_in = walk_.innerStride(1);
    auto tiles = [&](const E* src, E* dst, int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) block(src, dst, (t / cb) * kBlock, (t % cb) * kBlock);
    };
    if (outer == 1) {
      parallelItems(rb * cb, kBlock * kBlock * sizeof(E),
                    [&](int64_t b, int64_t e) { tiles(in, out, b, e); });
      return;
    }
    walk_.run(
        [&](int64_t, const std::array<int64_t, 2>& off, int64_t len) {
          for (int64_t j = 0; j < len; ++j)
            tiles(in + off[1] + j * inner_stride_in, out + off[0] + j * inner_stride_out, 0,
                  rb * cb);
        },
        outer * rows_ * cols_ * static_cast<int64_t>(sizeof(E)) > kMinParallelBytes ? 0 : kSerial);
  }

  size_t elem_;
  bool tiled_ = false;
  StridedWalk<2> walk_;  // tiled: over the dims other than p and last
  int64_t rows_ = 0, cols_ = 0, row_out_ = 0, col_in_ = 0;
};

// Concat/Split: [outer, block] views; item o copies each input's block o.
class ConcatKernel : public CpuKernel {
 public:
  ConcatKernel(const KernelContext& ctx, bool split) : split_(split) {
    const std::vector<TensorView>& parts = split ? ctx.outputs : ctx.inputs;
    const TensorView& whole = split ? ctx.input(0) : ctx.output(0);
    int64_t rank = whole.rank(), axis = ctx.i("axis");
    if (axis < -rank || axis >= rank) ctx.fail("axis ", axis, " is out of range for rank ", rank);
    if (axis < 0) axis += rank;
    for (int64_t d = 0; d < axis; ++d) outer_ *= whole.shape()[d];
    for (const TensorView& v : parts) {
      if (!v.present()) ctx.fail("all inputs and outputs must be present");
      blocks_.push_back(outer_ == 0 ? 0 : static_cast<int64_t>(v.bytes()) / outer_);
      row_ += blocks_.back();
    }
  }

  void run(const KernelContext& ctx) override {
    const std::vector<TensorView>& parts = split_ ? ctx.outputs : ctx.inputs;
    auto* whole = static_cast<uint8_t*>(split_ ? ctx.input(0).data : ctx.output(0).data);
    auto copy = [&](int64_t o, size_t k, int64_t at) {
      uint8_t* part = static_cast<uint8_t*>(parts[k].data) + o * blocks_[k];
      uint8_t* w = whole + o * row_ + at;
      if (split_)
        std::memcpy(part, w, static_cast<size_t>(blocks_[k]));
      else
        std::memcpy(w, part, static_cast<size_t>(blocks_[k]));
    };
    if (outer_ == 1) {  // one big block per part: let copyBytes split each
      int64_t at = 0;
      for (size_t k = 0; k < parts.size(); at += blocks_[k++]) {
        void* part = parts[k].data;
        if (split_)
          copyBytes(part, whole + at, static_cast<size_t>(blocks_[k]));
        else
          copyBytes(whole + at, part, static_cast<size_t>(blocks_[k]));
      }
      return;
    }
    parallelItems(outer_, row_, [&](int64_t begin, int64_t end) {
      for (int64_t o = begin; o < end; ++o)
        for (size_t k = 0, at = 0; k < parts.size(); at += blocks_[k++]) copy(o, k, at);
    });
  }

 private:
  bool split_;
  int64_t outer_ = 1, row_ = 0;
  std::vector<int64_t> blocks_;  // bytes of each part per outer index
};

// Gather: data [outer, A, inner], indices [N] -> out [outer, N, inner]. Indices are
// checked (negative ones wrap) into a buffer sized at build time.
class GatherKernel : public CpuKernel {
 public:
  explicit GatherKernel(const KernelContext& ctx) {
    const Shape& x = ctx.input(0).shape();
    int64_t rank = ctx.input(0).rank();
    axis_ = ctx.i("axis");
    if (axis_ < -rank || axis_ >= rank)
      ctx.fail("axis ", axis_, " is out of range for rank ", rank);
    if (axis_ < 0) axis_ += rank;
    DType it = ctx.input(1).dtype();
    if (it != DType::I64 && it != DType::I32)
      ctx.fail("indices dtype ", dtypeName(it), " is not supported");
    for (int64_t d = 0; d < rank; ++d) (d < axis_ ? outer_ : d == axis_ ? dim_ : inner_) *= x[d];
    inner_ *= static_cast<int64_t>(dtypeSize(ctx.input(0).dtype()));
    index_.resize(static_cast<size_t>(ctx.input(1).numel()));
  }

  void run(const KernelContext& ctx) override {
    const TensorView& iv = ctx.input(1);
    for (size_t n = 0; n < index_.size(); ++n) {
      int64_t v = iv.dtype() == DType::I64 ? iv.as<int64_t>()[n] : iv.as<int32_t>()[n];
      if (v < -dim_ || v >= dim_)
        ctx.fail("index ", v, " is out of range for axis ", axis_, " of size ", dim_);
      index_[n] = v < 0 ? v + dim_ : v;
    }
    const auto* x = static_cast<const uint8_t*>(ctx.input(0).data);
    auto* y = static_cast<uint8_t*>(ctx.output(0).data);
    const auto count = static_cast<int64_t>(index_.size());
    dispatchSize(static_cast<size_t>(inner_), [&](auto tag) {
      using E = typename decltype(tag)::type;
      bool typed = sizeof(E) == static_cast<size_t>(inner_);  // one element of 1-8 bytes
      parallelItems(outer_ * count, inner_, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) {
          const uint8_t* src = x + ((t / count) * dim_ + index_[t % count]) * inner_;
          if (typed)
            *reinterpret_cast<E*>(y + t * inner_) = *reinterpret_cast<const E*>(src);
          else
            std::memcpy(y + t * inner_, src, static_cast<size_t>(inner_));
        }
      });
    });
  }

 private:
  int64_t axis_ = 0, outer_ = 1, dim_ = 1, inner_ = 1;  // inner_ in bytes
  std::vector<int64_t> index_;
};

// Trilu: each row of each matrix is a copied part and a zeroed part.
std::unique_ptr<CpuKernel> triluKernel(const KernelContext& ctx) {
  const Shape& x = ctx.input(0).shape();
  if (x.size() < 2) ctx.fail("input must have rank >= 2");
  const int64_t rows = x[x.size() - 2], cols = x[x.size() - 1], k = ctx.i("k");
  const bool upper = ctx.i("upper") != 0;
  const auto elem = static_cast<int64_t>(dtypeSize(ctx.input(0).dtype()));
  return statelessKernel([=](const KernelContext& c) {
    const auto* in = static_cast<const uint8_t*>(c.input(0).data);
    auto* out = static_cast<uint8_t*>(c.output(0).data);
    parallelItems(
        c.input(0).numel() / std::max<int64_t>(cols, 1), cols * elem,
        [&](int64_t begin, int64_t end) {
          for (int64_t r = begin; r < end; ++r) {
            int64_t i = r % rows, off = r * cols * elem;
            // upper keeps j >= i + k, lower keeps j <= i + k
            int64_t split = std::clamp<int64_t>(upper ? i + k : i + k + 1, 0, cols) * elem;
            int64_t keep_at = upper ? split : 0, keep_len = upper ? cols * elem - split : split;
            int64_t zero_at = upper ? 0 : split, zero_len = cols * elem - keep_len;
            if (in != out)
              std::memcpy(out + off + keep_at, in + off + keep_at, static_cast<size_t>(keep_len));
            std::memset(out + off + zero_at, 0, static_cast<size_t>(zero_len));
          }
        });
  });
}

std::unique_ptr<CpuKernel> shapeKernel(const KernelContext& ctx) {
  const Shape& x = ctx.input(0).shape();
  auto [start, end] = shapeOpRange(ctx.i("start"), ctx.i("end"), ctx.input(0).rank());
  std::vector<int64_t> dims(x.begin() + start, x.begin() + end);
  if (static_cast<int64_t>(dims.size()) != ctx.output(0).numel())
    ctx.fail("output must have ", dims.size(), " elements");
  return statelessKernel([dims](const KernelContext& c) {
    std::copy(dims.begin(), dims.end(), c.output(0).as<int64_t>());
  });
}

template <typename T>
class RangeKernel : public CpuKernel {
 public:
  void run(const KernelContext& ctx) override {
    const auto start = load(*ctx.input(0).as<T>()), delta = load(*ctx.input(2).as<T>());
    T* y = ctx.output(0).as<T>();
    const int64_t n = ctx.output(0).numel();
    if constexpr (kIsFloat<T>) {
      for (int64_t i = 0; i < n; ++i)
        y[i] = store<T>(start + static_cast<decltype(start)>(i) * delta);
    } else {
      for (int64_t i = 0; i < n; ++i)
        y[i] = static_cast<T>(static_cast<int64_t>(start) + i * static_cast<int64_t>(delta));
    }
  }
};

std::unique_ptr<CpuKernel> rangeKernel(const KernelContext& ctx) {
  std::unique_ptr<CpuKernel> k;
  dispatchOrFail(ctx, NumericTypes{}, ctx.input(0).dtype(), [&](auto tag) {
    k = std::make_unique<RangeKernel<typename decltype(tag)::type>>();
  });
  return k;
}

std::unique_ptr<CpuKernel> constantOfShapeKernel(const KernelContext& ctx) {
  const Tensor& value = ctx.t("value");
  if (value.numel() != 1 || value.dtype() != ctx.output(0).dtype())
    ctx.fail("attribute 'value' must hold one ", dtypeName(ctx.output(0).dtype()), " element");
  uint64_t bits = 0;
  std::memcpy(&bits, value.raw(), value.bytes());
  const size_t elem = value.bytes();
  return statelessKernel([bits, elem](const KernelContext& c) {
    dispatchSize(elem, [&](auto tag) {
      using E = typename decltype(tag)::type;
      E v;
      std::memcpy(&v, &bits, sizeof(E));
      E* y = c.output(0).as<E>();
      parallelItems(c.output(0).numel(), sizeof(E),
                    [&](int64_t b, int64_t e) { std::fill(y + b, y + e, v); });
    });
  });
}

}  // namespace

void registerShapeKernels(CpuKernelRegistry& r) {
  for (const char* op : {"Reshape", "Flatten", "Squeeze", "Unsqueeze"}) r.add(op, copyKernel);
  r.add("Transpose", [](const KernelContext& ctx) -> std::unique_ptr<CpuKernel> {
    return std::make_unique<TransposeKernel>(ctx);
  });
  r.add("Slice", sliceKernel);
  r.add("Expand", expandKernel);
  r.add("Concat", [](const KernelContext& ctx) -> std::unique_ptr<CpuKernel> {
    return std::make_unique<ConcatKernel>(ctx, false);
  });
  r.add("Split", [](const KernelContext& ctx) -> std::unique_ptr<CpuKernel> {
    return std::make_unique<ConcatKernel>(ctx, true);
  });
  r.add("Gather", [](const KernelContext& ctx) -> std::unique_ptr<CpuKernel> {
    return std::make_unique<GatherKernel>(ctx);
  });
  r.add("Trilu", triluKernel);
  r.add("Pad", [](const KernelContext& ctx) {
    return placeKernel(ctx, padGeometry(ctx, ctx.output(0).shape()), ctx.f("value"));
  });
  r.add("Shape", shapeKernel);
  r.add("Range", rangeKernel);
  r.add("ConstantOfShape", constantOfShapeKernel);
}

}  // namespace ds::cpu
