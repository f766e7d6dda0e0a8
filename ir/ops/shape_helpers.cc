// Shared shape arithmetic for op schemas and the constant folder (see shape_helpers.h).
#include "ir/ops/shape_helpers.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace ds {

void requireFloat(const InferContext& ctx, size_t i) {
  if (!isFloat(ctx.dtype(i)))
    ctx.fail("input ", i, " must be a floating-point tensor, is ", dtypeName(ctx.dtype(i)));
}

void requireNumeric(const InferContext& ctx, size_t i) {
  if (ctx.dtype(i) == DType::Bool) ctx.fail("input ", i, " must be numeric, is bool");
}

void requireSameDType(const InferContext& ctx, size_t a, size_t b) {
  if (ctx.dtype(a) != ctx.dtype(b))
    ctx.fail("inputs ", a, " and ", b, " must have the same dtype, are ", dtypeName(ctx.dtype(a)),
             " and ", dtypeName(ctx.dtype(b)));
}

void requireNormParamDType(const InferContext& ctx, size_t x, size_t param) {
  DType t = ctx.dtype(x), p = ctx.dtype(param);
  bool sixteen = t == DType::F16 || t == DType::BF16;
  if (p != t && !(sixteen && p == DType::F32))
    ctx.fail("input ", param, " has dtype ", dtypeName(p), "; it must be ", dtypeName(t),
             sixteen ? " or f32" : "");
}

void requireIndexType(const InferContext& ctx, size_t i) {
  DType t = ctx.dtype(i);
  if (t != DType::I32 && t != DType::I64)
    ctx.fail("input ", i, " must be i32 or i64, is ", dtypeName(t));
}

void requireRank(const InferContext& ctx, size_t i, int64_t min_rank, int64_t max_rank) {
  int64_t r = ctx.rank(i);
  if (r < min_rank || r > max_rank) {
    if (min_rank == max_rank) ctx.fail("input ", i, " must have rank ", min_rank, ", has ", r);
    if (max_rank == kAnyRank) ctx.fail("input ", i, " must have rank >= ", min_rank, ", has ", r);
    ctx.fail("input ", i, " must have rank ", min_rank, " to ", max_rank, ", has ", r);
  }
}

void requireOneOf(const InferContext& ctx, const std::string& attr, const std::string& value,
                  const std::vector<std::string>& allowed) {
  if (std::find(allowed.begin(), allowed.end(), value) != allowed.end()) return;
  std::string list;
  for (const std::string& a : allowed) list += (list.empty() ? "" : ", ") + a;
  ctx.fail("attribute '", attr, "' is '", value, "', expected one of ", list);
}

std::vector<int64_t> normalizeAxes(const InferContext& ctx, const std::vector<int64_t>& axes,
                                   int64_t rank) {
  std::vector<int64_t> out;
  std::vector<bool> seen(static_cast<size_t>(rank), false);
  for (int64_t a : axes) {
    if (a < -rank || a >= rank) ctx.fail("axis ", a, " is out of range for rank ", rank);
    int64_t n = a < 0 ? a + rank : a;
    if (seen[n]) ctx.fail("axis ", a, " is repeated");
    seen[n] = true;
    out.push_back(n);
  }
  return out;
}

std::vector<int64_t> transposePerm(const InferContext& ctx, const std::vector<int64_t>& perm,
                                   int64_t rank) {
  if (perm.empty()) {
    std::vector<int64_t> rev(static_cast<size_t>(rank));
    for (int64_t i = 0; i < rank; ++i) rev[i] = rank - 1 - i;
    return rev;
  }
  if (static_cast<int64_t>(perm.size()) != rank)
    ctx.fail("perm has ", perm.size(), " entries for rank ", rank);
  std::vector<bool> seen(static_cast<size_t>(rank), false);
  for (int64_t p : perm) {
    if (p < 0 || p >= rank || seen[p])
      ctx.fail("perm ", shapeToString(perm), " is not a permutation");
    seen[p] = true;
  }
  return perm;
}

