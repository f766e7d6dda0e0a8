// Constant folding: the torch.onnx.export dynamic-shape chain, the evaluators
// against hand-computed values, integer arithmetic, and what must not fold.
#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <vector>

#include "ir/error.h"
#include "ir/graph.h"
#include "passes/fold_constants.h"

namespace ds {
namespace {

using Ints = std::vector<int64_t>;

class FoldTest : public ::testing::Test {
 protected:
  Value* ints(DType t, Shape s, const Ints& v) {
    return g.addConstant(g.uniqueName("c"), Tensor::fromInts(t, std::move(s), v));
  }
  Value* i64(Shape s, const Ints& v) { return ints(DType::I64, std::move(s), v); }
  Value* doubles(DType t, Shape s, const std::vector<double>& v) {
    return g.addConstant(g.uniqueName("c"), Tensor::fromDoubles(t, std::move(s), v));
  }
  // Adds the node, makes its output a graph output, folds and returns the constant.
  const Tensor& fold(const std::string& op, std::vector<Value*> inputs, AttributeMap attrs = {}) {
    Node* n = g.addNode(op, std::move(inputs), std::move(attrs), {g.uniqueName("out")});
    Value* out = n->output(0);
    std::string name = out->name();
    g.addOutput(out);
    EXPECT_TRUE(canFold(*n));
    EXPECT_TRUE(foldConstants(g));
    Value* folded = g.value(name);
    EXPECT_EQ(folded->role(), Role::Constant);
    EXPECT_EQ(folded->producer(), nullptr);
    EXPECT_EQ(g.outputs().back(), folded);
    return folded->data();
  }
  size_t countOp(const std::string& op) const {
    size_t n = 0;
    for (const auto& node : g.nodes()) n += node->op() == op;
    return n;
  }

