// Shape and dtype inference of every registered op: typical and tricky cases
// (auto_pad, ceil_mode, numpy matmul, Reshape 0/-1, negative Slice steps, ...),
// and that invalid nodes fail with a ds::Error naming the node and its op.
#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "ir/error.h"
#include "ir/graph.h"
#include "ir/op_registry.h"

namespace ds {
namespace {

using Ints = std::vector<int64_t>;
constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
constexpr int64_t kMin = std::numeric_limits<int64_t>::min();

class OpsShapeTest : public ::testing::Test {
 protected:
  Value* in(DType t, Shape s) {
    return g.addSource(g.uniqueName("x"), {t, std::move(s)}, Role::Input);
  }
  Value* f32(Shape s) { return in(DType::F32, std::move(s)); }
  Value* i64(Shape s) { return in(DType::I64, std::move(s)); }
  Value* constInts(Shape s, const Ints& v) {
    return g.addConstant(g.uniqueName("c"), Tensor::fromInts(DType::I64, std::move(s), v));
  }

  // Output `index` of a new node with `outputs` outputs.
  TensorType infer(const std::string& op, std::vector<Value*> inputs, AttributeMap attrs = {},
                   size_t outputs = 1, size_t index = 0) {
    return g.addNodeN(op, std::move(inputs), std::move(attrs), outputs)->output(index)->type();
  }

  // Expects the node to be rejected; checks the message names node and op and returns it.
  std::string fails(const std::string& op, std::vector<Value*> inputs, AttributeMap attrs = {},
                    size_t outputs = 1) {
    try {
      g.addNodeN(op, std::move(inputs), std::move(attrs), outputs, "bad_node");
    } catch (const Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find("'bad_node'"), std::string::npos) << msg;
      EXPECT_NE(msg.find("(" + op + ")"), std::string::npos) << msg;
      return msg;
    }
    ADD_FAILURE() << op << " was accepted";
    return "";
  }

