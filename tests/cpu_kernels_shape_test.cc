// CPU kernels of the shape family against references written here with plain
// index arithmetic (Transpose, Concat, Split, Slice with negative steps, Gather on
// any axis with negative indices, Expand, Trilu, Shape, Range, ConstantOfShape),
// across element sizes; and a check that every op of the element-wise, reduction
// and shape families has a CPU kernel.
#include <gtest/gtest.h>

#include <numeric>

#include "ir/op_registry.h"
#include "kernels/cpu/kernel.h"
#include "kernels/cpu/run_node.h"

namespace ds::cpu {
namespace {

using Ints = std::vector<int64_t>;

// Distinct values 0, 1, 2, ... (mod 100 for narrow types) so copies are traceable.
Tensor iota(DType t, const Shape& s) {
  std::vector<int64_t> v(static_cast<size_t>(numElements(s)));
  std::iota(v.begin(), v.end(), 0);
  if (dtypeSize(t) == 1)
    for (int64_t& x : v) x %= 100;
  return Tensor::fromInts(t, s, v);
}

// The multi-index of flat index i in `shape`.
Ints unravel(const Shape& shape, int64_t i) {
  Ints idx(shape.size());
  for (size_t d = shape.size(); d-- > 0;) idx[d] = i % shape[d], i /= shape[d];
  return idx;
}

int64_t ravel(const Shape& shape, const Ints& idx) {
  int64_t i = 0;
  for (size_t d = 0; d < shape.size(); ++d) i = i * shape[d] + idx[d];
  return i;
}

// out[i] = x[src(multi-index of i)], checked element by element.
void expectGathered(const Tensor& got, const Tensor& x, const Shape& out,
                    const std::function<Ints(const Ints&)>& src) {
  ASSERT_EQ(got.shape(), out);
  ASSERT_EQ(got.dtype(), x.dtype());
  int bad = 0;
  for (int64_t i = 0; i < got.numel() && bad < 5; ++i) {
    double want = x.getDouble(ravel(x.shape(), src(unravel(out, i))));
    if (got.getDouble(i) != want)
      ++bad, ADD_FAILURE() << "element " << i << ": got " << got.getDouble(i) << ", want " << want;
  }
}

const DType kTypes[] = {DType::F32, DType::F64, DType::F16, DType::U8, DType::I64};

TEST(CpuKernelShape, ReshapeFamilyCopiesBytes) {
  Tensor x = iota(DType::I64, {2, 3, 1, 4});
  auto same = [&](const Tensor& y, const Shape& s) {
    EXPECT_EQ(y.shape(), s);
    EXPECT_EQ(y.toInts(), x.toInts());
  };
  same(runOp("Reshape", {x}, {{"shape", Ints{6, -1}}})[0], {6, 4});
  same(runOp("Flatten", {x}, {{"axis", int64_t{2}}})[0], {6, 4});
  same(runOp("Squeeze", {x}, {{"axes", Ints{2}}})[0], {2, 3, 4});
  same(runOp("Unsqueeze", {x}, {{"axes", Ints{0, -1}}})[0], {1, 2, 3, 1, 4, 1});
}

TEST(CpuKernelShape, Transpose) {
  struct Case {
    Shape shape;
    Ints perm;
  };
  std::vector<Case> cases = {{{37, 45}, {1, 0}},
                             {{3, 4, 5}, {2, 0, 1}},
                             {{2, 3, 4, 5}, {0, 2, 1, 3}},
                             {{2, 3, 4}, {}},
                             {{300, 200}, {1, 0}},
                             {{4, 70, 3, 40}, {0, 3, 2, 1}},
                             {{2, 1, 3}, {1, 2, 0}},
                             {{600, 500}, {1, 0}},
                             {{4, 70, 30, 40}, {0, 3, 2, 1}},
                             {{5, 6, 7, 8}, {1, 3, 0, 2}}};
  for (DType t : kTypes) {
    for (const Case& c : cases) {
      SCOPED_TRACE(shapeToString(c.shape) + " perm " + shapeToString(c.perm));
      Ints perm = c.perm;
      if (perm.empty())
        for (size_t d = c.shape.size(); d-- > 0;) perm.push_back(static_cast<int64_t>(d));
      Shape out;
      for (int64_t p : perm) out.push_back(c.shape[p]);
      Tensor x = iota(t, c.shape);
      expectGathered(runOp("Transpose", {x}, {{"perm", c.perm}})[0], x, out, [&](const Ints& o) {
        Ints in(o.size());
        for (size_t d = 0; d < o.size(); ++d) in[perm[d]] = o[d];
        return in;
      });
    }
  }
}

TEST(CpuKernelShape, ConcatAndSplit) {
  for (DType t : kTypes) {
    for (int64_t axis : {0, 1, -1}) {
      int64_t ax = axis < 0 ? axis + 3 : axis;
      Shape sa = {2, 3, 2}, sb = sa, sc = sa;
      sa[ax] = 2, sb[ax] = 1, sc[ax] = 4;
      Tensor a = iota(t, sa), c = iota(t, sc);
      Tensor b = Tensor::fromInts(t, sb, Ints(static_cast<size_t>(numElements(sb)), 7));
      Tensor y = runOp("Concat", {a, b, c}, {{"axis", axis}})[0];
      Shape out = sa;
      out[ax] = 7;
      ASSERT_EQ(y.shape(), out);
      for (int64_t i = 0; i < y.numel(); ++i) {
        Ints idx = unravel(out, i);
        int64_t k = idx[ax];
        double want = k < 2   ? a.getDouble(ravel(a.shape(), idx))
                      : k < 3 ? 7
                              : (idx[ax] = k - 3, c.getDouble(ravel(sc, idx)));
        ASSERT_EQ(y.getDouble(i), want) << "axis " << axis << " element " << i;
      }
      std::vector<Tensor> parts =
          runOp("Split", {y}, {{"axis", axis}, {"split", Ints{2, 1, 4}}}, 3);
      EXPECT_EQ(parts[0], a);
      EXPECT_EQ(parts[1], b);
      EXPECT_EQ(parts[2], c);
    }
  }
  Tensor big = iota(DType::F32, {2, 400000});
  std::vector<Tensor> halves = runOp("Split", {big}, {{"axis", int64_t{0}}}, 2);
  EXPECT_EQ(runOp("Concat", {halves[0], halves[1]}, {{"axis", int64_t{0}}})[0], big);
}

TEST(CpuKernelShape, SliceWithStepsAndNegativeSteps) {
  Tensor x = iota(DType::F32, {4, 5, 6});
  struct Case {
    Ints starts, ends, axes, steps;
    Shape out;
    std::function<Ints(const Ints&)> src;
  };
  std::vector<Case> cases = {{{1, 0},
                              {3, 6},
                              {0, 2},
                              {1, 2},
                              {2, 5, 3},
                              [](const Ints& o) {
                                return Ints{o[0] + 1, o[1], 2 * o[2]};
                              }},
                             {{-1},
                              {-100},
                              {1},
                              {-1},
                              {4, 5, 6},
                              [](const Ints& o) {
                                return Ints{o[0], 4 - o[1], o[2]};
                              }},
                             {{5, 10},
                              {0, -10},
                              {-1, 0},
                              {-2, -3},
                              {2, 5, 3},
                              [](const Ints& o) {
                                return Ints{3 - 3 * o[0], o[1], 5 - 2 * o[2]};
                              }},
                             {{2},
                              {100},
                              {},
                              {},
                              {2, 5, 6},
                              [](const Ints& o) {
                                return Ints{o[0] + 2, o[1], o[2]};
                              }},
                             {{1, 1, 1}, {4, 4, 4}, {}, {2, 2, 2}, {2, 2, 2}, [](const Ints& o) {
                                return Ints{1 + 2 * o[0], 1 + 2 * o[1], 1 + 2 * o[2]};
                              }}};
  for (DType t : kTypes) {
    Tensor xt = x.castTo(t);
    for (const Case& c : cases) {
      Tensor y =
          runOp("Slice", {xt},
                {{"starts", c.starts}, {"ends", c.ends}, {"axes", c.axes}, {"steps", c.steps}})[0];
      expectGathered(y, xt, c.out, c.src);
    }
  }
  Tensor big = iota(DType::F32, {40, 50, 300});  // large enough to run in parallel
  Tensor strided = runOp("Slice", {big},
                         {{"starts", Ints{-1, 1}},
                          {"ends", Ints{-1000, 1000}},
                          {"axes", Ints{1, 2}},
                          {"steps", Ints{-1, 2}}})[0];
  expectGathered(strided, big, {40, 50, 150}, [](const Ints& o) {
    return Ints{o[0], 49 - o[1], 1 + 2 * o[2]};
  });
  Tensor empty = runOp("Slice", {x}, {{"starts", Ints{3}}, {"ends", Ints{1}}})[0];
  EXPECT_EQ(empty.numel(), 0);
}

TEST(CpuKernelShape, GatherAnyAxisNegativeIndices) {
  for (DType t : kTypes) {
    Tensor x = iota(t, {4, 5, 3});
    Tensor idx = Tensor::fromInts(DType::I64, {2, 2}, {0, -1, 2, -4});
    expectGathered(runOp("Gather", {x, idx})[0], x, {2, 2, 5, 3}, [](const Ints& o) {
      int64_t v[] = {0, 3, 2, 0};
      return Ints{v[o[0] * 2 + o[1]], o[2], o[3]};
    });
    Tensor idx32 = Tensor::fromInts(DType::I32, {3}, {4, -5, 1});
    expectGathered(runOp("Gather", {x, idx32}, {{"axis", int64_t{1}}})[0], x, {4, 3, 3},
                   [](const Ints& o) {
                     int64_t v[] = {4, 0, 1};
                     return Ints{o[0], v[o[1]], o[2]};
                   });
    Tensor scalar = Tensor::fromInts(DType::I64, {}, {-1});
    expectGathered(runOp("Gather", {x, scalar}, {{"axis", int64_t{-1}}})[0], x, {4, 5},
                   [](const Ints& o) {
                     return Ints{o[0], o[1], 2};
                   });
  }
  Tensor table = iota(DType::F32, {1000, 64});
  Tensor ids = Tensor::fromInts(DType::I64, {4, 512}, Ints(2048, 999));
  Tensor rows = runOp("Gather", {table, ids})[0];
  EXPECT_EQ(rows.getDouble(2048 * 64 - 1), table.getDouble(1000 * 64 - 1));
}

TEST(CpuKernelShape, GatherOutOfRangeFailsNamingNodeAndIndex) {
  Tensor x = iota(DType::F32, {4, 5});
  for (int64_t bad : {5, -6}) {
    try {
      runOp("Gather", {x, Tensor::fromInts(DType::I64, {2}, {1, bad})}, {{"axis", int64_t{1}}});
      ADD_FAILURE() << "expected an error for index " << bad;
    } catch (const Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find("node 'Gather'"), std::string::npos) << msg;
      EXPECT_NE(msg.find("index " + std::to_string(bad)), std::string::npos) << msg;
    }
  }
}

TEST(CpuKernelShape, Expand) {
  for (DType t : kTypes) {
    Tensor x = iota(t, {3, 1});
    expectGathered(runOp("Expand", {x}, {{"shape", Ints{2, 3, 4}}})[0], x, {2, 3, 4},
                   [](const Ints& o) {
                     return Ints{o[1], 0};
                   });
    Tensor s = iota(t, {});
    expectGathered(runOp("Expand", {s}, {{"shape", Ints{2, 2}}})[0], s, {2, 2},
                   [](const Ints&) { return Ints{}; });
  }
}

TEST(CpuKernelShape, Trilu) {
  for (DType t : {DType::F32, DType::I64, DType::U8}) {
    Tensor x = iota(t, {2, 3, 4});
    for (int64_t upper : {0, 1}) {
      for (int64_t k : {-1, 0, 1, 5}) {
        Tensor y = runOp("Trilu", {x}, {{"k", k}, {"upper", upper}})[0];
        for (int64_t i = 0; i < y.numel(); ++i) {
          Ints idx = unravel({2, 3, 4}, i);
          int64_t diff = idx[2] - idx[1];
          bool keep = upper ? diff >= k : diff <= k;
          ASSERT_EQ(y.getDouble(i), keep ? x.getDouble(i) : 0.0)
              << "upper " << upper << " k " << k << " element " << i;
        }
      }
    }
  }
}

TEST(CpuKernelShape, ShapeOp) {
  Tensor x = iota(DType::F32, {2, 3, 4, 5});
  EXPECT_EQ(runOp("Shape", {x})[0].toInts(), (Ints{2, 3, 4, 5}));
  EXPECT_EQ(runOp("Shape", {x}, {{"start", int64_t{1}}, {"end", int64_t{-1}}})[0].toInts(),
            (Ints{3, 4}));
  EXPECT_EQ(runOp("Shape", {x}, {{"start", int64_t{-2}}})[0].toInts(), (Ints{4, 5}));
}

// Runs a node whose inputs are constants (Range and ConstantOfShape need them).
Tensor runWithConstants(const std::string& op, const std::vector<Tensor>& inputs,
                        const AttributeMap& attrs = {}) {
  Graph g("constants");
  std::vector<Value*> values;
  std::vector<const Tensor*> ptrs;
  for (size_t i = 0; i < inputs.size(); ++i) {
    values.push_back(g.addConstant("c" + std::to_string(i), inputs[i]));
    ptrs.push_back(&inputs[i]);
  }
  return runNode(*g.addNodeN(op, values, attrs, 1, op), ptrs)[0];
}

TEST(CpuKernelShape, Range) {
  auto f = [](double v) { return Tensor::fromDoubles(DType::F32, {}, {v}); };
  EXPECT_EQ(runWithConstants("Range", {f(0), f(1), f(0.25)}).toDoubles(),
            (std::vector<double>{0, 0.25, 0.5, 0.75}));
  auto i = [](int64_t v) { return Tensor::fromInts(DType::I64, {}, {v}); };
  EXPECT_EQ(runWithConstants("Range", {i(10), i(0), i(-3)}).toInts(), (Ints{10, 7, 4, 1}));
  auto i32 = [](int64_t v) { return Tensor::fromInts(DType::I32, {}, {v}); };
  EXPECT_EQ(runWithConstants("Range", {i32(-2), i32(3), i32(2)}).toInts(), (Ints{-2, 0, 2}));
  auto d = [](double v) { return Tensor::fromDoubles(DType::F64, {}, {v}); };
  EXPECT_EQ(runWithConstants("Range", {d(1), d(2), d(0.5)}).toDoubles(),
            (std::vector<double>{1, 1.5}));
}

TEST(CpuKernelShape, ConstantOfShape) {
  Tensor shape = Tensor::fromInts(DType::I64, {2}, {2, 3});
  Tensor zeros = runWithConstants("ConstantOfShape", {shape});
  EXPECT_EQ(zeros.type().toString(), "f32[2,3]");
  EXPECT_EQ(zeros.toDoubles(), std::vector<double>(6, 0.0));
  Tensor v = Tensor::fromDoubles(DType::F32, {1}, {2.5});
  EXPECT_EQ(runWithConstants("ConstantOfShape", {shape}, {{"value", v}}).toDoubles(),
            std::vector<double>(6, 2.5));
  for (DType t : {DType::I64, DType::F16, DType::Bool, DType::I8}) {
    Tensor value = Tensor::fromInts(t, {1}, {1});
    Tensor y = runWithConstants("ConstantOfShape", {shape}, {{"value", value}});
    EXPECT_EQ(y.dtype(), t);
    EXPECT_EQ(y.toInts(), Ints(6, 1));
  }
}

TEST(CpuKernelCoverage, EveryElementwiseReductionAndShapeOpHasAKernel) {
  const char* ops[] = {"Relu",
                       "LeakyRelu",
                       "Sigmoid",
                       "Tanh",
                       "Erf",
                       "Gelu",
                       "Sqrt",
                       "Neg",
                       "Not",
                       "Identity",
                       "Add",
                       "Sub",
                       "Mul",
                       "Div",
                       "Pow",
                       "Equal",
                       "Where",
                       "Cast",
                       "Dropout",
                       "ReduceMean",
                       "ReduceSum",
                       "Softmax",
                       "LogSoftmax",
                       "Reshape",
                       "Flatten",
                       "Squeeze",
                       "Unsqueeze",
                       "Transpose",
                       "Concat",
                       "Split",
                       "Slice",
                       "Gather",
                       "Expand",
                       "Trilu",
                       "Shape",
                       "Range",
                       "ConstantOfShape"};
  for (const char* op : ops) {
    EXPECT_NE(OpRegistry::instance().find(op), nullptr) << op << " has no schema";
    EXPECT_NE(CpuKernelRegistry::instance().find(op), nullptr) << op << " has no CPU kernel";
  }
}

}  // namespace
}  // namespace ds::cpu
