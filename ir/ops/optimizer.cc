// Optimizer step ops (SGD, Adam, Lion, Adagrad, LAMB): one fused update per
// parameter, written in place of the parameter and its optimizer state (the graph's
// state updates say so). The learning rate and the step number are scalar feeds set
// by the runtime each step. Three optional scalar inputs follow the states: a
// gradient scale (the clipping coefficient ClipCoef computes, times 1 / loss scale
// under fp16), the momentum (SGD) or beta1 (Adam, Lion, LAMB) of this step, fed when
// the schedule cycles momentum (OneCycle; absent, the attribute holds), and an
// overflow check: when that value (the global gradient norm under dynamic fp16 loss
// scaling) is inf or NaN, the step changes nothing — DeepSpeed skips the step on
// every rank. ClipCoef and ZerosLike serve gradient clipping and gradient
// accumulation.
#include <algorithm>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ir/op_registry.h"
#include "ir/ops/ops.h"
#include "ir/optimizer_ops.h"

namespace ds {
namespace {

void checkScalar(InferContext& ctx, size_t i, const char* what) {
  if (ctx.hasInput(i) && (ctx.rank(i) != 0 || ctx.dtype(i) != DType::F32))
    ctx.fail(what, " must be an f32 scalar");
}

bool isSixteenBit(DType t) {
  return t == DType::F16 || t == DType::BF16;
}

// Inputs: param, grad, lr, step, states [first_state, first_option), then the
// optional gradient scale and momentum. With `sixteen_bit_grad`, an f32 parameter
// may take a 16-bit gradient of its shape (mixed precision's, widened as read).
void checkStepInputs(InferContext& ctx, size_t first_option, bool sixteen_bit_grad = false) {
  if (!isFloat(ctx.dtype(0))) ctx.fail("parameter must be float");
  const bool widened = sixteen_bit_grad && ctx.dtype(0) == DType::F32 &&
                       isSixteenBit(ctx.dtype(1)) && ctx.shape(1) == ctx.shape(0);
  if (ctx.input(1) != ctx.input(0) && !widened) ctx.fail("gradient must have the parameter's type");
  if (ctx.rank(2) != 0 || ctx.dtype(2) != DType::F32) ctx.fail("lr must be an f32 scalar");
  if (ctx.rank(3) != 0 || ctx.dtype(3) != DType::I64) ctx.fail("step must be an i64 scalar");
  for (size_t i = 4; i < std::min(first_option, ctx.numInputs()); ++i)
    if (ctx.hasInput(i) && ctx.input(i) != ctx.input(0))
      ctx.fail("optimizer state ", i, " must have the parameter's type");
  checkScalar(ctx, first_option, "the gradient scale");
  checkScalar(ctx, first_option + 1, "the momentum");
  checkScalar(ctx, first_option + 2, "the overflow check");
}

// The optional rounded output of a mixed-precision step (its last output, output
// `index`): with `round_to` ("f16" or "bf16"), the updated f32 parameter rounded to
// it, the 16-bit parameter's next value (passes/fuse_optimizer_casts.h).
void inferRounded(InferContext& ctx, size_t index) {
  const std::string& round_to = ctx.node().s("round_to");
  if (round_to.empty()) {
    if (ctx.numOutputs() != index) ctx.fail("one output per updated tensor (no round_to)");
    return;
  }
  const std::optional<DType> t = parseDType(round_to);
  if (!t || !isSixteenBit(*t) || ctx.dtype(0) != DType::F32)
    ctx.fail("round_to must be 'f16' or 'bf16' for an f32 parameter, is '", round_to, "'");
  if (ctx.numOutputs() != index + 1) ctx.fail("round_to needs output ", index, ", the rounded one");
  ctx.setOutput(index, *t, ctx.shape(0));
}

// SgdStep(param, grad, lr, step, [velocity], [grad_scale], [momentum], [overflow_check])
//   -> param', [velocity'], [rounded] — torch.optim.SGD; mixed precision's fused form
// as AdamStep's.
OpSchema sgdStep() {
  OpSchema s;
  s.name = "SgdStep";
  s.min_inputs = 4;
  s.max_inputs = 8;
  s.max_outputs = 3;
  s.attrs = {{"momentum", AttrKind::Float, 0.0},
             {"dampening", AttrKind::Float, 0.0},
             {"nesterov", AttrKind::Int, int64_t{0}},
             {"weight_decay", AttrKind::Float, 0.0},
             {"round_to", AttrKind::String, std::string()}};
  s.infer = [](InferContext& ctx) {
    checkStepInputs(ctx, 5, /*sixteen_bit_grad=*/true);
    const size_t updated = ctx.hasInput(4) ? 2 : 1;
    if (ctx.numOutputs() < updated) ctx.fail("one output per updated tensor");
    for (size_t i = 0; i < updated; ++i) ctx.setOutput(i, ctx.input(0));
    inferRounded(ctx, updated);
  };
  return s;
}

// A step with two moments (inputs 4 and 5, outputs 1 and 2): its attributes
// (round_to added).
OpSchema twoMomentStep(const char* name, std::vector<AttrSpec> attrs) {
  OpSchema s;
  s.name = name;
  s.min_inputs = 6;
  s.max_inputs = 9;
  s.min_outputs = 3;
  s.max_outputs = 4;
  s.attrs = std::move(attrs);
  s.attrs.push_back({"round_to", AttrKind::String, std::string()});
  s.infer = [](InferContext& ctx) {
    if (!ctx.hasInput(4) || !ctx.hasInput(5)) ctx.fail("m and v are required");
    checkStepInputs(ctx, 6, /*sixteen_bit_grad=*/true);
    if (ctx.numOutputs() < 3) ctx.fail("one output per updated tensor");
    for (size_t i = 0; i < 3; ++i) ctx.setOutput(i, ctx.input(0));
    inferRounded(ctx, 3);
  };
  return s;
}

// AdamStep(param, grad, lr, step, m, v, [grad_scale], [beta1], [overflow_check])
//   -> param', m', v', [rounded] —
// DeepSpeed's FusedAdam: decoupled weight decay when adam_w_mode, else L2 added to
// the gradient. Mixed precision's fused form (passes/fuse_optimizer_casts.h): an
// f32 master may read the 16-bit gradient itself, and with `round_to` ("f16" or
// "bf16") the fourth output is param' rounded to it, the 16-bit parameter's next
// value, so neither Cast's f32 or 16-bit copy is written separately.
OpSchema adamStep() {
  return twoMomentStep("AdamStep", {{"beta1", AttrKind::Float, 0.9},
                                    {"beta2", AttrKind::Float, 0.999},
                                    {"eps", AttrKind::Float, 1e-8},
                                    {"weight_decay", AttrKind::Float, 0.0},
                                    {"adam_w_mode", AttrKind::Int, int64_t{1}},
                                    {"bias_correction", AttrKind::Int, int64_t{1}}});
}

// LambStep(param, grad, lr, step, m, v, [grad_scale], [beta1], [overflow_check])
//   -> param', m', v', [rounded] — DeepSpeed's FusedLamb on one whole parameter:
// Adam's moments, the update direction m / (√v + ε) + weight_decay · p scaled by the
// trust ratio ‖p‖ / ‖direction‖ clamped to [min_coeff, max_coeff]; the fused form
// as AdamStep's.
OpSchema lambStep() {
  return twoMomentStep("LambStep", {{"beta1", AttrKind::Float, 0.9},
                                    {"beta2", AttrKind::Float, 0.999},
                                    {"eps", AttrKind::Float, 1e-8},
                                    {"weight_decay", AttrKind::Float, 0.0},
                                    {"bias_correction", AttrKind::Int, int64_t{1}},
                                    {"eps_inside_sqrt", AttrKind::Int, int64_t{0}},
                                    {"max_coeff", AttrKind::Float, 10.0},
                                    {"min_coeff", AttrKind::Float, 0.01}});
}

// A step with one required state (input 4, output 1): its attributes (round_to
// added), and whether input 6 may feed a momentum.
OpSchema oneStateStep(const char* name, std::vector<AttrSpec> attrs, bool fed_momentum) {
  OpSchema s;
  s.name = name;
  s.min_inputs = 5;
  s.max_inputs = 8;
  s.min_outputs = 2;
  s.max_outputs = 3;
  s.attrs = std::move(attrs);
  s.attrs.push_back({"round_to", AttrKind::String, std::string()});
  s.infer = [fed_momentum](InferContext& ctx) {
    if (!fed_momentum && ctx.hasInput(6)) ctx.fail("no momentum to feed (input 6)");
    checkStepInputs(ctx, 5, /*sixteen_bit_grad=*/true);
    for (size_t i = 0; i < 2; ++i) ctx.setOutput(i, ctx.input(0));
    inferRounded(ctx, 2);
  };
  return s;
}

// LionStep(param, grad, lr, step, exp_avg, [grad_scale], [beta1], [overflow_check])
//   -> param', exp_avg', [rounded] — the paper's Lion with decoupled weight decay;
// the fed beta1 is OneCycle's cycled momentum; mixed precision's fused form as
// AdamStep's.
OpSchema lionStep() {
  return oneStateStep("LionStep",
                      {{"beta1", AttrKind::Float, 0.9},
                       {"beta2", AttrKind::Float, 0.999},
                       {"weight_decay", AttrKind::Float, 0.0}},
                      /*fed_momentum=*/true);
}

// AdagradStep(param, grad, lr, step, sum, [grad_scale], [], [overflow_check])
//   -> param', sum', [rounded] — torch.optim.Adagrad: L2 weight decay, the learning
// rate divided by 1 + (step − 1) · lr_decay, the sum starting at
// initial_accumulator_value; input 6 (a fed momentum) stays empty, Adagrad has none.
OpSchema adagradStep() {
  return oneStateStep("AdagradStep",
                      {{"eps", AttrKind::Float, 1e-10},
                       {"weight_decay", AttrKind::Float, 0.0},
                       {"lr_decay", AttrKind::Float, 0.0},
                       {"initial_accumulator_value", AttrKind::Float, 0.0}},
                      /*fed_momentum=*/false);
}

// ClipCoef(norm){max_norm} -> f32 scalar: max_norm / (norm + 1e-6) when that is
// below 1, else exactly 1 — DeepSpeed's clip_grad_norm_ (runtime/utils.py), which
// scales the gradients only when the coefficient is below 1.
OpSchema clipCoef() {
  OpSchema s;
  s.name = "ClipCoef";
  s.attrs = {{"max_norm", AttrKind::Float, std::nullopt}};
  s.infer = [](InferContext& ctx) {
    if (ctx.rank(0) != 0 || ctx.dtype(0) != DType::F32) ctx.fail("norm must be an f32 scalar");
    ctx.setOutput(0, DType::F32, {});
  };
  return s;
}

// ZerosLike(x) -> zeros of x's type: resets a gradient accumulator after the
// optimizer step has consumed it (the input orders the reset after its readers).
OpSchema zerosLike() {
  OpSchema s;
  s.name = "ZerosLike";
  s.inplace_input = 0;
  s.infer = [](InferContext& ctx) { ctx.setOutput(0, ctx.input(0)); };
  return s;
}

// Copy(x){to} -> x: moves a tensor between device and host memory for offload
// ("host": gradients down to the host optimizer, updated parameter shards down to
// host memory; "device": parameters up).
OpSchema copy() {
  OpSchema s;
  s.name = "Copy";
  s.attrs = {{"to", AttrKind::String, std::nullopt}};
  s.infer = [](InferContext& ctx) {
    const std::string& to = ctx.node().s("to");
    if (to != "host" && to != "device") ctx.fail("to must be 'host' or 'device', is '", to, "'");
    ctx.setOutput(0, ctx.input(0));
  };
  return s;
}

}  // namespace

bool isOptimizerStep(const std::string& op) {
  return op == "SgdStep" || op == "AdamStep" || op == "LionStep" || op == "AdagradStep" ||
         op == "LambStep";
}

std::vector<size_t> optimizerStateInputs(const Node& step) {
  if (step.op() == "AdamStep" || step.op() == "LambStep") return {4, 5};
  return step.hasInput(4) ? std::vector<size_t>{4} : std::vector<size_t>{};
}

void registerOptimizerOps(OpRegistry& r) {
  r.add(sgdStep());
  r.add(adamStep());
  r.add(lambStep());
  r.add(lionStep());
  r.add(adagradStep());
  r.add(clipCoef());
  r.add(zerosLike());
  r.add(copy());
}

}  // namespace ds