Shape reshapeTarget(const InferContext& ctx, const Shape& in, const std::vector<int64_t>& target,
                    bool allowzero) {
  Shape out(target.size());
  int64_t infer_at = -1;
  int64_t known = 1;
  for (size_t i = 0; i < target.size(); ++i) {
    int64_t d = target[i];
    if (d == -1) {
      if (infer_at >= 0) ctx.fail("shape ", shapeToString(target), " has more than one -1");
      infer_at = static_cast<int64_t>(i);
      continue;
    }
    if (d < -1) ctx.fail("shape ", shapeToString(target), " has a negative dim");
    if (d == 0 && !allowzero) {
      if (i >= in.size())
        ctx.fail("shape ", shapeToString(target), " copies dim ", i, " (0) past the input rank");
      d = in[i];
    }
    out[i] = d;
    known *= d;
  }
  int64_t total = numElements(in);
  if (infer_at >= 0) {
    if (known == 0 || total % known != 0)
      ctx.fail("cannot reshape ", shapeToString(in), " to ", shapeToString(target));
    out[infer_at] = total / known;
  } else if (known != total) {
    ctx.fail("cannot reshape ", shapeToString(in), " to ", shapeToString(target));
  }
  return out;
}

namespace {
// Clamps one Slice axis per ONNX: negative indices count from the end, then start/end
// are clamped to the valid range for the step's direction.
SliceAxis clampSliceAxis(int64_t dim, int64_t start, int64_t end, int64_t step) {
  if (start < 0) start += dim;
  if (end < 0) end += dim;
  SliceAxis s;
  s.step = step;
  if (dim == 0) return s;  // nothing to take (and clamping to [0, dim - 1] is empty)
  if (step > 0) {
    s.start = std::clamp<int64_t>(start, 0, dim);
    end = std::clamp<int64_t>(end, 0, dim);
    s.count = end > s.start ? (end - s.start - 1) / step + 1 : 0;
  } else {
    s.start = std::clamp<int64_t>(start, 0, dim - 1);
    end = std::clamp<int64_t>(end, -1, dim - 1);
    int64_t back =
        step == std::numeric_limits<int64_t>::min() ? std::numeric_limits<int64_t>::max() : -step;
    s.count = s.start > end ? (s.start - end - 1) / back + 1 : 0;
  }
  return s;
}
}  // namespace

std::vector<SliceAxis> resolveSlice(const InferContext& ctx, const Shape& shape,
                                    const std::vector<int64_t>& starts,
                                    const std::vector<int64_t>& ends,
                                    const std::vector<int64_t>& axes,
                                    const std::vector<int64_t>& steps) {
  auto rank = static_cast<int64_t>(shape.size());
  size_t n = starts.size();
  if (ends.size() != n) ctx.fail("starts has ", n, " entries but ends has ", ends.size());
  if (!axes.empty() && axes.size() != n)
    ctx.fail("axes has ", axes.size(), " entries, expected ", n);
  if (!steps.empty() && steps.size() != n)
    ctx.fail("steps has ", steps.size(), " entries, expected ", n);
  std::vector<int64_t> default_axes(n);
  for (size_t i = 0; i < n; ++i) default_axes[i] = static_cast<int64_t>(i);
  std::vector<int64_t> ax = normalizeAxes(ctx, axes.empty() ? default_axes : axes, rank);
  std::vector<SliceAxis> out(shape.size());
  for (size_t d = 0; d < shape.size(); ++d) out[d] = {0, 1, shape[d]};
  for (size_t i = 0; i < n; ++i) {
    int64_t step = steps.empty() ? 1 : steps[i];
    if (step == 0) ctx.fail("slice step is 0");
    out[ax[i]] = clampSliceAxis(shape[ax[i]], starts[i], ends[i], step);
  }
  return out;
}

std::vector<int64_t> splitSizes(const InferContext& ctx, int64_t dim,
                                const std::vector<int64_t>& split, size_t parts) {
  if (split.empty()) {
    auto p = static_cast<int64_t>(parts);
    if (dim % p != 0) ctx.fail("dim ", dim, " does not split into ", p, " equal parts");
    return std::vector<int64_t>(parts, dim / p);
  }
  if (split.size() != parts)
    ctx.fail("split has ", split.size(), " entries for ", parts, " outputs");
  int64_t sum = 0;
  for (int64_t s : split) {
    if (s < 0) ctx.fail("split ", shapeToString(split), " has a negative size");
    sum += s;
  }
  if (sum != dim) ctx.fail("split ", shapeToString(split), " does not add up to dim ", dim);
  return split;
}

std::pair<int64_t, int64_t> shapeOpRange(int64_t start, int64_t end, int64_t rank) {
  if (start < 0) start += rank;
  if (end < 0) end += rank;
  start = std::clamp<int64_t>(start, 0, rank);
  end = std::clamp<int64_t>(end, 0, rank);
  return {start, std::max(start, end)};
}

