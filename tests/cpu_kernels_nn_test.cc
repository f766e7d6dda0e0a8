// CPU kernels of the neural-network ops (Conv, Gemm, MatMul, pooling, batch and
// layer normalisation, softmax cross-entropy) against naive double-precision
// references written here, on random inputs in f32 and f64; plus a conv timing.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>

#include "ir/op_registry.h"
#include "kernels/cpu/kernel.h"
#include "kernels/cpu/run_node.h"
#include "tests/cpu_nn_test_util.h"

namespace ds::cpu {
namespace {

using test::as3;
using test::expectNear;
using test::flat;
using test::forTaps;
using test::Geo;
using test::geometry;
using test::inside;
using test::Ints;
using test::kTypes;
using test::prod;
using test::rnd;
using test::Vec;

// ---- Conv ----

struct ConvCase {
  Shape x, w;
  int64_t group;
  Ints strides, pads, dilations;
  std::string auto_pad;
  bool bias;
};

Vec refConv(const ConvCase& c, const Geo& g3, const Vec& x, const Vec& w, const Vec& b) {
  int64_t n = c.x[0], ci = c.x[1], co = c.w[0], icg = ci / c.group, ocg = co / c.group;
  int64_t isz = prod(g3.in), osz = prod(g3.out), ksz = prod(g3.k);
  Vec y(static_cast<size_t>(n * co * osz));
  for (int64_t b0 = 0; b0 < n; ++b0)
    for (int64_t oc = 0; oc < co; ++oc)
      for (int64_t o = 0; o < osz; ++o) {
        double acc = c.bias ? b[oc] : 0.0;
        for (int64_t ic = 0; ic < icg; ++ic) {
          int64_t xc = (b0 * ci + oc / ocg * icg + ic) * isz;
          forTaps(g3, o / (g3.out[1] * g3.out[2]), o / g3.out[2] % g3.out[1], o % g3.out[2],
                  [&](const int64_t* pos, int64_t t) {
                    if (inside(g3, pos))
                      acc += x[xc + flat(g3, pos)] * w[(oc * icg + ic) * ksz + t];
                  });
        }
        y[(b0 * co + oc) * osz + o] = acc;
      }
  return y;
}

void checkConv(const ConvCase& c, DType t) {
  Tensor x = rnd(t, c.x, 1), w = rnd(t, c.w, 2), b = c.bias ? rnd(t, {c.w[0]}, 3) : Tensor();
  Geo g = geometry(Ints(c.x.begin() + 2, c.x.end()), Ints(c.w.begin() + 2, c.w.end()), c.strides,
                   c.dilations, c.pads, c.auto_pad, false);
  AttributeMap attrs{{"group", c.group}, {"strides", c.strides}, {"dilations", c.dilations}};
  if (c.auto_pad.empty()) {
    attrs["pads"] = c.pads;
  } else {
    attrs["auto_pad"] = c.auto_pad;
  }
  std::vector<Tensor> in{x, w};
  if (c.bias) in.push_back(b);
  Tensor y = runOp("Conv", in, attrs)[0];
  Shape shape{c.x[0], c.w[0]};
  shape.insert(shape.end(), g.out.begin(), g.out.end());
  expectNear(y, refConv(c, as3(g), x.toDoubles(), w.toDoubles(), c.bias ? b.toDoubles() : Vec{}),
             shape);
}

TEST(CpuNnConv, MatchesDirectConvolution) {
  const ConvCase cases[] = {
      {{2, 3, 9, 9}, {4, 3, 3, 3}, 1, {2, 2}, {1, 1, 1, 1}, {}, "", true},     // stride 2, pads
      {{1, 4, 10, 10}, {6, 4, 3, 3}, 1, {}, {2, 2, 2, 2}, {2, 2}, "", false},  // dilation 2
      {{2, 4, 8, 8}, {6, 2, 3, 3}, 2, {}, {1, 1, 1, 1}, {}, "", true},         // groups 2
      {{1, 8, 7, 7}, {8, 1, 3, 3}, 8, {}, {1, 1, 1, 1}, {}, "", true},         // depthwise
      {{2, 16, 5, 5}, {8, 16, 1, 1}, 1, {}, {}, {}, "", false},                // 1x1
      {{1, 3, 32, 32}, {8, 3, 7, 7}, 1, {2, 2}, {3, 3, 3, 3}, {}, "", true},   // ResNet stem
      {{1, 2, 7, 7}, {3, 2, 4, 4}, 1, {2, 2}, {}, {}, "SAME_UPPER", true},     // auto_pad
      {{1, 3, 8, 9}, {5, 3, 3, 2}, 1, {1, 2}, {0, 1, 2, 0}, {}, "", false},    // asymmetric
      {{2, 3, 20}, {4, 3, 5}, 1, {2}, {1, 2}, {}, "", true},                   // 1-D
      {{1, 4, 5, 6, 7}, {4, 2, 3, 3, 3}, 2, {1, 2, 1}, {1, 1, 1, 1, 1, 1}, {}, "", true},  // 3-D
  };
  for (DType t : kTypes)
    for (size_t i = 0; i < std::size(cases); ++i) {
      SCOPED_TRACE(std::string(dtypeName(t)) + " case " + std::to_string(i));
      checkConv(cases[i], t);
    }
}

TEST(CpuNnConv, RejectsOtherDTypes) {
  Tensor x(TensorType{DType::F16, {1, 1, 4, 4}}), w(TensorType{DType::F16, {1, 1, 3, 3}});
  EXPECT_THROW(runOp("Conv", {x, w}), Error);
}

// ---- Gemm and MatMul ----

// C[m,n] = sum_p A(i,p) B(p,j) with element accessors.
template <typename A, typename B>
Vec naiveMatMul(int64_t m, int64_t n, int64_t k, A a, B b) {
  Vec c(static_cast<size_t>(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t p = 0; p < k; ++p) c[i * n + j] += a(i, p) * b(p, j);
  return c;
}

TEST(CpuNnGemm, TransposesAlphaBetaAndBroadcastC) {
  const int64_t m = 5, n = 7, k = 6;
  const Shape c_shapes[] = {{n}, {}, {m, n}, {m, 1}};
  for (DType t : kTypes)
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb)
        for (int ci = -1; ci < 4; ++ci) {
          SCOPED_TRACE(std::string(dtypeName(t)) + " tA=" + std::to_string(ta) +
                       " tB=" + std::to_string(tb) + " C=" + std::to_string(ci));
          Tensor a = rnd(t, ta ? Shape{k, m} : Shape{m, k}, 4);
          Tensor b = rnd(t, tb ? Shape{n, k} : Shape{k, n}, 5);
          Vec av = a.toDoubles(), bv = b.toDoubles();
          Vec want = naiveMatMul(
              m, n, k, [&](int64_t i, int64_t p) { return ta ? av[p * m + i] : av[i * k + p]; },
              [&](int64_t p, int64_t j) { return tb ? bv[j * k + p] : bv[p * n + j]; });
          AttributeMap attrs{
              {"transA", int64_t{ta}}, {"transB", int64_t{tb}}, {"alpha", 0.5}, {"beta", 2.0}};
          std::vector<Tensor> in{a, b};
          for (double& v : want) v *= 0.5;
          if (ci >= 0) {
            Shape cs = c_shapes[ci];
            in.push_back(rnd(t, cs, 6));
            Vec cv = in.back().toDoubles();
            for (int64_t i = 0; i < m; ++i)
              for (int64_t j = 0; j < n; ++j) {
                bool rows = cs.size() == 2 && cs[0] > 1, cols = !cs.empty() && cs.back() > 1;
                want[i * n + j] += 2.0 * cv[(rows ? i * cs.back() : 0) + (cols ? j : 0)];
              }
          }
          expectNear(runOp("Gemm", in, attrs)[0], want, {m, n});
        }
}

// numpy.matmul reference: batch dims broadcast, 1-D operands promoted then dropped.
Vec refMatMul(const Tensor& a, const Tensor& b, Shape* out_shape) {
  Shape as = a.shape(), bs = b.shape();
  bool av = as.size() == 1, bv = bs.size() == 1;
  if (av) as.insert(as.begin(), 1);
  if (bv) bs.push_back(1);
  size_t r = std::max(as.size(), bs.size());
  as.insert(as.begin(), r - as.size(), 1);
  bs.insert(bs.begin(), r - bs.size(), 1);
  int64_t m = as[r - 2], k = as[r - 1], n = bs[r - 1];
  Shape batch;
  for (size_t i = 0; i + 2 < r; ++i) batch.push_back(std::max(as[i], bs[i]));
  Vec x = a.toDoubles(), y = b.toDoubles(), out;
  for (int64_t bi = 0; bi < prod(batch); ++bi) {
    int64_t ao = 0, bo = 0, rem = bi;
    Ints idx(batch.size());
    for (size_t d = batch.size(); d-- > 0;) idx[d] = rem % batch[d], rem /= batch[d];
    for (size_t d = 0; d < batch.size(); ++d) {
      ao = ao * as[d] + (as[d] == 1 ? 0 : idx[d]);
      bo = bo * bs[d] + (bs[d] == 1 ? 0 : idx[d]);
    }
    Vec c = naiveMatMul(
        m, n, k, [&](int64_t i, int64_t p) { return x[(ao * m + i) * k + p]; },
        [&](int64_t p, int64_t j) { return y[(bo * k + p) * n + j]; });
    out.insert(out.end(), c.begin(), c.end());
  }
  *out_shape = batch;
  if (!av) out_shape->push_back(m);
  if (!bv) out_shape->push_back(n);
  return out;
}

TEST(CpuNnMatMul, NumpySemantics) {
  const std::pair<Shape, Shape> cases[] = {
      {{2, 3, 4}, {4, 5}},    {{4}, {4, 5}}, {{2, 1, 3, 4}, {5, 4, 6}},
      {{3, 4}, {4}},          {{4}, {4}},    {{3, 1, 2, 5}, {1, 4, 5, 3}},
      {{70, 150}, {150, 600}}};
  for (DType t : kTypes)
    for (const auto& [sa, sb] : cases) {
      SCOPED_TRACE(std::string(dtypeName(t)) + " " + shapeToString(sa) + "x" + shapeToString(sb));
      Tensor a = rnd(t, sa, 7), b = rnd(t, sb, 8);
      Shape shape;
      Vec want = refMatMul(a, b, &shape);
      expectNear(runOp("MatMul", {a, b})[0], want, shape);
    }
}

TEST(CpuNnRegistry, EveryNnOpHasACpuKernel) {
  for (const char* op : {"Conv", "Gemm", "MatMul", "MaxPool", "AveragePool", "GlobalAveragePool",
                         "BatchNormalization", "LayerNormalization", "SoftmaxCrossEntropyLoss"}) {
    EXPECT_NE(OpRegistry::instance().find(op), nullptr) << op;
    EXPECT_NE(CpuKernelRegistry::instance().find(op), nullptr) << op;
  }
}

// ---- timing (printed, not asserted) ----

TEST(CpuNnBench, ResNetConv3x3) {
  Tensor x = rnd(DType::F32, {8, 64, 56, 56}, 9), w = rnd(DType::F32, {64, 64, 3, 3}, 10);
  Tensor y(TensorType{DType::F32, {8, 64, 56, 56}});
  KernelContext ctx;
  ctx.op = ctx.node_name = "Conv";
  ctx.attrs = {{"auto_pad", std::string("NOTSET")},
               {"dilations", Ints{1, 1}},
               {"pads", Ints{1, 1, 1, 1}},
               {"strides", Ints{1, 1}},
               {"group", int64_t{1}},
               {"kernel_shape", Ints{3, 3}}};
  ctx.inputs = {{x.raw(), x.type()}, {w.raw(), w.type()}};
  ctx.outputs = {{y.raw(), y.type()}};
  auto t0 = std::chrono::steady_clock::now();
  std::unique_ptr<CpuKernel> k = (*CpuKernelRegistry::instance().find("Conv"))(ctx);
  auto t1 = std::chrono::steady_clock::now();
  k->run(ctx);  // warm-up
  const int runs = 5;
  auto t2 = std::chrono::steady_clock::now();
  for (int i = 0; i < runs; ++i) k->run(ctx);
  auto t3 = std::chrono::steady_clock::now();
  double build_ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
  double run_ms = std::chrono::duration<double, std::milli>(t3 - t2).count() / runs;
  double gflop = 2.0 * 8 * 64 * 56 * 56 * 64 * 9 / 1e9;
  std::printf(
      "[bench] Conv f32 8x64x56x56, 64 3x3 pad 1: build %.1f ms, run %.2f ms (%.1f GFLOP/s)\n",
      build_ms, run_ms, gflop / (run_ms / 1e3));
}

}  // namespace
}  // namespace ds::cpu