  Graph g;
};

// torch.onnx.export's x.view(x.size(0), -1): Shape -> Gather -> Unsqueeze -> Concat.
// In the canonical IR Reshape takes its shape as an attribute, so the importer reads the
// folded Concat constant; the test does the same and checks only the Reshape is left.
TEST_F(FoldTest, DynamicShapeChainFoldsToReshape) {
  Value* x = g.addSource("x", {DType::F32, {2, 3, 4}}, Role::Input);
  Node* shape = g.addNode("Shape", {x}, {}, {"x_shape"});
  Node* gather = g.addNode("Gather", {shape->output(0), i64({}, {0})}, {{"axis", int64_t{0}}});
  Node* unsq = g.addNode("Unsqueeze", {gather->output(0)}, {{"axes", Ints{0}}});
  Node* concat = g.addNode("Concat", {unsq->output(0), i64({1}, {-1})}, {{"axis", int64_t{0}}},
                           {"target_shape"});
  g.addOutput(concat->output(0));
  size_t sources = g.sources().size();

  EXPECT_TRUE(foldConstants(g));
  EXPECT_EQ(g.numNodes(), 0u);
  Value* target = g.value("target_shape");
  ASSERT_EQ(target->role(), Role::Constant);
  EXPECT_EQ(target->data().toInts(), (Ints{2, -1}));
  EXPECT_EQ(g.findValue("x_shape"), nullptr);
  EXPECT_EQ(g.sources().size(), sources - 1);  // two constants gone, one added

  // Importer step: the shape becomes Reshape's attribute and the constant is dropped.
  g.clearOutputs();
  Node* reshape = g.addNode("Reshape", {x}, {{"shape", target->data().toInts()}}, {"y"});
  g.addOutput(reshape->output(0));
  g.eraseSource(target);
  EXPECT_FALSE(foldConstants(g));
  ASSERT_EQ(g.numNodes(), 1u);
  EXPECT_EQ(g.nodes().front()->op(), "Reshape");
  EXPECT_EQ(countOp("Shape"), 0u);
  EXPECT_EQ(g.value("y")->type(), (TensorType{DType::F32, {2, 12}}));
  EXPECT_EQ(g.sources().size(), 1u);
}

TEST_F(FoldTest, FoldedValueKeepsNameAndUses) {
  Value* x = g.addSource("x", {DType::I64, {3}}, Role::Input);
  Node* add = g.addNode("Add", {i64({3}, {1, 2, 3}), i64({}, {10})}, {}, {"sum"});
  Node* user = g.addNode("Mul", {x, add->output(0)}, {}, {"prod"});
  g.addOutput(user->output(0));
  EXPECT_TRUE(foldNode(g, add));
  Value* sum = g.value("sum");
  EXPECT_EQ(user->input(1), sum);
  EXPECT_EQ(sum->users().size(), 1u);
  EXPECT_EQ(sum->data().toInts(), (Ints{11, 12, 13}));
  EXPECT_FALSE(foldNode(g, user));  // x is a run-time input
}

TEST_F(FoldTest, RangeAndConstantOfShape) {
  EXPECT_EQ(fold("Range", {i64({}, {0}), i64({}, {10}), i64({}, {3})}).toInts(),
            (Ints{0, 3, 6, 9}));
  EXPECT_EQ(fold("Range", {i64({}, {10}), i64({}, {0}), i64({}, {-4})}).toInts(), (Ints{10, 6, 2}));
  auto f = [&](double v) { return doubles(DType::F32, {}, {v}); };
  EXPECT_EQ(fold("Range", {f(1.0), f(2.0), f(0.25)}).toDoubles(),
            (std::vector<double>{1.0, 1.25, 1.5, 1.75}));

  const Tensor& zeros = fold("ConstantOfShape", {i64({2}, {2, 2})});
  EXPECT_EQ(zeros.type(), (TensorType{DType::F32, {2, 2}}));
  EXPECT_EQ(zeros.toDoubles(), (std::vector<double>{0, 0, 0, 0}));
  const Tensor& sevens =
      fold("ConstantOfShape", {i64({1}, {3})}, {{"value", Tensor::fromInts(DType::I32, {1}, {7})}});
  EXPECT_EQ(sevens.type(), (TensorType{DType::I32, {3}}));
  EXPECT_EQ(sevens.toInts(), (Ints{7, 7, 7}));
}

TEST_F(FoldTest, WhereComparisonsCast) {
  Value* cond = ints(DType::Bool, {3}, {1, 0, 1});
  EXPECT_EQ(fold("Where", {cond, i64({3}, {1, 2, 3}), i64({}, {0})}).toInts(), (Ints{1, 0, 3}));
  // Broadcast condition [2,1] against x [3]: rows pick x or y.
  Value* rows = ints(DType::Bool, {2, 1}, {0, 1});
  EXPECT_EQ(fold("Where", {rows, i64({3}, {1, 2, 3}), i64({1}, {-1})}).toInts(),
            (Ints{-1, -1, -1, 1, 2, 3}));

  EXPECT_EQ(fold("Not", {ints(DType::Bool, {3}, {1, 0, 1})}).toInts(), (Ints{0, 1, 0}));

  const Tensor& eq = fold("Equal", {i64({3}, {1, 2, 3}), i64({3}, {1, 5, 3})});
  EXPECT_EQ(eq.dtype(), DType::Bool);
  EXPECT_EQ(eq.toInts(), (Ints{1, 0, 1}));
  EXPECT_EQ(fold("Equal", {doubles(DType::F32, {2}, {0.5, 1.0}), doubles(DType::F32, {}, {0.5})})
                .toInts(),
            (Ints{1, 0}));
  EXPECT_EQ(fold("Less", {i64({3}, {1, 2, 3}), i64({}, {2})}).toInts(), (Ints{1, 0, 0}));
  EXPECT_EQ(fold("Clip", {i64({4}, {-5, 0, 3, 9})}, {{"min", -1.5}, {"max", 4.0}}).toInts(),
            (Ints{-1, 0, 3, 4}));
  EXPECT_EQ(
      fold("Greater", {doubles(DType::F32, {3}, {0.5, 1.0, -2}), doubles(DType::F32, {}, {0.5})})
          .toInts(),
      (Ints{0, 1, 0}));

  // Each fold consumes its constant inputs (they are removed once unused): make fresh ones.
  auto f = [&] { return doubles(DType::F32, {4}, {1.7, -1.7, 0.0, 3.0}); };
  const Tensor& as_int = fold("Cast", {f()}, {{"to", std::string("i64")}});
  EXPECT_EQ(as_int.toInts(), (Ints{1, -1, 0, 3}));
  EXPECT_EQ(fold("Cast", {f()}, {{"to", std::string("bool")}}).toInts(), (Ints{1, 1, 0, 1}));
  EXPECT_EQ(fold("Cast", {i64({2}, {300, -1})}, {{"to", std::string("u8")}}).toInts(),
            (Ints{44, 255}));
}

TEST_F(FoldTest, IntegerArithmetic) {
  auto a = [&] { return i64({4}, {7, -7, 7, -7}); };
  auto b = [&] { return i64({4}, {2, 2, -2, -2}); };
  EXPECT_EQ(fold("Div", {a(), b()}).toInts(), (Ints{3, -3, -3, 3}));
  EXPECT_EQ(fold("Div", {ints(DType::I32, {2}, {9, -9}), ints(DType::I32, {}, {4})}).toInts(),
            (Ints{2, -2}));
  EXPECT_EQ(fold("Sub", {a(), b()}).toInts(), (Ints{5, -9, 9, -5}));
  EXPECT_EQ(fold("Mul", {a(), b()}).toInts(), (Ints{14, -14, -14, 14}));
  EXPECT_EQ(fold("Neg", {a()}).toInts(), (Ints{-7, 7, -7, 7}));
  // Exact beyond double precision: 2^53 + 1.
  int64_t big = (int64_t{1} << 53) + 1;
  EXPECT_EQ(fold("Add", {i64({}, {big}), i64({}, {2})}).toInts(), (Ints{big + 2}));
  EXPECT_EQ(fold("Div", {doubles(DType::F32, {1}, {7}), doubles(DType::F32, {1}, {2})}).toDoubles(),
            (std::vector<double>{3.5}));

  Node* div0 = g.addNode("Div", {i64({1}, {1}), i64({1}, {0})}, {}, {}, "div0");
  try {
    foldNode(g, div0);
    ADD_FAILURE() << "division by zero folded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'div0'"), std::string::npos) << e.what();
  }
}