int64_t rangeLength(const InferContext& ctx, const Tensor& start, const Tensor& limit,
                    const Tensor& delta) {
  if (isFloat(start.dtype())) {
    double d = delta.getDouble(0);
    if (d == 0.0) ctx.fail("Range delta is 0");
    double n = std::ceil((limit.getDouble(0) - start.getDouble(0)) / d);
    return n > 0 ? static_cast<int64_t>(n) : 0;
  }
  int64_t d = delta.getInt(0);
  if (d == 0) ctx.fail("Range delta is 0");
  int64_t span = limit.getInt(0) - start.getInt(0);
  int64_t q = span / d;
  if (span % d != 0 && ((span > 0) == (d > 0))) ++q;
  return std::max<int64_t>(q, 0);
}

std::vector<int64_t> stridesOf(const Shape& shape) {
  std::vector<int64_t> strides(shape.size(), 1);
  for (size_t i = shape.size(); i-- > 1;) strides[i - 1] = strides[i] * shape[i];
  return strides;
}

std::vector<int64_t> broadcastIndices(const Shape& in, const Shape& out) {
  size_t offset = out.size() - in.size();
  std::vector<int64_t> in_strides = stridesOf(in);
  std::vector<int64_t> result(static_cast<size_t>(numElements(out)));
  std::vector<int64_t> idx(out.size(), 0);
  for (size_t linear = 0; linear < result.size(); ++linear) {
    int64_t src = 0;
    for (size_t d = 0; d < in.size(); ++d)
      if (in[d] != 1) src += idx[d + offset] * in_strides[d];
    result[linear] = src;
    for (size_t d = out.size(); d-- > 0;) {  // advance the output multi-index
      if (++idx[d] < out[d]) break;
      idx[d] = 0;
    }
  }
  return result;
}

DType crossEntropyLossDType(DType scores) {
  return scores == DType::F16 || scores == DType::BF16 ? DType::F32 : scores;
}

void checkPaddedClasses(InferContext& ctx, size_t scores, size_t weights, size_t max_outputs) {
  const int64_t classes = ctx.node().i("classes"), c = ctx.shape(scores)[1];
  if (classes < 0 || classes > c)
    ctx.fail("classes ", classes, " must lie in [0, ", c, "] (the class axis)");
  if (classes == 0 || classes == c) return;
  if (ctx.hasInput(weights)) ctx.fail("classes ", classes, " < ", c, " takes no class weights");
  if (ctx.numOutputs() > max_outputs) ctx.fail("classes ", classes, " < ", c, " has no log_prob");
}

int64_t softmaxMaskRows(const Shape& x, const Shape& mask) {
  if (x.empty() || mask.empty() || mask.size() > x.size() || mask.back() != x.back()) return 0;
  for (size_t d = 0; d + 2 < mask.size(); ++d)
    if (mask[d] != 1) return 0;
  if (mask.size() == 1) return 1;
  const int64_t rows = mask[mask.size() - 2];
  return rows == 1 || (x.size() >= 2 && rows == x[x.size() - 2]) ? rows : 0;
}

AttentionDims attentionDims(const std::vector<Shape>& qkv, double scale, bool causal) {
  AttentionDims d;
  d.scale = scale;
  d.causal = causal;
  if (qkv.size() == 1) {  // [B, T, 3, H, D]
    const Shape& p = qkv[0];
    d.packed = true;
    d.batch = p[0];
    d.q_len = d.kv_len = p[1];
    d.heads = p[3];
    d.head = d.value_head = p[4];
    d.q_row = d.k_row = d.v_row = 3 * d.heads * d.head;
    d.k_offset = d.heads * d.head;
    d.v_offset = 2 * d.heads * d.head;
  } else {
    const Shape &q = qkv.at(0), &k = qkv.at(1), &v = qkv.at(2);
    d.batch = q[0];
    d.q_len = q[1];
    d.kv_len = k[1];
    d.heads = q[2];
    d.head = q[3];
    d.value_head = v[3];
    d.q_row = d.k_row = d.heads * d.head;
    d.v_row = d.heads * d.value_head;
  }
  if (d.scale == 0) d.scale = 1.0 / std::sqrt(static_cast<double>(d.head));
  return d;
}

size_t attentionOperandCount(const std::string& op, size_t inputs) {
  const size_t others = op == "FusedAttentionGrad" ? 3 : 0;  // dY, Y, L
  DS_CHECK(inputs == others + 1 || inputs == others + 3, op, " takes ",
           others ? "dY, Q, K, V, Y, L or dY, QKV, Y, L" : "Q, K, V or a packed QKV", ", not ",
           inputs, " inputs");
  return inputs - others;
}

DType attentionStatsDType(DType operands) {
  return operands == DType::F64 ? DType::F64 : DType::F32;
}

}  // namespace ds
