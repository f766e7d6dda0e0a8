// The text IR round-trips, parse errors name line and column, and the verifier
// catches broken graphs.
#include <gtest/gtest.h>

#include "ir/error.h"
#include "ir/text.h"
#include "ir/verifier.h"
#include "tests/test_util.h"

namespace ds {
namespace {

using test::contains;

const char* kMlp = R"(graph mlp {
  input %x : f32[8,4]
  label %y : i64[8]
  param %w : f32[4,2]
  param %b : f32[2]
  buffer %stat : f32[2]
  const %shape : i64[2] = [8, 2]
  const %half : f32[] = [0.5]
  %h = MatMul(%x, %w) : f32[8,2] @fc
  %h2 = Add(%h, %b) : f32[8,2] @bias
  %z = Reshape(%h2) {shape = [8, 2]} : f32[8,2] @"odd name:1"
  %q = Mul(%z, %half) : f32[8,2] @scale
  %"onnx::weird" = Transpose(%q) {perm = [1, 0]} : f32[2,8] @t
  %p0, %p1 = Split(%"onnx::weird") {axis = 1, split = [3, 5]} : f32[2,3], f32[2,5] @split
  %lk = LeakyRelu(%p0) {alpha = 0.2} : f32[2,3] @lk
  %c = Cast(%lk) {to = "f16"} : f16[2,3] @cast
  return %c, %p1
}
)";

TEST(IrText, RoundTripsExactly) {
  auto g = parseGraph(kMlp);
  verifyGraph(*g);
  std::string printed = printGraph(*g);
  EXPECT_EQ(printed, kMlp);
  auto again = parseGraph(printed);
  EXPECT_EQ(printGraph(*again), printed);
}

TEST(IrText, KeepsRolesDataAndAttributeKinds) {
  auto g = parseGraph(kMlp);
  EXPECT_EQ(g->value("y")->role(), Role::Label);
  EXPECT_EQ(g->value("stat")->role(), Role::Buffer);
  EXPECT_EQ(g->value("shape")->data().toInts(), (std::vector<int64_t>{8, 2}));
  const Node* lk = g->value("lk")->producer();
  EXPECT_DOUBLE_EQ(lk->f("alpha"), 0.2);
  EXPECT_EQ(g->value("z")->producer()->name(), "odd name:1");
  EXPECT_EQ(g->outputs().size(), 2u);
}

TEST(IrText, RoundTripsEdgeCaseAttributes) {
  const char* text = R"(graph g {
  input %x : f32[2,3]
  %a = Identity(%x) : grad f32[2,3] @n
  %s = ConstantOfShape(%shape) {value = tensor<f16[1]>[-0.0]} : f16[2] @cos
  return %a
}
)";
  // %shape is used before it is defined: the parser rejects it with a location.
  try {
    parseGraph(text);
    FAIL() << "expected a parse error";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "line 4:")) << e.what();
    EXPECT_TRUE(contains(e.what(), "undefined value '%shape'")) << e.what();
  }
  const char* ok = R"(graph g {
  input %x : f32[2,3]
  const %shape : i64[1] = [2]
  const %big : f64[3] = [1e+300, -inf, nan]
  %a = Identity(%x) : grad f32[2,3] @n
  %s = ConstantOfShape(%shape) {value = tensor<f16[1]>[-0.0]} : f16[2] @cos
  %r = ReduceSum(%x) {axes = ints[], keepdims = 0} : f32[] @sum
  return %a, %s, %r
}
)";
  auto g = parseGraph(ok);
  verifyGraph(*g);
  EXPECT_EQ(printGraph(*g), ok);
  EXPECT_EQ(g->value("a")->role(), Role::Gradient);
}

// A ZeRO shard: its type is one rank's part, its data every rank's, and its layout
// names the whole tensors it packs.
TEST(IrText, ShardedSourcesRoundTripWithTheirLayout) {
  const std::string text = R"(graph z {
  param %zero/bucket0.params : f32[3] sharded(2; %w [2,2] at 0, %b [1] at 4) = [1.0, 2.0, 3.0, 4.0, 5.0, 0.0]
  %y = Neg(%zero/bucket0.params) : f32[3] @neg
  return %y
}
)";
  auto g = parseGraph(text);
  verifyGraph(*g);
  const Value* shard = g->value("zero/bucket0.params");
  ASSERT_NE(shard->shardLayout(), nullptr);
  EXPECT_EQ(shard->shardLayout()->world_size, 2);
  EXPECT_EQ(shard->shardLayout()->pieces.at(1).name, "b");
  EXPECT_EQ(shard->shardLayout()->pieces.at(1).offset, 4);
  EXPECT_EQ(shard->dataType().toString(), "f32[6]");
  EXPECT_EQ(printGraph(*g, {.print_weights = true}), text);
  // A shard type that does not match its layout is a parse error naming the value.
  EXPECT_THROW(parseGraph(R"(graph z {
  param %s : f32[4] sharded(2; %w [2,2] at 0, %b [1] at 4)
  return %s
})"),
               Error);
}

