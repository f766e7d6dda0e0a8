#include "kernels/cpu/fusion.h"

namespace ds::cpu {

namespace {

bool overlaps(const TensorView& a, const TensorView& b) {
  if (!a.present() || !b.present()) return false;
  auto* a0 = static_cast<const uint8_t*>(a.data);
  auto* b0 = static_cast<const uint8_t*>(b.data);
  return a0 < b0 + b.bytes() && b0 < a0 + a.bytes();
}

bool sameBytes(const TensorView& a, const TensorView& b) {
  return a.data == b.data && a.bytes() == b.bytes();
}

// Whether writing `out` while the producer runs could clobber something it reads.
// Exactly where the producer already writes in place is fine: the memory plan put
// it there because the op allows it (an element-wise Add over its first input). So
// is exactly over an earlier epilogue's operand, which the fused kernel reads at the
// index it writes (a residual Add in place over its residual, then a Relu in place:
// the Add's own output, which nothing here checks, is already there).
bool clobbersAnInput(const KernelContext& producer, const TensorView& out) {
  const TensorView& now = producer.outputs[0];
  for (const TensorView& in : producer.inputs) {
    bool in_place = sameBytes(in, now) && sameBytes(in, out);
    if (overlaps(in, out) && !in_place) return true;
  }
  for (const Epilogue& e : producer.epilogue)
    if (overlaps(e.operand, out) && !(sameBytes(e.operand, out) && sameBytes(now, out)))
      return true;
  return false;
}

// Fills `e` with what step `next` would add as an epilogue of the step producing
// tensor `current`; false when `next` does not read it exactly once as a data input.
bool asEpilogue(const PlannedStep& next, int current, Epilogue* e) {
  const KernelContext& ctx = *next.ctx;
  if (next.outputs.size() != 1 || next.inputs.empty() || next.inputs.size() > 2) return false;
  int slot = -1;
  for (size_t i = 0; i < next.inputs.size(); ++i) {
    if (next.inputs[i] != current) continue;
    if (slot >= 0) return false;  // read twice (x + x)
    slot = static_cast<int>(i);
  }
  if (slot < 0) return false;
  e->op = ctx.op;
  e->attrs = ctx.attrs;
  e->operand = next.inputs.size() == 2 ? ctx.inputs[1 - static_cast<size_t>(slot)] : TensorView{};
  e->slot = static_cast<size_t>(slot);
  return true;
}

}  // namespace

void fuseEpilogues(std::vector<PlannedStep>& steps, const std::vector<bool>& intermediate,
                   const EpilogueRuleOf& rule_of) {
  std::vector<int> readers(intermediate.size(), 0);
  for (const PlannedStep& step : steps)
    for (int t : step.inputs)
      if (t >= 0) ++readers[static_cast<size_t>(t)];
  const CpuKernelRegistry& registry = CpuKernelRegistry::instance();
  for (size_t s = 0; s < steps.size(); ++s) {
    PlannedStep& producer = steps[s];
    const EpilogueRule* rule =
        rule_of ? rule_of(producer.ctx->op) : registry.epilogueRule(producer.ctx->op);
    if (!rule || producer.promoted || producer.absorbed || producer.outputs.empty()) continue;
    KernelContext& ctx = *producer.ctx;
    for (size_t t = s + 1; t < steps.size(); ++t) {
      PlannedStep& next = steps[t];
      const int current = producer.outputs[0];
      Epilogue e;
      if (next.promoted || next.phase != producer.phase || next.lane != producer.lane ||
          next.waits || current < 0 || !intermediate[static_cast<size_t>(current)] ||
          readers[static_cast<size_t>(current)] != 1 || !asEpilogue(next, current, &e))
        break;
      const TensorView& out = next.ctx->outputs[0];
      if (out.type != ctx.outputs[0].type || out.channels_last != ctx.outputs[0].channels_last ||
          clobbersAnInput(ctx, out) || !(*rule)(ctx, e))
        break;
      ctx.epilogue.push_back(std::move(e));
      ctx.outputs[0] = out;
      producer.outputs[0] = next.outputs[0];
      next.absorbed = true;
    }
  }
}

}  // namespace ds::cpu