  Graph g;
};

TensorType T(DType t, Shape s) {
  return {t, std::move(s)};
}
TensorType F(Shape s) {
  return {DType::F32, std::move(s)};
}
bool has(const std::string& msg, const std::string& part) {
  return msg.find(part) != std::string::npos;
}

TEST_F(OpsShapeTest, RegistryHasEveryOp) {
  const std::string expected =
      "Conv BatchNormalization Relu LeakyRelu Clip Sigmoid Tanh Erf Gelu Log Softplus MaxPool "
      "AveragePool "
      "GlobalAveragePool Flatten Gemm MatMul Add Sub Mul Div Pow Sqrt Neg Softmax LogSoftmax "
      "ReduceMean ReduceSum ReduceSumSquare LayerNormalization Reshape Transpose Unsqueeze Squeeze "
      "Concat Split "
      "Slice Gather Expand Where Equal Less Greater Trilu Pad Cast Shape Range ConstantOfShape "
      "Dropout Identity "
      "SoftmaxCrossEntropyLoss Not "
      // Backward and optimizer ops (training).
      "Exp ConvGradInput ConvGradWeight MaxPoolGrad AveragePoolGrad BatchNormalizationGrad "
      "LayerNormalizationGrad SoftmaxCrossEntropyLossGrad GatherGrad SliceGrad SgdStep AdamStep "
      "LionStep AdagradStep LambStep ClipCoef ZerosLike Copy ReluGrad ClipGrad LeakyReluGrad "
      "GeluGrad "
      "SoftmaxGrad WeightBiasGrad "
      // Attention in one step (passes/fuse_attention.h).
      "FusedAttention FusedAttentionGrad "
      // Collectives (distributed plans).
      "AllReduce ReduceScatter AllGather Broadcast";
  std::vector<std::string> names = OpRegistry::instance().names();
  std::istringstream ops(expected);
  size_t count = 0;
  for (std::string op; ops >> op; ++count)
    EXPECT_NE(std::find(names.begin(), names.end(), op), names.end()) << op;
  EXPECT_EQ(count, 83u);
  EXPECT_EQ(names.size(), count) << "a registered op is missing from this list";
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
}

TEST_F(OpsShapeTest, OptimizerSteps) {
  Value* p = f32({4, 2});
  Value* lr = f32({});
  Value* step = i64({});
  EXPECT_EQ(infer("ClipCoef", {lr}, {{"max_norm", 1.0}}), F({}));
  EXPECT_TRUE(has(fails("ClipCoef", {f32({2})}, {{"max_norm", 1.0}}), "f32 scalar"));
  EXPECT_EQ(infer("ZerosLike", {p}), F({4, 2}));
  // SgdStep: one output per updated tensor, so two with a velocity; the gradient
  // scale and the momentum are optional f32 scalars.
  EXPECT_EQ(infer("SgdStep", {p, p, lr, step, p, lr, lr}, {}, 2, 1), F({4, 2}));
  EXPECT_EQ(infer("SgdStep", {p, p, lr, step, nullptr, lr}, {}, 1), F({4, 2}));
  EXPECT_TRUE(has(fails("SgdStep", {p, p, lr, step, nullptr, lr}, {}, 2), "one output"));
  EXPECT_TRUE(has(fails("SgdStep", {p, p, lr, step, p, f32({2})}, {}, 2), "gradient scale"));
  EXPECT_EQ(infer("AdamStep", {p, p, lr, step, p, p, lr, lr}, {}, 3, 2), F({4, 2}));
  EXPECT_TRUE(has(fails("AdamStep", {p, p, lr, step, p, p, lr, step}, {}, 3), "momentum"));
  // Lion and Adagrad: one state each, which is required; Adagrad has no momentum.
  EXPECT_EQ(infer("LionStep", {p, p, lr, step, p, lr, lr}, {}, 2, 1), F({4, 2}));
  EXPECT_TRUE(has(fails("LionStep", {p, p, lr, step, nullptr}, {}, 2), "input 4 is missing"));
  EXPECT_EQ(infer("AdagradStep", {p, p, lr, step, p, lr}, {}, 2, 1), F({4, 2}));
  EXPECT_TRUE(has(fails("AdagradStep", {p, p, lr, step, p, lr, lr}, {}, 2), "no momentum"));
  EXPECT_TRUE(has(fails("AdagradStep", {p, p, lr, step, i64({4, 2})}, {}, 2), "parameter's type"));
  // LambStep: AdamStep's operands.
  EXPECT_EQ(infer("LambStep", {p, p, lr, step, p, p, lr, lr}, {}, 3, 2), F({4, 2}));
  EXPECT_TRUE(has(fails("LambStep", {p, p, lr, step, p, nullptr}, {}, 3), "input 5 is missing"));
  // Mixed precision's fused form: an f32 master reads a 16-bit gradient and writes
  // its rounded copy as a fourth output of round_to's type.
  Value* g16 = in(DType::F16, {4, 2});
  EXPECT_EQ(infer("AdamStep", {p, g16, lr, step, p, p}, {{"round_to", std::string("f16")}}, 4, 3),
            T(DType::F16, {4, 2}));
  EXPECT_EQ(infer("AdamStep", {p, g16, lr, step, p, p}, {}, 3), F({4, 2}));
  EXPECT_EQ(infer("AdamStep", {p, p, lr, step, p, p}, {{"round_to", std::string("bf16")}}, 4, 3),
            T(DType::BF16, {4, 2}));
  EXPECT_TRUE(has(fails("AdamStep", {p, p, lr, step, p, p}, {}, 4), "no round_to"));
  EXPECT_TRUE(has(fails("AdamStep", {p, p, lr, step, p, p}, {{"round_to", std::string("f16")}}, 3),
                  "round_to needs output 3"));
  EXPECT_EQ(infer("LionStep", {p, g16, lr, step, p}, {{"round_to", std::string("f16")}}, 3, 2),
            T(DType::F16, {4, 2}));
  EXPECT_EQ(infer("AdagradStep", {p, g16, lr, step, p}, {{"round_to", std::string("f16")}}, 3, 2),
            T(DType::F16, {4, 2}));
  // SgdStep's rounded copy follows its velocity, when it has one.
  EXPECT_EQ(infer("SgdStep", {p, g16, lr, step, p}, {{"round_to", std::string("f16")}}, 3, 2),
            T(DType::F16, {4, 2}));
  EXPECT_EQ(infer("SgdStep", {p, g16, lr, step}, {{"round_to", std::string("f16")}}, 2, 1),
            T(DType::F16, {4, 2}));
  EXPECT_TRUE(has(fails("SgdStep", {p, g16, lr, step, p}, {{"round_to", std::string("f16")}}, 2),
                  "round_to needs output 2"));
  EXPECT_TRUE(has(fails("AdamStep", {p, p, lr, step, p, p}, {{"round_to", std::string("f32")}}, 4),
                  "round_to must be"));
  EXPECT_TRUE(has(fails("AdamStep", {p, in(DType::F16, {8}), lr, step, p, p}, {}, 3),
                  "gradient must have the parameter's type"));
  Value* p16 = in(DType::F16, {4, 2});
  EXPECT_TRUE(
      has(fails("AdamStep", {p16, p16, lr, step, p16, p16}, {{"round_to", std::string("f16")}}, 4),
          "for an f32 parameter"));
}

// FusedAttention on [batch, T, heads, head]: Y [B, Tq, H, Dv], statistics L
// [B, H, Tq] in f32 (f64 for f64); its gradient takes Y's shape for dY and Y and
// gives Q's, K's and V's types.
TEST_F(OpsShapeTest, FusedAttention) {
  Value* q = in(DType::BF16, {2, 5, 3, 8});
  Value* k = in(DType::BF16, {2, 7, 3, 8});
  Value* v = in(DType::BF16, {2, 7, 3, 16});
  EXPECT_EQ(infer("FusedAttention", {q, k, v}, {}, 2, 0), T(DType::BF16, {2, 5, 3, 16}));
  EXPECT_EQ(infer("FusedAttention", {q, k, v}, {}, 2, 1), T(DType::F32, {2, 3, 5}));
  Value* q64 = in(DType::F64, {1, 4, 2, 8});
  EXPECT_EQ(infer("FusedAttention", {q64, q64, q64}, {{"causal", int64_t{1}}}, 2, 1),
            T(DType::F64, {1, 2, 4}));
  EXPECT_TRUE(
      has(fails("FusedAttention", {q, in(DType::BF16, {2, 7, 4, 8}), v}, {}, 2), "must match Q"));
  EXPECT_TRUE(
      has(fails("FusedAttention", {q, k, in(DType::BF16, {2, 6, 3, 16})}, {}, 2), "must match K"));
  EXPECT_TRUE(has(fails("FusedAttention", {q, k, v}, {{"causal", int64_t{1}}}, 2),
                  "causal attention needs Q and K of one length"));
  EXPECT_TRUE(has(fails("FusedAttention", {q, k, in(DType::F16, {2, 7, 3, 16})}, {}, 2), "dtype"));
  Value* y = in(DType::BF16, {2, 5, 3, 16});
  Value* l = in(DType::F32, {2, 3, 5});
  EXPECT_EQ(infer("FusedAttentionGrad", {y, q, k, v, y, l}, {}, 3, 2),
            T(DType::BF16, {2, 7, 3, 16}));
  EXPECT_TRUE(has(fails("FusedAttentionGrad", {y, q, k, v, y, in(DType::BF16, {2, 3, 5})}, {}, 3),
                  "L must be f32[2,3,5]"));
}

// Q, K and V packed in one [B, T, 3, H, D]: Y [B, T, H, D], and one gradient, dQKV.
TEST_F(OpsShapeTest, FusedAttentionPacked) {
  Value* qkv = in(DType::BF16, {2, 5, 3, 4, 8});
  EXPECT_EQ(infer("FusedAttention", {qkv}, {{"causal", int64_t{1}}}, 2, 0),
            T(DType::BF16, {2, 5, 4, 8}));
  EXPECT_EQ(infer("FusedAttention", {qkv}, {}, 2, 1), T(DType::F32, {2, 4, 5}));
  EXPECT_TRUE(has(fails("FusedAttention", {in(DType::BF16, {2, 5, 2, 4, 8})}, {}, 2),
                  "must be [batch, T, 3, heads, head_dim]"));
  EXPECT_TRUE(has(fails("FusedAttention", {in(DType::BF16, {2, 5, 4, 8})}, {}, 2), "rank"));
  EXPECT_TRUE(has(fails("FusedAttention", {qkv, qkv}, {}, 2), "not 2 inputs"));
  Value* y = in(DType::BF16, {2, 5, 4, 8});
  Value* l = in(DType::F32, {2, 4, 5});
  EXPECT_EQ(infer("FusedAttentionGrad", {y, qkv, y, l}, {}, 1, 0), T(DType::BF16, {2, 5, 3, 4, 8}));
  EXPECT_TRUE(has(fails("FusedAttentionGrad", {y, qkv, y, l}, {}, 3), "one gradient output"));
  EXPECT_TRUE(has(fails("FusedAttentionGrad", {y, qkv, in(DType::BF16, {2, 5, 4, 9}), l}, {}, 1),
                  "must be Y's"));
}

TEST_F(OpsShapeTest, Unary) {
  for (const char* op : {"Relu", "Sigmoid", "Tanh", "Erf", "Sqrt", "LeakyRelu", "Gelu"})
    EXPECT_EQ(infer(op, {in(DType::F16, {2, 3})}), T(DType::F16, {2, 3})) << op;
  EXPECT_EQ(infer("Neg", {i64({4})}), T(DType::I64, {4}));
  EXPECT_EQ(infer("Identity", {in(DType::Bool, {})}), T(DType::Bool, {}));
  EXPECT_EQ(infer("Not", {in(DType::Bool, {2, 2})}), T(DType::Bool, {2, 2}));
  fails("Not", {f32({2})});
  EXPECT_EQ(infer("Gelu", {f32({3})}, {{"approximate", std::string("tanh")}}), F({3}));
  EXPECT_TRUE(has(fails("Sqrt", {in(DType::I32, {2})}), "floating-point"));
  fails("Relu", {i64({2})});
  fails("Neg", {in(DType::Bool, {2})});
  fails("Gelu", {f32({3})}, {{"approximate", std::string("fast")}});
  fails("LeakyRelu", {f32({3})}, {{"alpha", int64_t{1}}});  // wrong attribute kind
  fails("Relu", {f32({3}), f32({3})});                      // too many inputs
}

TEST_F(OpsShapeTest, BinaryBroadcast) {
  EXPECT_EQ(infer("Add", {f32({2, 1, 4}), f32({3, 1})}), F({2, 3, 4}));
  EXPECT_EQ(infer("Div", {i64({}), i64({5})}), T(DType::I64, {5}));
  EXPECT_EQ(infer("Pow", {f32({2, 3}), i64({3})}), F({2, 3}));
  EXPECT_EQ(infer("Equal", {i64({2, 1}), i64({1, 3})}), T(DType::Bool, {2, 3}));
  EXPECT_TRUE(has(fails("Mul", {f32({2, 3}), f32({4, 3})}), "do not broadcast"));
  EXPECT_TRUE(has(fails("Sub", {f32({2}), in(DType::F16, {2})}), "same dtype"));
  fails("Add", {f32({2})});
}

TEST_F(OpsShapeTest, WhereAndCast) {
  EXPECT_EQ(infer("Where", {in(DType::Bool, {3, 1}), f32({1, 4}), f32({})}), F({3, 4}));
  fails("Where", {f32({3}), f32({3}), f32({3})});
  fails("Where", {in(DType::Bool, {3}), f32({3}), i64({3})});
  EXPECT_EQ(infer("Cast", {f32({2})}, {{"to", std::string("f16")}}), T(DType::F16, {2}));
  EXPECT_EQ(infer("Cast", {f32({2})}, {{"to", std::string("i64")}}), T(DType::I64, {2}));
  EXPECT_TRUE(has(fails("Cast", {f32({2})}, {{"to", std::string("float")}}), "float"));
  EXPECT_TRUE(has(fails("Cast", {f32({2})}), "required attribute 'to'"));
}

TEST_F(OpsShapeTest, Conv) {
  EXPECT_EQ(infer("Conv", {f32({1, 3, 32, 32}), f32({8, 3, 3, 3}), f32({8})},
                  {{"pads", Ints{1, 1, 1, 1}}}),
            F({1, 8, 32, 32}));
  // SAME_UPPER with stride 2: ceil(7 / 2) = 4.
  EXPECT_EQ(infer("Conv", {f32({1, 3, 7, 7}), f32({8, 3, 3, 3})},
                  {{"auto_pad", std::string("SAME_UPPER")}, {"strides", Ints{2, 2}}}),
            F({1, 8, 4, 4}));
  // VALID with dilation 2: effective kernel 5 on 10 -> 6.
  EXPECT_EQ(infer("Conv", {f32({1, 1, 10, 10}), f32({2, 1, 3, 3})},
                  {{"auto_pad", std::string("VALID")}, {"dilations", Ints{2, 2}}}),
            F({1, 2, 6, 6}));
  EXPECT_EQ(infer("Conv", {f32({1, 4, 10}), f32({8, 2, 3})}, {{"group", int64_t{2}}}),
            F({1, 8, 8}));
  EXPECT_EQ(
      infer("Conv", {f32({2, 2, 4, 4, 4}), f32({4, 2, 2, 2, 2})}, {{"strides", Ints{2, 2, 2}}}),
      F({2, 4, 2, 2, 2}));
  EXPECT_EQ(infer("Conv", {f32({1, 3, 8, 8}), f32({4, 3, 3, 3})},
                  {{"strides", Ints{2, 2}}, {"pads", Ints{0, 0, 1, 1}}}),
            F({1, 4, 4, 4}));
  EXPECT_TRUE(has(fails("Conv", {f32({1, 4, 8, 8}), f32({8, 3, 3, 3})}), "channels"));
  fails("Conv", {f32({1, 4, 8}), f32({6, 1, 3})}, {{"group", int64_t{4}}});  // 6 % 4
  fails("Conv", {f32({1, 3, 8, 8}), f32({8, 3, 3, 3}), f32({4})});           // bias
  fails("Conv", {f32({1, 3, 8, 8}), f32({8, 3, 3, 3})}, {{"strides", Ints{1}}});
  fails("Conv", {f32({1, 3, 2, 2}), f32({8, 3, 3, 3})});  // kernel larger than input
  fails("Conv", {f32({1, 3, 8, 8}), f32({8, 3, 3, 3})}, {{"kernel_shape", Ints{5, 5}}});
  fails("Conv", {f32({1, 3, 8, 8}), f32({8, 3, 3, 3})}, {{"auto_pad", std::string("SAME")}});
  fails("Conv", {i64({1, 3, 8, 8}), i64({8, 3, 3, 3})});
}

TEST_F(OpsShapeTest, Pooling) {
  AttributeMap k3s2 = {{"kernel_shape", Ints{3, 3}}, {"strides", Ints{2, 2}}};
  EXPECT_EQ(infer("MaxPool", {f32({1, 1, 6, 6})}, k3s2), F({1, 1, 2, 2}));
  k3s2["ceil_mode"] = int64_t{1};
  EXPECT_EQ(infer("MaxPool", {f32({1, 1, 6, 6})}, k3s2), F({1, 1, 3, 3}));
  // ceil_mode: a third window would start in the right padding (index 4 >= 3 + 1), so 2.
  EXPECT_EQ(infer("MaxPool", {f32({1, 1, 3})},
                  {{"kernel_shape", Ints{2}},
                   {"strides", Ints{2}},
                   {"pads", Ints{1, 1}},
                   {"ceil_mode", int64_t{1}}}),
            F({1, 1, 2}));
  EXPECT_EQ(infer("MaxPool", {f32({1, 1, 5, 5})},
                  {{"kernel_shape", Ints{3, 3}},
                   {"strides", Ints{2, 2}},
                   {"auto_pad", std::string("SAME_LOWER")}}),
            F({1, 1, 3, 3}));
  EXPECT_EQ(
      infer("AveragePool", {f32({1, 2, 7, 7})},
            {{"kernel_shape", Ints{3, 3}}, {"strides", Ints{2, 2}}, {"pads", Ints{1, 1, 1, 1}}}),
      F({1, 2, 4, 4}));
  EXPECT_EQ(infer("GlobalAveragePool", {f32({2, 3, 5, 5})}), F({2, 3, 1, 1}));
  EXPECT_EQ(infer("GlobalAveragePool", {f32({2, 3, 5})}), F({2, 3, 1}));
  EXPECT_TRUE(has(fails("MaxPool", {f32({1, 1, 6, 6})}), "kernel_shape"));
  fails("MaxPool", {f32({1, 1, 6, 6})}, {{"kernel_shape", Ints{3}}});
  fails("AveragePool", {f32({6, 6})}, {{"kernel_shape", Ints{3}}});
  fails("GlobalAveragePool", {f32({2, 3})});
}

TEST_F(OpsShapeTest, BatchNormalization) {
  auto p = [&] { return f32({3}); };
  EXPECT_EQ(infer("BatchNormalization", {f32({2, 3, 4, 4}), p(), p(), p(), p()}), F({2, 3, 4, 4}));
  EXPECT_EQ(infer("BatchNormalization", {f32({2, 3, 4, 4}), p(), p(), p(), p()},
                  {{"training_mode", int64_t{1}}}, 3, 2),
            F({3}));
  EXPECT_TRUE(has(fails("BatchNormalization", {f32({2, 3, 4, 4}), p(), p(), p(), p()}, {}, 3),
                  "training_mode"));
  fails("BatchNormalization", {f32({2, 4, 4, 4}), p(), p(), p(), p()});
}

TEST_F(OpsShapeTest, FlattenGemmMatMul) {
  EXPECT_EQ(infer("Flatten", {f32({2, 3, 4, 5})}, {{"axis", int64_t{2}}}), F({6, 20}));
  EXPECT_EQ(infer("Flatten", {f32({2, 3, 4, 5})}, {{"axis", int64_t{-1}}}), F({24, 5}));
  EXPECT_EQ(infer("Flatten", {f32({2, 3, 4, 5})}, {{"axis", int64_t{4}}}), F({120, 1}));
  EXPECT_EQ(infer("Flatten", {f32({2, 3, 4, 5})}, {{"axis", int64_t{0}}}), F({1, 120}));
  fails("Flatten", {f32({2, 3})}, {{"axis", int64_t{3}}});

  EXPECT_EQ(infer("Gemm", {f32({3, 4}), f32({5, 4}), f32({5})}, {{"transB", int64_t{1}}}),
            F({3, 5}));
  EXPECT_EQ(infer("Gemm", {f32({4, 3}), f32({4, 5}), f32({3, 1})}, {{"transA", int64_t{1}}}),
            F({3, 5}));
  fails("Gemm", {f32({3, 4}), f32({4, 5}), f32({4})});
  EXPECT_TRUE(has(fails("Gemm", {f32({3, 4}), f32({3, 5})}), "inner dims"));

  EXPECT_EQ(infer("MatMul", {f32({3}), f32({3})}), F({}));
  EXPECT_EQ(infer("MatMul", {f32({3}), f32({3, 4})}), F({4}));
  EXPECT_EQ(infer("MatMul", {f32({2, 3, 4}), f32({4})}), F({2, 3}));
  EXPECT_EQ(infer("MatMul", {f32({2, 1, 3, 4}), f32({5, 4, 6})}), F({2, 5, 3, 6}));
  fails("MatMul", {f32({2, 3}), f32({4, 5})});
  fails("MatMul", {f32({2, 3, 4}), f32({3, 4, 5})});  // batch 2 vs 3
}

TEST_F(OpsShapeTest, SoftmaxAndReductions) {
  EXPECT_EQ(infer("Softmax", {f32({2, 3, 4})}), F({2, 3, 4}));
  EXPECT_EQ(infer("LogSoftmax", {f32({2, 3, 4})}, {{"axis", int64_t{-3}}}), F({2, 3, 4}));
  EXPECT_TRUE(has(fails("Softmax", {f32({2, 3, 4})}, {{"axis", int64_t{3}}}), "axis 3"));
  // An additive mask (dscompile's extension) repeating along the rows of the last axis.
  EXPECT_EQ(infer("Softmax", {f32({2, 3, 4}), f32({1, 3, 4})}), F({2, 3, 4}));
  EXPECT_EQ(infer("Softmax", {f32({2, 3, 4}), f32({4})}), F({2, 3, 4}));
  EXPECT_TRUE(has(fails("Softmax", {f32({2, 3, 4}), f32({2, 1, 4})}), "does not repeat"));
  EXPECT_TRUE(has(fails("Softmax", {f32({2, 3, 4}), f32({3, 4})}, {{"axis", int64_t{1}}}),
                  "needs the last axis"));
  fails("Softmax", {f32({2, 3, 4}), in(DType::F16, {3, 4})});
  fails("LogSoftmax", {f32({2, 3, 4}), f32({3, 4})});

  EXPECT_EQ(infer("ReduceMean", {f32({2, 3, 4})}, {{"axes", Ints{1}}}), F({2, 1, 4}));
  EXPECT_EQ(infer("ReduceSum", {f32({2, 3, 4})}, {{"axes", Ints{-1, 0}}, {"keepdims", int64_t{0}}}),
            F({3}));
  EXPECT_EQ(infer("ReduceSum", {f32({2, 3, 4})}), F({1, 1, 1}));
  EXPECT_EQ(infer("ReduceMean", {f32({2, 3, 4})}, {{"keepdims", int64_t{0}}}), F({}));
  EXPECT_EQ(infer("ReduceSum", {f32({2, 3})}, {{"noop_with_empty_axes", int64_t{1}}}), F({2, 3}));
  fails("ReduceSum", {f32({2, 3})}, {{"axes", Ints{1, -1}}});
  fails("ReduceMean", {f32({2, 3})}, {{"axes", Ints{2}}});
  // `to`: a 16-bit sum into f32 (the mixed-precision gradient norm).
  EXPECT_EQ(infer("ReduceSumSquare", {in(DType::BF16, {2, 3})},
                  {{"keepdims", int64_t{0}}, {"to", std::string("f32")}}),
            F({}));
  EXPECT_EQ(infer("ReduceSum", {in(DType::F16, {2, 3})},
                  {{"noop_with_empty_axes", int64_t{1}}, {"to", std::string("f32")}}),
            F({2, 3}));
  EXPECT_TRUE(has(fails("ReduceSum", {in(DType::F16, {2})}, {{"to", std::string("f16")}}),
                  "to must be 'f32'"));
  EXPECT_TRUE(has(fails("ReduceSum", {in(DType::F64, {2})}, {{"to", std::string("f32")}}),
                  "at most 32 bits"));
}

TEST_F(OpsShapeTest, LayerNormalization) {
  EXPECT_EQ(infer("LayerNormalization", {f32({2, 5, 8}), f32({8}), f32({8})}), F({2, 5, 8}));
  EXPECT_EQ(infer("LayerNormalization", {f32({2, 5, 8}), f32({8})}, {}, 3, 1), F({2, 5, 1}));
  EXPECT_EQ(infer("LayerNormalization", {in(DType::F16, {2, 5, 8}), in(DType::F16, {5, 8})},
                  {{"axis", int64_t{1}}}, 3, 2),
            F({2, 1, 1}));
  fails("LayerNormalization", {f32({2, 5, 8}), f32({5})});
  fails("LayerNormalization", {f32({2, 5, 8}), f32({8})}, {{"axis", int64_t{3}}});
  // Mixed precision: 16-bit data with f32 parameters; never f32 data with 16-bit ones.
  EXPECT_EQ(infer("LayerNormalization", {in(DType::BF16, {2, 8}), f32({8}), f32({8})}),
            T(DType::BF16, {2, 8}));
  EXPECT_TRUE(has(fails("LayerNormalization", {f32({2, 8}), in(DType::F16, {8})}),
                  "has dtype f16; it must be f32"));
}

// Pad's pads are every axis's begins, then ends; never negative.
TEST_F(OpsShapeTest, Pad) {
  EXPECT_EQ(infer("Pad", {f32({2, 3})}, {{"pads", std::vector<int64_t>{1, 0, 2, 4}}}), F({5, 7}));
  EXPECT_TRUE(has(fails("Pad", {f32({2, 3})}, {{"pads", std::vector<int64_t>{1, 0}}}),
                  "pads has 2 values, needs 2 x rank 2"));
  EXPECT_TRUE(has(fails("Pad", {f32({2, 3})}, {{"pads", std::vector<int64_t>{0, -1, 0, 0}}}),
                  "pads must not be negative (axis 1: -1, 0)"));
}

// Clip takes any numeric input (ONNX's int8 cases too); its bounds are float
// attributes, unbounded when absent.
// Less and Greater order numbers only; Equal compares any dtype.
TEST_F(OpsShapeTest, Comparisons) {
  EXPECT_EQ(infer("Less", {f32({2, 3}), f32({3})}), T(DType::Bool, {2, 3}));
  EXPECT_EQ(infer("Equal", {in(DType::Bool, {2}), in(DType::Bool, {2})}), T(DType::Bool, {2}));
  fails("Greater", {in(DType::Bool, {2}), in(DType::Bool, {2})});
  fails("Less", {f32({2}), i64({2})});
}

TEST_F(OpsShapeTest, Clip) {
  EXPECT_EQ(infer("Clip", {in(DType::F16, {2, 3})}, {{"min", 0.0}, {"max", 6.0}}),
            T(DType::F16, {2, 3}));
  EXPECT_EQ(infer("Clip", {i64({4})}), T(DType::I64, {4}));
  fails("Clip", {f32({3})}, {{"min", int64_t{0}}});  // wrong attribute kind
  fails("Clip", {in(DType::Bool, {3})});
  EXPECT_EQ(infer("ClipGrad", {f32({2, 3}), f32({2, 3})}, {{"max", 6.0}}), F({2, 3}));
  fails("ClipGrad", {f32({2, 3}), f32({3})});
}

TEST_F(OpsShapeTest, ReluGrad) {
  EXPECT_EQ(infer("ReluGrad", {in(DType::F16, {2, 3}), in(DType::F16, {2, 3})}),
            T(DType::F16, {2, 3}));
  fails("ReluGrad", {f32({2, 3}), f32({3})});
  fails("ReluGrad", {f32({2, 3}), in(DType::F16, {2, 3})});
  fails("ReluGrad", {i64({2}), i64({2})});
}

TEST_F(OpsShapeTest, GeluGrad) {
  EXPECT_EQ(infer("GeluGrad", {in(DType::BF16, {2, 3}), in(DType::BF16, {2, 3})}),
            T(DType::BF16, {2, 3}));
  EXPECT_EQ(infer("GeluGrad", {f32({2}), f32({2})}, {{"approximate", std::string("tanh")}}),
            F({2}));
  fails("GeluGrad", {f32({2, 3}), f32({3})});
  fails("GeluGrad", {f32({2}), f32({2})}, {{"approximate", std::string("fast")}});
  fails("GeluGrad", {i64({2}), i64({2})});
}

TEST_F(OpsShapeTest, SoftmaxGrad) {
  EXPECT_EQ(infer("SoftmaxGrad", {f32({2, 3}), f32({2, 3})}, {{"axis", int64_t{-1}}}), F({2, 3}));
  fails("SoftmaxGrad", {f32({2, 3}), f32({3})}, {{"axis", int64_t{-1}}});
  fails("SoftmaxGrad", {f32({2, 3}), f32({2, 3})}, {{"axis", int64_t{2}}});
  fails("SoftmaxGrad", {i64({2}), i64({2})}, {{"axis", int64_t{0}}});
}

TEST_F(OpsShapeTest, WeightBiasGrad) {
  // Y = Aᵀ·B [m, n]; S sums input bias_input's rows.
  EXPECT_EQ(infer("WeightBiasGrad", {f32({10, 4}), f32({10, 3})}, {}, 2, 0), F({4, 3}));
  EXPECT_EQ(infer("WeightBiasGrad", {f32({10, 4}), f32({10, 3})}, {}, 2, 1), F({3}));
  EXPECT_EQ(infer("WeightBiasGrad", {in(DType::BF16, {10, 4}), in(DType::BF16, {10, 3})},
                  {{"bias_input", int64_t{0}}}, 2, 1),
            T(DType::BF16, {4}));
  EXPECT_TRUE(
      has(fails("WeightBiasGrad", {f32({10, 4}), f32({9, 3})}, {}, 2), "the same rows: 10 vs 9"));
  EXPECT_TRUE(
      has(fails("WeightBiasGrad", {f32({10, 4}), f32({10, 3})}, {{"bias_input", int64_t{2}}}, 2),
          "bias_input must be 0 or 1"));
  fails("WeightBiasGrad", {f32({2, 10, 4}), f32({2, 10, 3})}, {}, 2);
  fails("WeightBiasGrad", {f32({10, 4}), in(DType::F16, {10, 3})}, {}, 2);
  fails("WeightBiasGrad", {i64({10, 4}), i64({10, 3})}, {}, 2);
  fails("WeightBiasGrad", {f32({10, 4}), f32({10, 3})}, {}, 1);
}

TEST_F(OpsShapeTest, ReshapeTransposeSqueeze) {
  EXPECT_EQ(infer("Reshape", {f32({2, 3, 4})}, {{"shape", Ints{0, -1}}}), F({2, 12}));
  EXPECT_EQ(infer("Reshape", {f32({2, 3, 4})}, {{"shape", Ints{4, 0, -1}}}), F({4, 3, 2}));
  EXPECT_EQ(infer("Reshape", {f32({2, 0})}, {{"shape", Ints{0, 5}}, {"allowzero", int64_t{1}}}),
            F({0, 5}));
  fails("Reshape", {f32({2, 3, 4})}, {{"shape", Ints{-1, -1}}});
  fails("Reshape", {f32({2, 3, 4})}, {{"shape", Ints{5, -1}}});
  fails("Reshape", {f32({2, 3, 4})}, {{"shape", Ints{0, 4}}, {"allowzero", int64_t{1}}});
  EXPECT_TRUE(has(fails("Reshape", {f32({2, 3})}), "required attribute 'shape'"));

  EXPECT_EQ(infer("Transpose", {f32({2, 3, 4})}), F({4, 3, 2}));
  EXPECT_EQ(infer("Transpose", {f32({2, 3, 4})}, {{"perm", Ints{0, 2, 1}}}), F({2, 4, 3}));
  fails("Transpose", {f32({2, 3, 4})}, {{"perm", Ints{0, 0, 1}}});

  EXPECT_EQ(infer("Unsqueeze", {f32({3, 4})}, {{"axes", Ints{0, -1}}}), F({1, 3, 4, 1}));
  EXPECT_EQ(infer("Unsqueeze", {f32({})}, {{"axes", Ints{0}}}), F({1}));
  fails("Unsqueeze", {f32({3})}, {{"axes", Ints{0, 0}}});
  EXPECT_EQ(infer("Squeeze", {f32({1, 3, 1, 4})}), F({3, 4}));
  EXPECT_EQ(infer("Squeeze", {f32({1, 3, 1, 4})}, {{"axes", Ints{-2}}}), F({1, 3, 4}));
  EXPECT_TRUE(has(fails("Squeeze", {f32({1, 3})}, {{"axes", Ints{1}}}), "size 3"));
}

TEST_F(OpsShapeTest, ConcatSplit) {
  EXPECT_EQ(infer("Concat", {f32({2, 3}), f32({2, 5}), f32({2, 1})}, {{"axis", int64_t{-1}}}),
            F({2, 9}));
  EXPECT_EQ(infer("Concat", {f32({2, 3})}, {{"axis", int64_t{0}}}), F({2, 3}));
  fails("Concat", {f32({2, 3}), f32({3, 3})}, {{"axis", int64_t{1}}});
  fails("Concat", {f32({2, 3}), i64({2, 3})}, {{"axis", int64_t{0}}});
  fails("Concat", {f32({2, 3}), f32({2, 3})});  // axis is required

  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(infer("Split", {f32({6, 4})}, {}, 3, i), F({2, 4}));
  EXPECT_EQ(infer("Split", {f32({6, 4})}, {{"axis", int64_t{1}}, {"split", Ints{1, 3}}}, 2, 1),
            F({6, 3}));
  EXPECT_TRUE(has(fails("Split", {f32({6, 4})}, {{"axis", int64_t{1}}}, 3), "equal parts"));
  fails("Split", {f32({6, 4})}, {{"split", Ints{1, 2}}}, 2);
}

TEST_F(OpsShapeTest, Slice) {
  EXPECT_EQ(
      infer("Slice", {f32({10, 20})}, {{"starts", Ints{1}}, {"ends", Ints{-1}}, {"axes", Ints{0}}}),
      F({8, 20}));
  // Full reverse with INT64_MIN end.
  EXPECT_EQ(
      infer("Slice", {f32({10, 20})},
            {{"starts", Ints{-1}}, {"ends", Ints{kMin}}, {"axes", Ints{1}}, {"steps", Ints{-1}}}),
      F({10, 20}));
  // 8, 5, 2.
  EXPECT_EQ(
      infer("Slice", {f32({10})}, {{"starts", Ints{8}}, {"ends", Ints{1}}, {"steps", Ints{-3}}}),
      F({3}));
  EXPECT_EQ(
      infer("Slice", {f32({10, 20})},
            {{"starts", Ints{0}}, {"ends", Ints{kMax}}, {"axes", Ints{-1}}, {"steps", Ints{3}}}),
      F({10, 7}));
  EXPECT_EQ(infer("Slice", {f32({10})}, {{"starts", Ints{5}}, {"ends", Ints{2}}}), F({0}));
  EXPECT_EQ(infer("Slice", {f32({10})},
                  {{"starts", Ints{100}}, {"ends", Ints{-100}}, {"steps", Ints{-1}}}),
            F({10}));
  EXPECT_EQ(infer("Slice", {f32({0, 3})},
                  {{"starts", Ints{-1}}, {"ends", Ints{kMin}}, {"steps", Ints{-1}}}),
            F({0, 3}));
  fails("Slice", {f32({10})}, {{"starts", Ints{0}}, {"ends", Ints{5}}, {"steps", Ints{0}}});
  fails("Slice", {f32({10})}, {{"starts", Ints{0}}, {"ends", Ints{5, 6}}});
  fails("Slice", {f32({10})}, {{"starts", Ints{0}}, {"ends", Ints{5}}, {"axes", Ints{1}}});
}

TEST_F(OpsShapeTest, GatherExpandTrilu) {
  EXPECT_EQ(infer("Gather", {f32({5, 4, 3}), i64({2, 2})}, {{"axis", int64_t{1}}}),
            F({5, 2, 2, 3}));
  EXPECT_EQ(infer("Gather", {f32({5, 4}), constInts({}, {-1})}), F({4}));
  fails("Gather", {f32({5, 4}), f32({2})});
  fails("Gather", {f32({5, 4}), i64({2})}, {{"axis", int64_t{2}}});
  EXPECT_TRUE(has(fails("Gather", {f32({5, 4}), constInts({1}, {5})}), "out of range"));

  EXPECT_EQ(infer("Expand", {f32({3, 1})}, {{"shape", Ints{2, 1, 4}}}), F({2, 3, 4}));
  fails("Expand", {f32({3})}, {{"shape", Ints{2}}});

  EXPECT_EQ(infer("Trilu", {i64({2, 4, 4})}, {{"upper", int64_t{0}}, {"k", int64_t{-1}}}),
            T(DType::I64, {2, 4, 4}));
  fails("Trilu", {f32({4})});
}

TEST_F(OpsShapeTest, ShapeRangeConstantOfShape) {
  EXPECT_EQ(infer("Shape", {f32({2, 3, 4, 5})}), T(DType::I64, {4}));
  EXPECT_EQ(infer("Shape", {f32({2, 3, 4, 5})}, {{"start", int64_t{1}}, {"end", int64_t{-1}}}),
            T(DType::I64, {2}));
  EXPECT_EQ(infer("Shape", {f32({2, 3, 4, 5})}, {{"start", int64_t{-10}}}), T(DType::I64, {4}));
  EXPECT_EQ(infer("Shape", {f32({2, 3, 4, 5})}, {{"start", int64_t{3}}, {"end", int64_t{1}}}),
            T(DType::I64, {0}));

  auto scalar = [&](int64_t v) { return constInts({}, {v}); };
  auto fscalar = [&](double v) {
    return g.addConstant(g.uniqueName("f"), Tensor::fromDoubles(DType::F32, {}, {v}));
  };
  EXPECT_EQ(infer("Range", {scalar(0), scalar(10), scalar(3)}), T(DType::I64, {4}));
  EXPECT_EQ(infer("Range", {scalar(10), scalar(0), scalar(-3)}), T(DType::I64, {4}));
  EXPECT_EQ(infer("Range", {scalar(5), scalar(0), scalar(1)}), T(DType::I64, {0}));
  EXPECT_EQ(infer("Range", {fscalar(1.0), fscalar(2.0), fscalar(0.3)}), F({4}));
  EXPECT_TRUE(has(fails("Range", {scalar(0), i64({}), scalar(1)}), "needs constant inputs"));
  fails("Range", {scalar(0), scalar(4), scalar(0)});

  EXPECT_EQ(infer("ConstantOfShape", {constInts({2}, {2, 3})}), F({2, 3}));
  EXPECT_EQ(infer("ConstantOfShape", {constInts({2}, {2, 3})},
                  {{"value", Tensor::fromInts(DType::I64, {1}, {7})}}),
            T(DType::I64, {2, 3}));
  EXPECT_EQ(infer("ConstantOfShape", {constInts({0}, {})}), F({}));
  fails("ConstantOfShape", {i64({2})});
}

TEST_F(OpsShapeTest, DropoutAndLoss) {
  EXPECT_EQ(infer("Dropout", {f32({4, 8})}, {}, 2, 0), F({4, 8}));
  EXPECT_EQ(infer("Dropout", {f32({4, 8})}, {{"training_mode", int64_t{1}}}, 2, 1),
            T(DType::Bool, {4, 8}));
  fails("Dropout", {f32({4})}, {{"ratio", 1.0}});

  auto sce = [&](Shape scores, Shape labels, AttributeMap attrs = {}, size_t outs = 1,
                 size_t i = 0) {
    return infer("SoftmaxCrossEntropyLoss", {f32(std::move(scores)), i64(std::move(labels))},
                 std::move(attrs), outs, i);
  };
  EXPECT_EQ(sce({4, 10}, {4}), F({}));
  EXPECT_EQ(sce({4, 10}, {4}, {{"reduction", std::string("none")}}), F({4}));
  EXPECT_EQ(sce({4, 10, 7}, {4, 7}, {{"reduction", std::string("none")}}), F({4, 7}));
  EXPECT_EQ(sce({4, 10, 7}, {4, 7}, {}, 2, 1), F({4, 10, 7}));
  EXPECT_EQ(infer("SoftmaxCrossEntropyLoss", {f32({4, 10}), in(DType::I32, {4}), f32({10})},
                  {{"reduction", std::string("sum")}}),
            F({}));
  fails("SoftmaxCrossEntropyLoss", {f32({4, 10}), i64({10})});
  fails("SoftmaxCrossEntropyLoss", {f32({4, 10}), f32({4})});
  fails("SoftmaxCrossEntropyLoss", {f32({4, 10}), i64({4}), f32({4})});
  fails("SoftmaxCrossEntropyLoss", {f32({4, 10}), i64({4})}, {{"reduction", std::string("avg")}});
  // classes: the first of the class axis's scores take part; the rest is padding.
  EXPECT_EQ(sce({4, 16}, {4}, {{"classes", int64_t{10}}}), F({}));
  EXPECT_TRUE(
      has(fails("SoftmaxCrossEntropyLoss", {f32({4, 16}), i64({4})}, {{"classes", int64_t{17}}}),
          "must lie in [0, 16]"));
  EXPECT_TRUE(has(fails("SoftmaxCrossEntropyLoss", {f32({4, 16}), i64({4}), f32({16})},
                        {{"classes", int64_t{10}}}),
                  "takes no class weights"));
  EXPECT_TRUE(
      has(fails("SoftmaxCrossEntropyLoss", {f32({4, 16}), i64({4})}, {{"classes", int64_t{10}}}, 2),
          "has no log_prob"));
  EXPECT_EQ(infer("SoftmaxCrossEntropyLossGrad", {f32({}), f32({4, 16}), i64({4})},
                  {{"classes", int64_t{10}}}),
            F({4, 16}));
}

// Shards split axis 0 into world_size equal parts (contiguous in the flat buffer).
TEST_F(OpsShapeTest, Collectives) {
  AttributeMap n4 = {{"world_size", int64_t{4}}};
  EXPECT_EQ(infer("AllReduce", {f32({3, 5})}, n4), F({3, 5}));
  EXPECT_EQ(infer("AllReduce", {in(DType::BF16, {})}, n4), T(DType::BF16, {}));
  EXPECT_EQ(infer("ReduceScatter", {f32({8, 3})}, n4), F({2, 3}));
  EXPECT_EQ(infer("ReduceScatter", {i64({12})}, n4), T(DType::I64, {3}));
  EXPECT_EQ(infer("AllGather", {f32({2, 3})}, n4), F({8, 3}));
  EXPECT_EQ(infer("AllGather", {in(DType::Bool, {1})}, n4), T(DType::Bool, {4}));
  EXPECT_EQ(infer("Broadcast", {f32({7})}, {{"world_size", int64_t{2}}, {"root", int64_t{1}}}),
            F({7}));
  EXPECT_TRUE(has(fails("ReduceScatter", {f32({6, 3})}, n4), "4 equal shards"));
  fails("ReduceScatter", {f32({})}, n4);
  fails("AllGather", {f32({})}, n4);
  fails("AllReduce", {in(DType::Bool, {2})}, n4);
  fails("AllReduce", {f32({2})}, {{"world_size", int64_t{2}}, {"reduction", std::string("max")}});
  fails("AllReduce", {f32({2})});  // world_size is required
  fails("AllReduce", {f32({2})}, {{"world_size", int64_t{0}}});
  fails("Broadcast", {f32({2})}, {{"world_size", int64_t{2}}, {"root", int64_t{2}}});
}

TEST_F(OpsShapeTest, FailedNodeLeavesGraphUnchanged) {
  Value* x = f32({2, 3});
  size_t values = g.numValues();
  fails("Softmax", {x}, {{"axis", int64_t{5}}});
  EXPECT_EQ(g.numNodes(), 0u);
  EXPECT_EQ(g.numValues(), values);
  EXPECT_TRUE(x->users().empty());
}

}  // namespace
}  // namespace ds
