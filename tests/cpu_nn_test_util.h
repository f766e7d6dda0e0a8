// Helpers of the NN CPU kernel tests: random tensors, tolerance checks (f32
// rtol 1e-4/atol 1e-5, f64 1e-10) and sliding-window geometry computed
// independently of the kernels, with a tap walker for the naive references.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "ir/tensor.h"

namespace ds::test {

using Vec = std::vector<double>;
using Ints = std::vector<int64_t>;
inline const DType kTypes[] = {DType::F32, DType::F64};

inline Tensor rnd(DType t, const Shape& s, uint32_t seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  Vec v(static_cast<size_t>(numElements(s)));
  for (double& x : v) x = dist(gen);
  return Tensor::fromDoubles(t, s, v);
}

inline void expectNear(const Tensor& got, const Vec& want, const Shape& shape) {
  ASSERT_EQ(shapeToString(got.shape()), shapeToString(shape));
  ASSERT_EQ(got.numel(), static_cast<int64_t>(want.size()));
  bool f32 = got.dtype() == DType::F32;
  double rtol = f32 ? 1e-4 : 1e-10, atol = f32 ? 1e-5 : 1e-10;
  int bad = 0;
  for (size_t i = 0; i < want.size() && bad < 5; ++i) {
    double g = got.getDouble(static_cast<int64_t>(i));
    bool ok = std::fabs(g - want[i]) <= atol + rtol * std::fabs(want[i]) ||
              (std::isnan(g) && std::isnan(want[i]));
    if (!ok)
      ADD_FAILURE() << "element " << i << ": got " << g << ", want " << want[i] << (++bad, "");
  }
}

// ---- sliding-window geometry, computed independently of the kernels ----

struct Geo {
  Ints in, k, s, d, pb, pe, out;
};

inline Geo geometry(const Ints& in, const Ints& k, Ints s, Ints d, Ints pads,
                    const std::string& auto_pad, bool ceil_mode) {
  size_t n = in.size();
  if (s.empty()) s.assign(n, 1);
  if (d.empty()) d.assign(n, 1);
  if (pads.empty()) pads.assign(2 * n, 0);
  Geo g{in, k, s, d, {}, {}, {}};
  for (size_t i = 0; i < n; ++i) {
    int64_t span = (k[i] - 1) * d[i] + 1, b = pads[i], e = pads[i + n], o;
    if (auto_pad == "SAME_UPPER") {
      o = (in[i] + s[i] - 1) / s[i];
      int64_t total = std::max<int64_t>(0, (o - 1) * s[i] + span - in[i]);
      b = total / 2;
      e = total - b;
    } else {
      double q = static_cast<double>(in[i] + b + e - span) / static_cast<double>(s[i]);
      o = static_cast<int64_t>(ceil_mode ? std::ceil(q) : std::floor(q)) + 1;
      if (ceil_mode && (o - 1) * s[i] >= in[i] + b) --o;
    }
    g.pb.push_back(b);
    g.pe.push_back(e);
    g.out.push_back(o);
  }
  return g;
}

// Leading unit dims up to 3 spatial dims.
inline Geo as3(Geo g) {
  size_t extra = 3 - g.in.size();
  for (Ints* v : {&g.in, &g.k, &g.s, &g.d, &g.out}) v->insert(v->begin(), extra, 1);
  for (Ints* v : {&g.pb, &g.pe}) v->insert(v->begin(), extra, 0);
  return g;
}

inline int64_t prod(const Ints& v) {
  int64_t p = 1;
  for (int64_t x : v) p *= x;
  return p;
}

// Calls fn(tap position per dim, tap index) for every tap of output (o0,o1,o2).
template <typename Fn>
void forTaps(const Geo& g, int64_t o0, int64_t o1, int64_t o2, Fn fn) {
  const int64_t o[3] = {o0, o1, o2};
  for (int64_t a = 0; a < g.k[0]; ++a)
    for (int64_t b = 0; b < g.k[1]; ++b)
      for (int64_t c = 0; c < g.k[2]; ++c) {
        const int64_t t[3] = {a, b, c};
        int64_t pos[3];
        for (int i = 0; i < 3; ++i) pos[i] = o[i] * g.s[i] - g.pb[i] + t[i] * g.d[i];
        fn(pos, (a * g.k[1] + b) * g.k[2] + c);
      }
}

inline bool inside(const Geo& g, const int64_t* pos) {
  for (int i = 0; i < 3; ++i)
    if (pos[i] < 0 || pos[i] >= g.in[i]) return false;
  return true;
}

inline int64_t flat(const Geo& g, const int64_t* pos) {
  return (pos[0] * g.in[1] + pos[1]) * g.in[2] + pos[2];
}

}  // namespace ds::test
