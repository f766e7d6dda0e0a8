// How the CPU backend executes a plan beyond the plan's letter: the channels-last
// layout choice (kernels/cpu/layout.h) and epilogue fusion (kernels/cpu/fusion.h).
// For each, which tensors or steps it picks, and that a plan computes the same
// results with it as without.
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>

#include "frontend/compile.h"
#include "kernels/cpu/fusion.h"
#include "kernels/cpu/layout.h"
#include "models/models.h"
#include "runtime/cpu_executor.h"
#include "runtime/npy.h"
#include "runtime/trainer.h"
#include "tests/test_util.h"
#include "tests/training_fixtures.h"

namespace ds {
namespace {

using cpu::KernelContext;
using cpu::PlannedStep;
using cpu::TensorView;

// Synthetic steps over plan tensors 0..n-1 of the given types; views need only a
// non-null address, since the choice never reads data.
class StepList {
 public:
  explicit StepList(std::vector<TensorType> types) : types_(std::move(types)) {}

  void add(const std::string& op, std::vector<int> inputs, std::vector<int> outputs,
           AttributeMap attrs = {}) {
    auto ctx = std::make_unique<KernelContext>();
    ctx->op = op;
    ctx->attrs = std::move(attrs);
    for (int t : inputs) ctx->inputs.push_back(view(t));
    for (int t : outputs) ctx->outputs.push_back(view(t));
    steps_.push_back({ctx.get(), inputs, outputs});
    contexts_.push_back(std::move(ctx));
  }

  std::vector<bool> choose(const std::vector<bool>& may_reorder) const {
    return cpu::chooseChannelsLast(steps_, may_reorder);
  }

 private:
  TensorView view(int t) { return TensorView{&dummy_, types_[static_cast<size_t>(t)]}; }