TEST_F(FoldTest, DataMovement) {
  auto m = [&] { return i64({2, 3}, {0, 1, 2, 3, 4, 5}); };
  EXPECT_EQ(fold("Transpose", {m()}).toInts(), (Ints{0, 3, 1, 4, 2, 5}));
  EXPECT_EQ(fold("Slice", {m()},
                 {{"starts", Ints{-1}},
                  {"ends", Ints{std::numeric_limits<int64_t>::min()}},
                  {"axes", Ints{1}},
                  {"steps", Ints{-2}}})
                .toInts(),
            (Ints{2, 0, 5, 3}));
  EXPECT_EQ(fold("Gather", {m(), i64({2, 2}, {1, -1, 0, 0})}, {{"axis", int64_t{1}}}).toInts(),
            (Ints{1, 2, 0, 0, 4, 5, 3, 3}));
  EXPECT_EQ(fold("Gather", {m(), i64({}, {1})}).toInts(), (Ints{3, 4, 5}));
  EXPECT_EQ(fold("Concat", {m(), i64({2, 1}, {8, 9})}, {{"axis", int64_t{1}}}).toInts(),
            (Ints{0, 1, 2, 8, 3, 4, 5, 9}));
  EXPECT_EQ(fold("Expand", {i64({2, 1}, {1, 2})}, {{"shape", Ints{2, 3}}}).toInts(),
            (Ints{1, 1, 1, 2, 2, 2}));
  const Tensor& r = fold("Reshape", {m()}, {{"shape", Ints{3, -1}}});
  EXPECT_EQ(r.shape(), (Shape{3, 2}));
  EXPECT_EQ(fold("Squeeze", {i64({1, 2}, {4, 5})}).shape(), (Shape{2}));
  EXPECT_EQ(fold("Unsqueeze", {i64({}, {4})}, {{"axes", Ints{0}}}).shape(), (Shape{1}));
  EXPECT_EQ(fold("Identity", {doubles(DType::F16, {2}, {0.5, 2})}).toDoubles(),
            (std::vector<double>{0.5, 2}));
  Value* x = g.addSource("x", {DType::F32, {5, 6, 7}}, Role::Input);
  EXPECT_EQ(fold("Shape", {x}, {{"start", int64_t{1}}}).toInts(), (Ints{6, 7}));
}

TEST_F(FoldTest, LeavesParametersAndOtherOpsAlone) {
  auto w = std::make_shared<const Tensor>(Tensor::fromDoubles(DType::F32, {2}, {1, 2}));
  Value* p = g.addSource("w", w->type(), Role::Parameter, w);
  Value* c = doubles(DType::F32, {2}, {3, 4});
  Node* add = g.addNode("Add", {p, c}, {}, {"a"});
  Node* id = g.addNode("Identity", {p}, {}, {"b"});
  Node* relu = g.addNode("Relu", {c}, {}, {"r"});  // no evaluator for Relu
  for (Node* n : {add, id, relu}) g.addOutput(n->output(0));
  Value* unused = doubles(DType::F32, {1}, {0});  // not touched by folding: kept
  EXPECT_FALSE(canFold(*add));
  EXPECT_FALSE(canFold(*id));
  EXPECT_FALSE(canFold(*relu));
  EXPECT_FALSE(foldConstants(g));
  EXPECT_EQ(g.numNodes(), 3u);
  EXPECT_EQ(g.value("w")->role(), Role::Parameter);
  EXPECT_EQ(g.findValue(unused->name()), unused);
}

TEST_F(FoldTest, RemovesOnlyDeadConstants) {
  Value* shared = i64({1}, {5});
  Value* x = g.addSource("x", {DType::I64, {1}}, Role::Input);
  Node* neg = g.addNode("Neg", {shared}, {}, {"n"});
  Node* keep = g.addNode("Add", {x, shared}, {}, {"k"});
  g.addOutput(neg->output(0));
  g.addOutput(keep->output(0));
  Node* dead = g.addNode("Neg", {i64({1}, {1})}, {}, {"dead"});  // output unused
  (void)dead;
  EXPECT_TRUE(foldConstants(g));
  EXPECT_EQ(g.numNodes(), 1u);
  EXPECT_EQ(g.findValue(shared->name()), shared);  // still used by the Add
  EXPECT_EQ(g.findValue("dead"), nullptr);
  EXPECT_EQ(g.value("n")->data().toInts(), (Ints{-5}));
  EXPECT_EQ(g.outputs()[0], g.value("n"));
}

}  // namespace
}  // namespace ds
