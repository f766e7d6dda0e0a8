// The memory planner: exact arenas for small textual schedules, in-place reuse,
// and no two live values overlapping on whole models.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "frontend/onnx_import.h"
#include "ir/error.h"
#include "ir/text.h"
#include "models/models.h"
#include "passes/lower_to_plan.h"
#include "passes/memory_plan.h"
#include "runtime/cpu_executor.h"
#include "tests/test_util.h"

namespace ds {
namespace {

// Each activation is f32[64] = 256 bytes = one alignment unit.
TEST(MemoryPlan, ChainReusesMemoryAndRunsInPlace) {
  auto h = parseGraph(R"(graph g {
  input %x : f32[64]
  param %w : f32[64]
  %a = Mul(%x, %w) : f32[64] @mul
  %b = Relu(%a) : f32[64] @relu
  %c = Concat(%b, %b) {axis = 0} : f32[128] @cat
  %d = Neg(%c) : f32[128] @neg
  return %d
})");
  MemoryPlan plan = planMemory(*h);
  checkMemoryPlan(*h, plan);
  // a and b share one buffer (Relu in place); c needs its own while b is live;
  // d runs in place of c. Peak: b (256) + c (512) at the Concat.
  EXPECT_EQ(plan.inplace_count, 2);
  EXPECT_EQ(plan.allocations.at(h->value("a")).offset, plan.allocations.at(h->value("b")).offset);
  EXPECT_EQ(plan.allocations.at(h->value("c")).offset, plan.allocations.at(h->value("d")).offset);
  EXPECT_EQ(plan.peak_live_bytes, 768);
  EXPECT_EQ(plan.arena_bytes, 768);
}

TEST(MemoryPlan, ValuesUsedTwiceAreNotOverwritten) {
  auto g = parseGraph(R"(graph g {
  input %x : f32[64]
  %a = Neg(%x) : f32[64] @n1
  %b = Relu(%a) : f32[64] @r
  %c = Add(%a, %b) : f32[64] @add
  return %c
})");
  MemoryPlan plan = planMemory(*g);
  checkMemoryPlan(*g, plan);
  // a is still needed by Add, so Relu may not run in place of it; Add may overwrite a.
  EXPECT_NE(plan.allocations.at(g->value("a")).offset, plan.allocations.at(g->value("b")).offset);
  EXPECT_EQ(plan.allocations.at(g->value("c")).offset, plan.allocations.at(g->value("a")).offset);
  EXPECT_EQ(plan.arena_bytes, 512);
}

// A reshape relabels its input's bytes: when the input dies there, the output
// shares its buffer (the copy is then a no-op); a Transpose moves bytes, so not.
TEST(MemoryPlan, ReshapesShareTheirInputsBuffer) {
  auto g = parseGraph(R"(graph g {
  input %x : f32[8,8]
  %a = Neg(%x) : f32[8,8] @neg
  %b = Reshape(%a) {shape = [64]} : f32[64] @flat
  %c = Unsqueeze(%b) {axes = [0]} : f32[1,64] @unsq
  %d = Transpose(%c) : f32[64,1] @t
  return %d
})");
  MemoryPlan plan = planMemory(*g);
  checkMemoryPlan(*g, plan);
  const int64_t a = plan.allocations.at(g->value("a")).offset;
  EXPECT_EQ(plan.allocations.at(g->value("b")).offset, a);
  EXPECT_EQ(plan.allocations.at(g->value("c")).offset, a);
  EXPECT_NE(plan.allocations.at(g->value("d")).offset, a);
  EXPECT_EQ(plan.inplace_count, 2);
}

// A reshape of a value read again later shares its bytes too (a view); the
// shared buffer then lives until its last reader, so no in-place step writes over
// it before: here Relu may not run in place of b while a is still read, and Neg
// (after a's last reader) may. With --poison-freed both executors poison the
// buffer only when all its tensors are dead: the results are unchanged.
TEST(MemoryPlan, ReshapesOfLiveValuesShareTheirBuffer) {
  const std::string text = R"(graph g {
  input %x : f32[8,8]
  %a = Neg(%x) : f32[8,8] @neg
  %b = Reshape(%a) {shape = [64]} : f32[64] @flat
  %c = Relu(%b) : f32[64] @relu
  %d = Add(%a, %a) : f32[8,8] @add
  %e = Neg(%b) : f32[64] @neg2
  %f = Reshape(%c) {shape = [8,8]} : f32[8,8] @back
  %y = Add(%d, %f) : f32[8,8] @sum
  %z = Mul(%y, %y) : f32[8,8] @sq
  return %z, %e
})";
  auto g = parseGraph(text);
  MemoryPlan plan = planMemory(*g);
  checkMemoryPlan(*g, plan);
  const int64_t a = plan.allocations.at(g->value("a")).offset;
  EXPECT_EQ(plan.allocations.at(g->value("b")).offset, a);
  EXPECT_NE(plan.allocations.at(g->value("c")).offset, a);  // b's buffer: a still read
  EXPECT_NE(plan.allocations.at(g->value("d")).offset, a);  // Add reads a, b still read
  EXPECT_EQ(plan.allocations.at(g->value("e")).offset, a);  // b's buffer dies at Neg
  PlanFile file = lowerToPlan(*g, plan, {});
  Tensor x({DType::F32, {8, 8}});
  for (int64_t i = 0; i < x.numel(); ++i) x.setDouble(i, 0.25 * static_cast<double>(i % 9) - 1);
  std::vector<Tensor> clean, poisoned;
  for (bool poison : {false, true}) {
    CpuExecutor exec(file, {.rank = 0, .poison_freed = poison});
    exec.setFeed("x", x);
    exec.run();
    for (size_t o = 0; o < exec.numOutputs(); ++o)
      (poison ? poisoned : clean).push_back(exec.output(o));
  }
  ASSERT_EQ(clean.size(), 2u);
  for (size_t o = 0; o < 2; ++o) EXPECT_EQ(clean[o], poisoned[o]) << "output " << o;
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double v = -x.getDouble(i);
    const double y = 2 * v + std::max(v, 0.0);
    EXPECT_DOUBLE_EQ(clean[0].getDouble(i), y * y) << i;
    EXPECT_DOUBLE_EQ(clean[1].getDouble(i), -v) << i;
  }
}

