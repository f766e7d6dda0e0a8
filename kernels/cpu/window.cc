// Window resolution for the sliding-window kernels (see window.h). Pads follow
// the ONNX rule: NOTSET takes `pads`, VALID none, SAME_UPPER/SAME_LOWER split
// max(0, (out-1)*stride + span - in) with the odd element at the end/begin.
#include "kernels/cpu/window.h"

#include <algorithm>

namespace ds::cpu {

namespace {

std::vector<int64_t> intsOr(const KernelContext& ctx, const char* name, size_t n, int64_t fill) {
  std::vector<int64_t> v = ctx.ints(name);
  if (v.empty()) v.assign(n, fill);
  if (v.size() != n) ctx.fail("attribute '", name, "' has ", v.size(), " entries, expected ", n);
  return v;
}

int64_t product(const std::vector<int64_t>& v) {
  int64_t p = 1;
  for (int64_t x : v) p *= x;
  return p;
}

}  // namespace

int64_t Window::inSize() const {
  return product(in);
}
int64_t Window::outSize() const {
  return product(out);
}

Window Window::as3d() const {
  Window w = *this;
  auto pad = [&](std::vector<int64_t>& v, int64_t fill) {
    v.insert(v.begin(), 3 - spatial(), fill);
  };
  pad(w.in, 1);
  pad(w.out, 1);
  pad(w.kernel, 1);
  pad(w.strides, 1);
  pad(w.dilations, 1);
  pad(w.pad_begin, 0);
  pad(w.pad_end, 0);
  return w;
}

Window resolveWindow(const KernelContext& ctx, const std::vector<int64_t>& kernel) {
  const Shape& x = ctx.input(0).shape();
  const Shape& y = ctx.output(0).shape();
  size_t k = kernel.size();
  if (x.size() != k + 2 || y.size() != k + 2) ctx.fail("window rank does not match the tensors");
  Window w;
  w.n = x[0];
  w.c_in = x[1];
  w.c_out = y[1];
  w.in.assign(x.begin() + 2, x.end());
  w.out.assign(y.begin() + 2, y.end());
  w.kernel = kernel;
  w.strides = intsOr(ctx, "strides", k, 1);
  w.dilations = intsOr(ctx, "dilations", k, 1);
  std::vector<int64_t> pads = intsOr(ctx, "pads", 2 * k, 0);
  const std::string& auto_pad = ctx.s("auto_pad");
  for (size_t i = 0; i < k; ++i) {
    int64_t begin = pads[i], end = pads[i + k];
    if (auto_pad == "VALID") {
      begin = end = 0;
    } else if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
      int64_t span = (kernel[i] - 1) * w.dilations[i] + 1;
      int64_t total = std::max<int64_t>(0, (w.out[i] - 1) * w.strides[i] + span - w.in[i]);
      begin = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
      end = total - begin;
    }
    w.pad_begin.push_back(begin);
    w.pad_end.push_back(end);
  }
  return w;
}

TapTable tapTable(const Window& w, size_t d) {
  TapTable t;
  for (int64_t o = 0; o < w.out[d]; ++o) {
    int64_t lo = w.kernel[d], hi = 0, padded = 0;
    for (int64_t k = 0; k < w.kernel[d]; ++k) {
      int64_t pos = o * w.strides[d] - w.pad_begin[d] + k * w.dilations[d];
      if (pos >= 0 && pos < w.in[d]) {
        lo = std::min(lo, k);
        hi = k + 1;
      }
      if (pos >= -w.pad_begin[d] && pos < w.in[d] + w.pad_end[d]) ++padded;
    }
    t.lo.push_back(std::min(lo, hi));
    t.hi.push_back(hi);
    t.padded.push_back(padded);
  }
  return t;
}

}  // namespace ds::cpu