  std::vector<TensorType> types_;
  std::vector<std::unique_ptr<KernelContext>> contexts_;
  std::vector<PlannedStep> steps_;
  float dummy_ = 0;
};

TEST(CpuLayout, ConvBlocksStayChannelsLastBetweenPlainEnds) {
  const TensorType act{DType::F32, {2, 8, 6, 6}}, weight{DType::F32, {8, 8, 3, 3}},
      ch{DType::F32, {8}}, pooled{DType::F32, {2, 8, 1, 1}};
  // 0 input (a feed), 1 w (persistent), 2 conv, 3-6 bn params, 7 bn, 8 relu, 9 conv,
  // 10 add, 11 pooled, 12 conv feeding 13, a relu read by an op without a rule,
  // 14 the plan output.
  StepList steps({act, weight, act, ch, ch, ch, ch, act, act, act, act, pooled, act, act, act});
  steps.add("Conv", {0, 1}, {2});
  steps.add("BatchNormalization", {2, 3, 4, 5, 6}, {7});
  steps.add("Relu", {7}, {8});
  steps.add("Conv", {8, 1}, {9});
  steps.add("Add", {9, 8}, {10});
  steps.add("GlobalAveragePool", {10}, {11});
  steps.add("Conv", {10, 1}, {12});
  steps.add("Relu", {12}, {13});
  steps.add("Transpose", {13}, {14});  // no rule: 13, and 12 with it, stay plain
  std::vector<bool> may_reorder(15, true);
  may_reorder[0] = may_reorder[1] = may_reorder[14] = false;
  std::vector<bool> expected(15, false);
  for (int t : {2, 7, 8, 9, 10}) expected[static_cast<size_t>(t)] = true;
  EXPECT_EQ(steps.choose(may_reorder), expected);
}

TEST(CpuLayout, MixedGroupsAndBroadcastsStayPlain) {
  const TensorType act{DType::F32, {2, 4, 5, 5}}, weight{DType::F32, {4, 4, 1, 1}},
      bias{DType::F32, {1, 4, 1, 1}}, mask{DType::Bool, {2, 4, 5, 5}};
  // 0 feed, 1 weight, 2 conv, 3 bias, 4 biased, 5 conv, 6 conv, 7 its Equal mask.
  StepList steps({act, weight, act, bias, act, act, act, mask});
  steps.add("Conv", {0, 1}, {2});
  steps.add("Add", {2, 3}, {4});  // broadcasts a per-channel bias: plain only
  steps.add("Conv", {4, 1}, {5});
  steps.add("Conv", {5, 1}, {6});
  steps.add("Equal", {6, 6}, {7});  // a bool result cannot share 6's layout
  std::vector<bool> may_reorder(8, true);
  may_reorder[0] = may_reorder[1] = false;
  std::vector<bool> expected(8, false);
  expected[5] = true;  // between two convolutions only
  EXPECT_EQ(steps.choose(may_reorder), expected);
}

Tensor seededInput(TensorType type, uint64_t seed) {
  Tensor t(type);
  uint64_t x = seed;
  for (int64_t i = 0; i < t.numel(); ++i) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    t.setDouble(i, static_cast<double>(x >> 40) / static_cast<double>(1 << 24) - 0.5);
  }
  return t;
}

// Runs `plan` on `feed` with channels-last and fusion on or off (and memory
// poisoning on); returns output 0 and how many steps were fused.
std::pair<Tensor, size_t> runForward(const PlanFile& plan, const std::string& feed,
                                     const Tensor& value, bool channels_last, bool fuse) {
  CpuExecutor exec(plan,
                   {.poison_freed = true, .channels_last = channels_last, .fuse_epilogues = fuse});
  exec.setFeed(feed, value);
  exec.run();
  return {exec.output(0), exec.fusedSteps()};
}

// max |a - b| / max |a| over two outputs (b must be finite): both are f32
// computations of the same values that differ in rounding only (summation order,
// oneDNN's GELU against ours), so the difference is small next to the outputs' scale.
double worstDifference(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.type(), b.type());
  double diff = 0, scale = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    EXPECT_TRUE(std::isfinite(b.getDouble(i))) << i;
    diff = std::max(diff, std::abs(a.getDouble(i) - b.getDouble(i)));
    scale = std::max(scale, std::abs(a.getDouble(i)));
  }
  return diff / scale;
}

// The same logits with activations channels-last as with all of them plain, for a
// BasicBlock and a Bottleneck ResNet (strided 1x1 downsampling, max pooling).
TEST(CpuLayout, ResNetForwardMatchesThePlainLayout) {
  for (int depth : {18, 50}) {
    ResNetOptions options;
    options.depth = depth;
    options.image = 32;
    PlanFile plan = test::compiledPlan(buildResNet(options), "layout_r" + std::to_string(depth), 2);
    Tensor input = seededInput({DType::F32, {2, 3, 32, 32}}, 11);
    Tensor plain = runForward(plan, "input", input, false, false).first;
    Tensor last = runForward(plan, "input", input, true, false).first;
    // Only summation orders differ (BatchNorm statistics by rows instead of planes).
    EXPECT_LT(worstDifference(plain, last), 1e-5) << "resnet" << depth;
  }
}

// ---- epilogue fusion ----

// Synthetic steps for fuseEpilogues over tensors at distinct addresses of one
// buffer (the fusion compares addresses), or at chosen ones.
class FusionCase {
 public:
  explicit FusionCase(std::vector<TensorType> types) : types_(std::move(types)) {
    size_t offset = 0;
    for (const TensorType& t : types_) {
      offsets_.push_back(offset);
      offset += t.bytes() + 64;
    }
    memory_.resize(offset);
  }
  void alias(int t, int same_as) { offsets_[t] = offsets_[same_as]; }