// A bucket unpacked into parameters: the Split writes each piece straight into its
// parameter's memory (the Reshape to the parameter's shape is then a no-op), unless
// the parameter is read after the Split.
TEST(MemoryPlan, UnpackedPiecesAreWrittenIntoTheirParameters) {
  const std::string text = R"(graph g {
  param %w : f32[2,3] = [1, 2, 3, 4, 5, 6]
  param %b : f32[4] = [1, 2, 3, 4]
  input %x : f32[10]
  %s = Mul(%x, %x) : f32[10] @sq
  %pw, %pb = Split(%s) {axis = 0, split = [6, 4]} : f32[6], f32[4] @unpack
  %nw = Reshape(%pw) {shape = [2, 3]} : f32[2,3] @shape_w
  %nb = Identity(%pb) : f32[4] @copy_b
  %late = Neg(%w) : f32[2,3] @late
  update %w = %nw
  update %b = %nb
  return %late
})";
  auto g = parseGraph(text);
  MemoryPlan plan = planMemory(*g);
  checkMemoryPlan(*g, plan);
  // w is read after the Split: its piece stays in the arena; b's new value (not a
  // relabel) is in b's memory, its piece in the arena.
  EXPECT_EQ(plan.in_state.count(g->value("pw")), 0u);
  EXPECT_EQ(plan.in_state.at(g->value("nw")), g->value("w"));
  EXPECT_EQ(plan.in_state.count(g->value("pb")), 0u);
  std::string early = text;
  early.replace(early.find("%late = Neg(%w)"), 15, "%late = Neg(%x)");
  early.replace(early.find(": f32[2,3] @late"), 16, ": f32[10] @late");
  auto h = parseGraph(early);
  MemoryPlan ok = planMemory(*h);
  checkMemoryPlan(*h, ok);
  EXPECT_EQ(ok.in_state.at(h->value("pw")), h->value("w"));
  EXPECT_FALSE(ok.allocations.count(h->value("pw")));
  // And the plan computes what it did: w = reshape(x²)[0:6], b = x²[6:10].
  PlanFile file = lowerToPlan(*h, ok, {});
  CpuExecutor exec(file, {.rank = 0, .poison_freed = true});
  Tensor x({DType::F32, {10}});
  for (int64_t i = 0; i < 10; ++i) x.setDouble(i, static_cast<double>(i) - 4.5);
  exec.setFeed("x", x);
  exec.run();
  auto tensorNamed = [&](const std::string& name) {
    for (int i = 0; i < file.plan.tensors_size(); ++i)
      if (file.plan.tensors(i).name() == name) return exec.readTensor(i);
    ADD_FAILURE() << "no tensor " << name;
    return Tensor();
  };
  const Tensor w = tensorNamed("w"), b = tensorNamed("b");
  for (int64_t i = 0; i < 6; ++i) EXPECT_EQ(w.getDouble(i), x.getDouble(i) * x.getDouble(i));
  for (int64_t i = 0; i < 4; ++i)
    EXPECT_EQ(b.getDouble(i), x.getDouble(6 + i) * x.getDouble(6 + i));
}

TEST(MemoryPlan, CheckerCatchesOverlap) {
  auto g = parseGraph(R"(graph g {
  input %x : f32[64]
  %a = Neg(%x) : f32[64] @n1
  %b = Sqrt(%x) : f32[64] @n2
  %c = Add(%a, %b) : f32[64] @add
  return %c
})");
  MemoryPlan plan = planMemory(*g);
  checkMemoryPlan(*g, plan);
  plan.allocations[g->value("b")].offset = plan.allocations[g->value("a")].offset;
  try {
    checkMemoryPlan(*g, plan);
    FAIL() << "overlap not caught";
  } catch (const Error& e) {
    EXPECT_TRUE(test::contains(e.what(), "are live together and overlap")) << e.what();
  }
}

TEST(MemoryPlan, ResNet50ForwardArenaIsCloseToThePeak) {
  ResNetOptions options;
  options.depth = 50;
  options.image = 224;
  std::string path = test::tempPath("resnet50_224.onnx");
  saveModel(buildResNet(options), path);
  ImportOptions import;
  import.batch = 8;
  auto g = importOnnxFile(path, import);
  MemoryPlan plan = planMemory(*g);
  checkMemoryPlan(*g, plan);
  std::printf(
      "resnet50 forward, batch 8, 224x224: arena %.1f MiB, peak live %.1f MiB, ratio %.3f, "
      "%lld in place\n",
      plan.arena_bytes / 1048576.0, plan.peak_live_bytes / 1048576.0, plan.ratio(),
      static_cast<long long>(plan.inplace_count));
  EXPECT_GE(plan.arena_bytes, plan.peak_live_bytes);
  EXPECT_LT(plan.ratio(), 1.25);
}

}  // namespace
}  // namespace ds
