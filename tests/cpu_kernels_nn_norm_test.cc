// CPU kernels of pooling, BatchNormalization, LayerNormalization and
// SoftmaxCrossEntropyLoss against naive double-precision references written
// here, on random inputs in f32 and f64 (the rest of the NN ops:
// cpu_kernels_nn_test.cc).
#include <gtest/gtest.h>

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

std::string trace(DType t, size_t i) {
  return std::string(dtypeName(t)) + " case " + std::to_string(i);
}

// ---- pooling ----

struct PoolCase {
  Shape x;
  Ints kernel, strides, pads, dilations;
  bool ceil;
};

// Max or average (divisor: valid taps, or taps inside the explicit padding).
Vec refPool(bool max, bool include_pad, int64_t planes, const Geo& g, const Vec& x) {
  Vec y;
  for (int64_t p = 0; p < planes; ++p)
    for (int64_t o = 0; o < prod(g.out); ++o) {
      double best = -INFINITY, sum = 0.0, valid = 0.0, padded = 0.0;
      forTaps(g, o / (g.out[1] * g.out[2]), o / g.out[2] % g.out[1], o % g.out[2],
              [&](const int64_t* pos, int64_t) {
                bool in_pad = true;
                for (int i = 0; i < 3; ++i)
                  in_pad = in_pad && pos[i] >= -g.pb[i] && pos[i] < g.in[i] + g.pe[i];
                padded += in_pad;
                if (!inside(g, pos)) return;
                double v = x[p * prod(g.in) + flat(g, pos)];
                best = std::max(best, v);
                sum += v;
                valid += 1.0;
              });
      y.push_back(max ? best : sum / (include_pad ? padded : valid));
    }
  return y;
}

TEST(CpuNnPool, MaxAndAverageMatchNaiveWindows) {
  const PoolCase cases[] = {
      {{2, 3, 9, 9}, {3, 3}, {2, 2}, {1, 1, 1, 1}, {}, true},
      {{1, 2, 8, 8}, {3, 3}, {2, 2}, {0, 0, 1, 1}, {}, true},
      {{1, 2, 7, 7}, {2, 2}, {2, 2}, {}, {}, true},
      {{1, 2, 10, 10}, {3, 3}, {1, 1}, {2, 2, 2, 2}, {2, 2}, false},
      {{2, 3, 11}, {4}, {3}, {1, 2}, {}, true},
      {{1, 2, 5, 6, 5}, {2, 3, 2}, {2, 2, 2}, {}, {}, true},
      {{2, 4, 12, 12}, {3, 3}, {2, 2}, {1, 1, 1, 1}, {}, false},
  };
  for (DType t : kTypes)
    for (size_t i = 0; i < std::size(cases); ++i) {
      const PoolCase& c = cases[i];
      Tensor x = rnd(t, c.x, static_cast<uint32_t>(i));
      Geo g = geometry(Ints(c.x.begin() + 2, c.x.end()), c.kernel, c.strides, c.dilations, c.pads,
                       "", c.ceil);
      Shape shape{c.x[0], c.x[1]};
      shape.insert(shape.end(), g.out.begin(), g.out.end());
      AttributeMap attrs{{"kernel_shape", c.kernel},
                         {"strides", c.strides},
                         {"pads", c.pads},
                         {"dilations", c.dilations},
                         {"ceil_mode", int64_t{c.ceil}}};
      SCOPED_TRACE(trace(t, i) + " MaxPool");
      expectNear(runOp("MaxPool", {x}, attrs)[0],
                 refPool(true, false, c.x[0] * c.x[1], as3(g), x.toDoubles()), shape);
      for (int64_t include : {0, 1}) {
        SCOPED_TRACE("AveragePool count_include_pad=" + std::to_string(include));
        attrs["count_include_pad"] = include;
        expectNear(runOp("AveragePool", {x}, attrs)[0],
                   refPool(false, include, c.x[0] * c.x[1], as3(g), x.toDoubles()), shape);
      }
    }
}

TEST(CpuNnPool, GlobalAveragePool) {
  for (DType t : kTypes)
    for (Shape s : {Shape{2, 3, 5, 7}, Shape{2, 3, 4}, Shape{1, 2, 3, 4, 5}}) {
      SCOPED_TRACE(std::string(dtypeName(t)) + shapeToString(s));
      Tensor x = rnd(t, s, 11);
      Vec xv = x.toDoubles(), want(static_cast<size_t>(s[0] * s[1]), 0.0);
      int64_t size = x.numel() / (s[0] * s[1]);
      for (int64_t i = 0; i < x.numel(); ++i) want[i / size] += xv[i] / static_cast<double>(size);
      Shape out = s;
      std::fill(out.begin() + 2, out.end(), 1);
      expectNear(runOp("GlobalAveragePool", {x})[0], want, out);
    }
}