  void add(const std::string& op, std::vector<int> inputs, std::vector<int> outputs, int phase = 0,
           int lane = 0, bool waits = false) {
    auto ctx = std::make_unique<KernelContext>();
    ctx->op = op;
    if (op == "Gelu") ctx->attrs["approximate"] = std::string("none");
    for (int t : inputs) ctx->inputs.push_back(view(t));
    for (int t : outputs) ctx->outputs.push_back(view(t));
    PlannedStep step{ctx.get(), inputs, outputs, phase};
    step.lane = lane;
    step.waits = waits;
    steps_.push_back(step);
    contexts_.push_back(std::move(ctx));
  }

  // Fuses with every tensor but `kept` skippable; returns which steps were absorbed.
  std::vector<bool> fuse(std::vector<int> kept = {}) {
    std::vector<bool> may_skip(types_.size(), true);
    for (int t : kept) may_skip[static_cast<size_t>(t)] = false;
    cpu::fuseEpilogues(steps_, may_skip);
    std::vector<bool> absorbed;
    for (const PlannedStep& s : steps_) absorbed.push_back(s.absorbed);
    return absorbed;
  }
  const KernelContext& ctx(size_t step) const { return *contexts_[step]; }
  void* address(int t) { return memory_.data() + offsets_[static_cast<size_t>(t)]; }

 private:
  TensorView view(int t) { return TensorView{address(t), types_[static_cast<size_t>(t)]}; }

  std::vector<TensorType> types_;
  std::vector<size_t> offsets_;
  std::vector<uint8_t> memory_;
  std::vector<std::unique_ptr<KernelContext>> contexts_;
  std::vector<PlannedStep> steps_;
};

const TensorType kX{DType::F32, {4, 8}}, kW{DType::F32, {8, 6}}, kY{DType::F32, {4, 6}},
    kBias{DType::F32, {6}}, kColumn{DType::F32, {4, 1}};

TEST(CpuFusion, BiasAddAndActivationJoinTheMatMul) {
  // 0 x, 1 w, 2 y, 3 bias, 4 biased, 5 activated, 6 read afterwards.
  FusionCase c({kX, kW, kY, kBias, kY, kY, kY});
  c.add("MatMul", {0, 1}, {2});
  c.add("Add", {3, 2}, {4});  // the bias on either side
  c.add("Relu", {4}, {5});
  c.add("Gelu", {5}, {6});  // oneDNN's erf is not ours: not fused
  EXPECT_EQ(c.fuse({6}), (std::vector<bool>{false, true, true, false}));
  const KernelContext& mm = c.ctx(0);
  ASSERT_EQ(mm.epilogue.size(), 2u);
  EXPECT_EQ(mm.epilogue[0].op, "Add");
  EXPECT_EQ(mm.epilogue[0].operand.data, c.address(3));
  EXPECT_EQ(mm.epilogue[1].op, "Relu");
  EXPECT_FALSE(mm.epilogue[1].operand.present());
  EXPECT_EQ(mm.outputs[0].data, c.address(5));  // writes the last absorbed step's output
}

// A residual Add written in place over its first input, and the Relu in place
// over the sum: the fused kernel writes where the Add already did.
TEST(CpuFusion, InPlaceAddTakesTheReluInPlace) {
  FusionCase c({kY, kY, kY, kY});
  c.alias(2, 0);
  c.alias(3, 0);
  c.add("Add", {0, 1}, {2});
  c.add("Relu", {2}, {3});
  EXPECT_EQ(c.fuse(), (std::vector<bool>{false, true}));
  EXPECT_EQ(c.ctx(0).outputs[0].data, c.address(0));
}