TEST(IrText, ParseErrorsNameLineAndColumn) {
  struct Case {
    const char* text;
    const char* message;
  };
  const Case cases[] = {
      {"graph g {\n  input %x : f99[2]\n  return %x\n}", "line 2:14: unknown dtype 'f99'"},
      {"graph g {\n  input %x : f32[2]\n  %y = Frobnicate(%x) : f32[2]\n  return %y\n}",
       "unknown op 'Frobnicate'"},
      {"graph g {\n  input %x : f32[2]\n  input %x : f32[2]\n  return %x\n}", "defined twice"},
      {"graph g {\n  const %c : i64[3] = [1, 2]\n  return %c\n}", "needs 3 values, got 2"},
      {"graph g {\n  input %x : f32[2]\n  return %x\n", "expected '}'"},
  };
  for (const Case& c : cases) {
    try {
      parseGraph(c.text);
      ADD_FAILURE() << "no error for:\n" << c.text;
    } catch (const Error& e) {
      EXPECT_TRUE(contains(e.what(), c.message)) << e.what();
    }
  }
}

// The verifier must reject each of these graphs with a message naming the problem.
TEST(IrVerifier, CatchesBrokenGraphs) {
  struct Case {
    const char* text;
    const char* message;
  };
  const Case cases[] = {
      {R"(graph g {
  input %x : f32[2,3]
  %y = Relu(%x) : f32[3,2] @r
  return %y
})",
       "is typed f32[3,2] but its shape rule gives f32[2,3]"},
      {R"(graph g {
  input %x : f32[2,3]
  %y = Relu(%x) {alpha = 1.0} : f32[2,3] @r
  return %y
})",
       "unknown attribute 'alpha'"},
      {R"(graph g {
  input %x : f32[2,3]
  %y = Add(%x) : f32[2,3] @a
  return %y
})",
       "inputs, got 1"},
      {R"(graph g {
  input %x : f32[2,3]
  input %w : f32[4,5]
  %y = MatMul(%x, %w) : f32[2,5] @mm
  return %y
})",
       "node 'mm' (MatMul)"},
      {R"(graph g {
  input %x : f32[2,3]
  %y = Reshape(%x) {shape = "oops"} : f32[6] @r
  return %y
})",
       "attribute 'shape' must be ints"},
  };
  for (const Case& c : cases) {
    auto g = parseGraph(c.text);
    try {
      verifyGraph(*g);
      ADD_FAILURE() << "verifier accepted:\n" << c.text;
    } catch (const Error& e) {
      EXPECT_TRUE(contains(e.what(), c.message)) << e.what();
    }
  }
}

TEST(IrVerifier, CatchesUseBeforeDefinitionAfterAMove) {
  // Build a valid chain, then insert a consumer before its producer.
  auto g = parseGraph(R"(graph g {
  input %x : f32[4]
  %a = Relu(%x) : f32[4] @first
  return %a
})");
  Value* a = g->value("a");
  Node* first = a->producer();
  g->addNode("Neg", {a}, {}, {"early"}, "early", /*before=*/first);
  g->addOutput(g->value("early"));
  try {
    verifyGraph(*g);
    FAIL() << "verifier accepted a use before definition";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "uses 'a' before it is defined")) << e.what();
  }
}

TEST(IrGraph, ReplaceAllUsesAndEraseKeepLinksConsistent) {
  auto g = parseGraph(R"(graph g {
  input %x : f32[4]
  %a = Relu(%x) : f32[4] @r
  %b = Neg(%a) : f32[4] @n1
  %c = Add(%a, %a) : f32[4] @add
  return %b, %c
})");
  Value* x = g->value("x");
  Value* a = g->value("a");
  EXPECT_EQ(a->users().size(), 3u);  // Neg once, Add twice
  g->replaceAllUsesWith(a, x);
  EXPECT_TRUE(a->users().empty());
  EXPECT_EQ(x->users().size(), 4u);
  g->eraseNode(a->producer());
  verifyGraph(*g);
  EXPECT_EQ(g->numNodes(), 2u);
  EXPECT_EQ(g->findValue("a"), nullptr);
}

}  // namespace
}  // namespace ds

namespace ds {
namespace {

TEST(IrStateUpdates, RoundTripAndReadsAfterTheUpdateAreCaught) {
  const char* text = R"(graph g {
  param %w : f32[4]
  input %x : f32[4]
  %w_next = Sub(%w, %x) : f32[4] @step
  update %w = %w_next
  return %w_next
}
)";
  auto g = parseGraph(text);
  verifyGraph(*g);
  EXPECT_EQ(printGraph(*g), text);
  ASSERT_EQ(g->stateUpdates().size(), 1u);
  EXPECT_EQ(g->stateUpdates()[0].state->name(), "w");

  auto late = parseGraph(R"(graph g {
  param %w : f32[4]
  input %x : f32[4]
  %w_next = Sub(%w, %x) : f32[4] @step
  %stale = Neg(%w) : f32[4] @late_reader
  update %w = %w_next
  return %stale
})");
  try {
    verifyGraph(*late);
    FAIL() << "verifier accepted a read after the update";
  } catch (const Error& e) {
    EXPECT_TRUE(test::contains(e.what(), "node 'late_reader' (Neg) reads 'w' after node 'step'"))
        << e.what();
  }
  try {
    parseGraph(
        "graph g {\n  input %x : f32[4]\n  %y = Neg(%x) : f32[4] @n\n  update %x = %y\n  return "
        "%y\n}");
    FAIL() << "an input cannot be updated";
  } catch (const Error& e) {
    EXPECT_TRUE(test::contains(e.what(), "is not a parameter, buffer or optimizer state"))
        << e.what();
  }
}

}  // namespace
}  // namespace ds