// ---- BatchNormalization ----

TEST(CpuNnBatchNorm, InferenceAndTrainingWithRunningStats) {
  const double eps = 1e-3, momentum = 0.8;
  for (DType t : kTypes)
    for (Shape s : {Shape{4, 3, 5, 5}, Shape{6, 4}, Shape{2, 3, 7}})
      for (int training = 0; training < 2; ++training) {
        SCOPED_TRACE(std::string(dtypeName(t)) + shapeToString(s) + " training " +
                     std::to_string(training));
        int64_t n = s[0], c = s[1], inner = numElements(s) / (n * c);
        Tensor x = rnd(t, s, 12, -2.0, 3.0), scale = rnd(t, {c}, 13), bias = rnd(t, {c}, 14);
        Tensor mean = rnd(t, {c}, 15), var = rnd(t, {c}, 16, 0.5, 1.5);
        Vec xv = x.toDoubles(), m = mean.toDoubles(), v = var.toDoubles(), y(xv.size());
        Vec run_m = m, run_v = v;
        for (int64_t ch = 0; ch < c; ++ch) {
          if (training) {
            double sum = 0.0, sq = 0.0, count = static_cast<double>(n * inner);
            for (int64_t b = 0; b < n; ++b)
              for (int64_t i = 0; i < inner; ++i) sum += xv[(b * c + ch) * inner + i];
            m[ch] = sum / count;
            for (int64_t b = 0; b < n; ++b)
              for (int64_t i = 0; i < inner; ++i)
                sq += std::pow(xv[(b * c + ch) * inner + i] - m[ch], 2);
            v[ch] = sq / count;  // population variance, for Y and (per ONNX) running_var
            run_m[ch] = run_m[ch] * momentum + m[ch] * (1 - momentum);
            run_v[ch] = run_v[ch] * momentum + v[ch] * (1 - momentum);
          }
          for (int64_t b = 0; b < n; ++b)
            for (int64_t i = 0; i < inner; ++i) {
              int64_t k = (b * c + ch) * inner + i;
              y[k] = (xv[k] - m[ch]) / std::sqrt(v[ch] + eps) * scale.getDouble(ch) +
                     bias.getDouble(ch);
            }
        }
        AttributeMap attrs{
            {"epsilon", eps}, {"momentum", momentum}, {"training_mode", int64_t{training}}};
        std::vector<Tensor> out =
            runOp("BatchNormalization", {x, scale, bias, mean, var}, attrs, training ? 3 : 1);
        expectNear(out[0], y, s);
        if (!training) continue;
        expectNear(out[1], run_m, {c});
        expectNear(out[2], run_v, {c});
      }
}

// ---- LayerNormalization ----

TEST(CpuNnLayerNorm, LastAxisAndAxisOne) {
  struct Case {
    Shape x;
    int64_t axis;
    Shape scale, bias;  // bias {} = absent
  };
  const Case cases[] = {
      {{3, 4, 8}, -1, {8}, {8}}, {{2, 3, 4, 5}, 1, {3, 4, 5}, {}}, {{2, 3, 4, 5}, 1, {4, 1}, {5}}};
  for (DType t : kTypes)
    for (size_t ci = 0; ci < std::size(cases); ++ci) {
      const Case& c = cases[ci];
      SCOPED_TRACE(trace(t, ci));
      size_t axis =
          static_cast<size_t>(c.axis < 0 ? c.axis + static_cast<int64_t>(c.x.size()) : c.axis);
      Shape norm(c.x.begin() + static_cast<int64_t>(axis), c.x.end());
      int64_t inner = numElements(norm), outer = numElements(c.x) / inner;
      Tensor x = rnd(t, c.x, 17, -1.0, 2.0), scale = rnd(t, c.scale, 18);
      Tensor bias = c.bias.empty() ? Tensor() : rnd(t, c.bias, 19);
      // Element i of a parameter broadcast (numpy rules) to the normalised shape.
      auto at = [&](const Tensor& p, int64_t i) {
        int64_t idx = 0, rem = i, stride = 1;
        for (size_t d = norm.size(); d-- > 0;) {
          int64_t coord = rem % norm[d];
          rem /= norm[d];
          int64_t pd =
              static_cast<int64_t>(d) - static_cast<int64_t>(norm.size() - p.shape().size());
          if (pd < 0) continue;
          if (p.shape()[pd] != 1) idx += coord * stride;
          stride *= p.shape()[pd];
        }
        return p.getDouble(idx);
      };
      Vec xv = x.toDoubles(), y(xv.size()), means, invs;
      for (int64_t r = 0; r < outer; ++r) {
        double mean = 0.0, var = 0.0;
        for (int64_t i = 0; i < inner; ++i) mean += xv[r * inner + i] / static_cast<double>(inner);
        for (int64_t i = 0; i < inner; ++i)
          var += std::pow(xv[r * inner + i] - mean, 2) / static_cast<double>(inner);
        double inv = 1.0 / std::sqrt(var + 1e-5);
        for (int64_t i = 0; i < inner; ++i)
          y[r * inner + i] = (xv[r * inner + i] - mean) * inv * at(scale, i) +
                             (c.bias.empty() ? 0.0 : at(bias, i));
        means.push_back(mean);
        invs.push_back(inv);
      }
      std::vector<Tensor> out =
          runOp("LayerNormalization", {x, scale, bias}, {{"axis", c.axis}}, 3);
      expectNear(out[0], y, c.x);
      Shape stats(c.x.begin(), c.x.begin() + static_cast<int64_t>(axis));
      stats.resize(c.x.size(), 1);
      expectNear(out[1], means, stats);
      expectNear(out[2], invs, stats);
    }
}