TEST(CpuFusion, StopsWhereFusingWouldChangeWhatIsComputedOrKept) {
  {  // the intermediate has a second reader
    FusionCase c({kX, kW, kY, kY, kY});
    c.add("MatMul", {0, 1}, {2});
    c.add("Relu", {2}, {3});
    c.add("Add", {2, 3}, {4});
    EXPECT_EQ(c.fuse(), (std::vector<bool>{false, false, false}));
  }
  {  // the intermediate is kept (a plan output)
    FusionCase c({kX, kW, kY, kY});
    c.add("MatMul", {0, 1}, {2});
    c.add("Relu", {2}, {3});
    EXPECT_EQ(c.fuse({2}), (std::vector<bool>{false, false}));
  }
  {  // a per-row operand is no bias along the last dim; x + x reads it twice
    FusionCase c({kX, kW, kY, kColumn, kY, kY, kY});
    c.add("MatMul", {0, 1}, {2});
    c.add("Add", {2, 3}, {4});
    c.add("MatMul", {0, 1}, {5});
    c.add("Add", {5, 5}, {6});
    EXPECT_EQ(c.fuse(), (std::vector<bool>{false, false, false, false}));
  }
  {  // the next step's output reuses the memory of the product's input
    FusionCase c({kY, {DType::F32, {6, 6}}, kY, kY});
    c.alias(3, 0);
    c.add("MatMul", {0, 1}, {2});
    c.add("Relu", {2}, {3});
    EXPECT_EQ(c.fuse(), (std::vector<bool>{false, false}));
  }
  {  // ... or of an element-wise op's input it does not already write over
    FusionCase c({kY, kY, kY, kY});
    c.alias(3, 1);
    c.add("Add", {0, 1}, {2});
    c.add("Relu", {2}, {3});
    EXPECT_EQ(c.fuse(), (std::vector<bool>{false, false}));
  }
  {  // another stream (the CUDA executor's), or a step that waits for an event first
    FusionCase c({kX, kW, kY, kY, kX, kW, kY, kY});
    c.add("MatMul", {0, 1}, {2});
    c.add("Relu", {2}, {3}, 0, 1);
    c.add("MatMul", {4, 5}, {6});
    c.add("Relu", {6}, {7}, 0, 0, true);
    EXPECT_EQ(c.fuse(), (std::vector<bool>{false, false, false, false}));
  }
  {  // another phase (the optimizer step runs only on some runs); an op without a rule
    FusionCase c({kX, kW, kY, kY, kY, kY});
    c.add("MatMul", {0, 1}, {2});
    c.add("Relu", {2}, {3}, 1);
    c.add("Sigmoid", {3}, {4}, 1);
    c.add("Relu", {4}, {5}, 1);
    EXPECT_EQ(c.fuse(), (std::vector<bool>{false, false, false, false}));
  }
}

// GPT (bias adds into matmuls) and ResNet-18 (ReLUs into BatchNorms and residual
// adds) compute the same with fusion as without it, to the bit: the CPU backend is
// the oracle, and a fusion decision (which a recomputed activation can change:
// passes/recompute.h) must not change its results.
TEST(CpuFusion, FusedModelsMatchUnfusedExecution) {
  GptOptions gpt{.layers = 2, .d_model = 32, .heads = 2, .vocab = 50, .seq = 8};
  PlanFile gpt_plan = test::compiledPlan(buildGpt(gpt), "fusion_gpt", 2);
  Tensor tokens({DType::I64, {2, 8}});
  for (int64_t i = 0; i < tokens.numel(); ++i) tokens.setInt(i, (i * 7) % 50);
  auto [gpt_plain, none] = runForward(gpt_plan, "input_ids", tokens, true, false);
  auto [gpt_fused, fused] = runForward(gpt_plan, "input_ids", tokens, true, true);
  EXPECT_EQ(none, 0u);
  EXPECT_GE(fused, 4u * gpt.layers);  // four bias adds per block at least
  EXPECT_EQ(worstDifference(gpt_plain, gpt_fused), 0.0);

  ResNetOptions options;
  options.depth = 18;
  PlanFile plan = test::compiledPlan(buildResNet(options), "fusion_r18", 2);
  size_t relus = 0;  // Relus right after the BatchNorm or Add whose output they read
  const auto& steps = plan.plan.ranks(0).steps();
  for (int s = 1; s < steps.size(); ++s)
    relus += steps[s].op() == "Relu" &&
             (steps[s - 1].op() == "BatchNormalization" || steps[s - 1].op() == "Add") &&
             steps[s].inputs(0) == steps[s - 1].outputs(0);
  ASSERT_GT(relus, 0u);
  Tensor input = seededInput({DType::F32, {2, 3, 32, 32}}, 5);
  auto [plain, n0] = runForward(plan, "input", input, true, false);
  auto [resnet_fused, n1] = runForward(plan, "input", input, true, true);
  EXPECT_EQ(n1, relus);
  EXPECT_EQ(worstDifference(plain, resnet_fused), 0.0);
}

