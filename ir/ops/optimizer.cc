// Optimizer step ops: one fused update per parameter, written in place of the
// parameter and its optimizer state (the graph's state updates say so). The
// learning rate and the step number are scalar feeds set by the runtime each step.
#include "ir/op_registry.h"
#include "ir/ops/ops.h"

namespace ds {
namespace {

void checkStepInputs(InferContext& ctx, size_t first_state) {
  if (!isFloat(ctx.dtype(0))) ctx.fail("parameter must be float");
  if (ctx.input(1) != ctx.input(0)) ctx.fail("gradient must have the parameter's type");
  if (ctx.rank(2) != 0 || ctx.dtype(2) != DType::F32) ctx.fail("lr must be an f32 scalar");
  if (ctx.rank(3) != 0 || ctx.dtype(3) != DType::I64) ctx.fail("step must be an i64 scalar");
  for (size_t i = first_state; i < ctx.numInputs(); ++i)
    if (ctx.input(i) != ctx.input(0))
      ctx.fail("optimizer state ", i, " must have the parameter's type");
}

// SgdStep(param, grad, lr, step, [velocity]) -> param', [velocity'] — torch.optim.SGD.
OpSchema sgdStep() {
  OpSchema s;
  s.name = "SgdStep";
  s.min_inputs = 4;
  s.max_inputs = 5;
  s.max_outputs = 2;
  s.attrs = {{"momentum", AttrKind::Float, 0.0},
             {"dampening", AttrKind::Float, 0.0},
             {"nesterov", AttrKind::Int, int64_t{0}},
             {"weight_decay", AttrKind::Float, 0.0}};
  s.infer = [](InferContext& ctx) {
    checkStepInputs(ctx, 4);
    if (ctx.numOutputs() != ctx.numInputs() - 3) ctx.fail("one output per updated tensor");
    for (size_t i = 0; i < ctx.numOutputs(); ++i) ctx.setOutput(i, ctx.input(0));
  };
  return s;
}

// AdamStep(param, grad, lr, step, m, v) -> param', m', v' — DeepSpeed's FusedAdam:
// decoupled weight decay when adam_w_mode, else L2 added to the gradient.
OpSchema adamStep() {
  OpSchema s;
  s.name = "AdamStep";
  s.min_inputs = s.max_inputs = 6;
  s.min_outputs = s.max_outputs = 3;
  s.attrs = {{"beta1", AttrKind::Float, 0.9},
             {"beta2", AttrKind::Float, 0.999},
             {"eps", AttrKind::Float, 1e-8},
             {"weight_decay", AttrKind::Float, 0.0},
             {"adam_w_mode", AttrKind::Int, int64_t{1}},
             {"bias_correction", AttrKind::Int, int64_t{1}}};
  s.infer = [](InferContext& ctx) {
    checkStepInputs(ctx, 4);
    for (size_t i = 0; i < 3; ++i) ctx.setOutput(i, ctx.input(0));
  };
  return s;
}

}  // namespace

void registerOptimizerOps(OpRegistry& r) {
  r.add(sgdStep());
  r.add(adamStep());
}

}  // namespace ds
