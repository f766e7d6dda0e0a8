// Training-mode Dropout with the optimizer step as input (pass seed-dropout): the
// mask is a pure function of (run seed, node seed, node, step, micro-step), so a
// fresh kernel — a resumed run, another backend — reproduces any step's mask, and
// successive runs within one step (gradient accumulation's micro-steps) differ.
#include <gtest/gtest.h>

#include "frontend/compile.h"
#include "ir/text.h"
#include "kernels/cpu/kernel.h"
#include "kernels/dropout_rng.h"
#include "passes/seed_dropout.h"
#include "tests/training_fixtures.h"

namespace ds::cpu {
namespace {

struct DropoutRunner {
  Tensor x = Tensor::fromDoubles(DType::F32, {256}, std::vector<double>(256, 1.0));
  Tensor y{x.type()}, mask{TensorType{DType::Bool, {256}}};
  Tensor step = Tensor::scalarInt(DType::I64, 1);
  KernelContext ctx;
  std::unique_ptr<CpuKernel> kernel;

  DropoutRunner(const std::string& node, uint64_t run_seed, int64_t node_seed = 0) {
    ctx.op = "Dropout";
    ctx.node_name = node;
    ctx.seed = run_seed;
    ctx.attrs = {{"ratio", 0.5}, {"seed", node_seed}, {"training_mode", int64_t{1}}};
    ctx.inputs = {{x.raw(), x.type()}, {step.raw(), step.type()}};
    ctx.outputs = {{y.raw(), y.type()}, {mask.raw(), mask.type()}};
    kernel = (*CpuKernelRegistry::instance().find("Dropout"))(ctx);
  }
  Tensor run(int64_t at_step) {
    step.as<int64_t>()[0] = at_step;
    kernel->run(ctx);
    return mask;
  }
};

TEST(DropoutRng, MaskIsAFunctionOfSeedNodeStepAndMicroStep) {
  DropoutRunner a("drop", 7);
  Tensor s1m0 = a.run(1), s1m1 = a.run(1), s2m0 = a.run(2), s3m0 = a.run(3);
  EXPECT_NE(s1m0, s1m1) << "micro-steps of one step draw different masks";
  EXPECT_NE(s1m0, s2m0);
  DropoutRunner resumed("drop", 7);  // a fresh kernel, as after --resume
  EXPECT_EQ(resumed.run(3), s3m0);
  EXPECT_EQ(resumed.run(2), s2m0) << "no hidden state: step 2 again gives step 2's mask";
  DropoutRunner again("drop", 7);
  EXPECT_EQ(again.run(1), s1m0);
  EXPECT_EQ(again.run(1), s1m1);
  EXPECT_NE(DropoutRunner("drop", 8).run(1), s1m0) << "the run seed changes the masks";
  EXPECT_NE(DropoutRunner("other", 7).run(1), s1m0) << "each node has its own stream";
  EXPECT_NE(DropoutRunner("drop", 7, 3).run(1), s1m0) << "the ONNX seed attribute counts";
  // The key is the documented function, so another backend can reproduce it.
  uint64_t key = dropoutKey({7, 0, nodeHash("drop"), 1, 0});
  const auto threshold = static_cast<uint64_t>(0.5 * 4294967296.0);
  for (int64_t i = 0; i < 256; ++i)
    EXPECT_EQ(s1m0.getInt(i) != 0, dropoutKeep(key, static_cast<uint64_t>(i), threshold)) << i;
}

TEST(DropoutRng, SeedDropoutGivesTrainingModeDropoutTheStep) {
  auto g = parseGraph(R"(graph g {
  input %x : f32[4]
  input %ds.step : i64[]
  %a, %ma = Dropout(%x) {ratio = 0.5, training_mode = 1} : f32[4], bool[4] @train
  %b = Dropout(%a) {ratio = 0.5} : f32[4] @infer
  %c = Dropout(%b) {ratio = 0.0, training_mode = 1} : f32[4] @off
  return %c, %ma
})");
  EXPECT_TRUE(seedDropout(*g, g->value("ds.step")));
  std::string text = printGraph(*g);
  EXPECT_TRUE(test::contains(text, "= Dropout(%x, %ds.step) {")) << text;
  EXPECT_TRUE(test::contains(text, "= Dropout(%a) {")) << text;
  EXPECT_TRUE(test::contains(text, "= Dropout(%b) {")) << text;
  EXPECT_FALSE(seedDropout(*g, g->value("ds.step"))) << "idempotent";
}

TEST(DropoutRng, TrainingPlansFeedTheStepToDropout) {
  auto model = test::writeModel(test::parseOnnxText(R"(
<ir_version: 8, opset_import: ["" : 17]>
m (float[batch, 4] x) => (float[batch, 4] y)
<float[4, 4] w = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1}>
{
  ratio = Constant<value = float {0.5}>()
  train = Constant<value = bool {1}>()
  h = MatMul(x, w)
  y, mask = Dropout(h, ratio, train)
}
)"),
                                test::scratchName("dropout_step.onnx"));
  CompileOptions o;
  o.model_path = model;
  o.micro_batch = 2;
  o.loss = "mse";
  Compilation c = compile(o);
  bool fed = false;
  for (const auto& n : c.graph->nodes())
    if (n->op() == "Dropout") fed = n->hasInput(1) && n->input(1)->name() == "ds.step";
  EXPECT_TRUE(fed);
}

}  // namespace
}  // namespace ds::cpu