// Training plans: the loss and gradient norm of every step are the same with the
// CPU backend's layout choice and fusion as without them (ResNet-18 at 32x32 and an
// MLP with AdamW in fp32, the BatchNorm CNN in fp16).
TEST(CpuFusion, TrainingMatchesPlainExecution) {
  struct Case {
    std::string name, model, flags;
    bool fuses;  // whether the training plan has a step to fuse
  };
  const std::string r18 = test::scratch("fusion_train_r18.onnx");
  auto made = test::tool("dsmodel", "resnet18 --classes 10 --image 32 -o " + r18);
  ASSERT_EQ(made.exit_code, 0) << made.output;
  const std::string cnn = test::writeModel(test::parseOnnxText(test::bnCnnText()),
                                           test::scratchName("fusion_train_cnn.onnx"));
  const std::string mlp = test::writeModel(test::parseOnnxText(test::mlpText(false)),
                                           test::scratchName("fusion_train_mlp.onnx"));
  const std::string adamw = R"("train_micro_batch_size_per_gpu": 4,
      "optimizer": {"type": "AdamW", "params": {"lr": 0.001}})";
  const std::string fp32 = test::scratch("fusion_fp32.json"),
                    fp16 = test::scratch("fusion_fp16.json");
  test::writeFile(fp32, "{" + adamw + "}");
  test::writeFile(fp16, "{" + adamw + R"(, "fp16": {"enabled": true}})");
  for (const Case& c : std::vector<Case>{
           {"r18", r18, "--config " + fp32, true},
           // 16-bit steps (promoted to f32 per step) never fuse.
           {"cnn_fp16", cnn, "--config " + fp16, false},
           {"mlp", mlp, "--config " + fp32, true},  // the bias add joins the product
       }) {
    SCOPED_TRACE(c.name);
    const std::string plan_path = test::scratch("fusion_train_" + c.name + ".plan");
    auto r =
        test::tool("dscompile", c.model + " --loss cross_entropy " + c.flags + " -o " + plan_path);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    PlanFile plan = readPlanFile(plan_path);
    TrainOptions options;
    options.steps = 3;
    std::istringstream flags(test::writeFeedData(plan_path, "fusion_" + c.name, 12, 0.37));
    for (std::string flag, feed; flags >> flag >> feed;) {
      auto eq = feed.find('=');
      options.datasets[feed.substr(0, eq)] = readNpy(feed.substr(eq + 1));
    }
    CpuExecutor plain(plan, {.channels_last = false, .fuse_epilogues = false});
    CpuExecutor chosen(plan);
    std::vector<StepMetrics> a = train(plain, plan, options), b = train(chosen, plan, options);
    ASSERT_EQ(a.size(), 3u);
    ASSERT_EQ(b.size(), 3u);
    EXPECT_EQ(chosen.fusedSteps() > 0, c.fuses) << chosen.fusedSteps();
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_NEAR(a[i].loss, b[i].loss, 1e-6 * std::abs(a[i].loss)) << "step " << i + 1;
      EXPECT_NEAR(a[i].grad_norm, b[i].grad_norm, 1e-5 * a[i].grad_norm) << "step " << i + 1;
    }
  }
}

}  // namespace
}  // namespace ds