// ---- SoftmaxCrossEntropyLoss ----

TEST(CpuNnCrossEntropy, WeightsIgnoreIndexAndReductions) {
  struct Case {
    Shape scores;
    bool weights;
    int64_t ignore;  // INT64_MIN: attribute not set
    DType labels;
  };
  const int64_t unset = std::numeric_limits<int64_t>::min();
  const Case cases[] = {{{8, 5}, true, 1, DType::I64},
                        {{3, 4, 2, 3}, true, 2, DType::I64},
                        {{6, 4}, false, 0, DType::I32},
                        {{4, 3, 5}, false, unset, DType::I64}};
  for (DType t : kTypes)
    for (size_t ci = 0; ci < std::size(cases); ++ci)
      for (const char* red : {"mean", "sum", "none"}) {
        const Case& c = cases[ci];
        SCOPED_TRACE(trace(t, ci) + " " + red);
        int64_t n = c.scores[0], cls = c.scores[1], d = numElements(c.scores) / (n * cls);
        Shape label_shape = c.scores;
        label_shape.erase(label_shape.begin() + 1);
        std::mt19937 gen(20 + static_cast<uint32_t>(ci));
        std::vector<int64_t> labels(static_cast<size_t>(n * d));
        for (int64_t& l : labels) l = static_cast<int64_t>(gen() % static_cast<uint32_t>(cls));
        Tensor x = rnd(t, c.scores, 21, -3.0, 3.0),
               w = c.weights ? rnd(t, {cls}, 22, 0.2, 2.0) : Tensor();
        Vec xv = x.toDoubles(), lp(xv.size()), loss(labels.size());
        double total = 0.0, wsum = 0.0;
        for (int64_t s = 0; s < n * d; ++s) {
          int64_t b = s / d, k = s % d;
          double z = 0.0;
          for (int64_t j = 0; j < cls; ++j) z += std::exp(xv[(b * cls + j) * d + k]);
          for (int64_t j = 0; j < cls; ++j)
            lp[(b * cls + j) * d + k] = xv[(b * cls + j) * d + k] - std::log(z);
          if (labels[s] == c.ignore) continue;
          double wt = c.weights ? w.getDouble(labels[s]) : 1.0;
          loss[s] = -wt * lp[(b * cls + labels[s]) * d + k];
          total += loss[s];
          wsum += wt;
        }
        AttributeMap attrs{{"reduction", std::string(red)}};
        if (c.ignore != unset) attrs["ignore_index"] = c.ignore;
        std::vector<Tensor> out =
            runOp("SoftmaxCrossEntropyLoss",
                  {x, Tensor::fromInts(c.labels, label_shape, labels), w}, attrs, 2);
        std::string r = red;
        if (r == "none") expectNear(out[0], loss, label_shape);
        if (r == "sum") expectNear(out[0], {total}, {});
        if (r == "mean") expectNear(out[0], {total / wsum}, {});
        expectNear(out[1], lp, c.scores);
      }
}

}  // namespace
}  // namespace ds::cpu
