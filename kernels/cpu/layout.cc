// Layout choice (layout.h): union-find over the tensors that share a group in some
// step's rule; a set is channels-last unless one member is pinned plain (not an
// arena intermediate, or touched by a step that cannot take it channels-last).
#include "kernels/cpu/layout.h"

#include <numeric>

namespace ds::cpu {

namespace {

class DisjointSets {
 public:
  explicit DisjointSets(size_t n) : parent_(n) { std::iota(parent_.begin(), parent_.end(), 0); }
  size_t find(size_t x) {
    while (parent_[x] != x) x = parent_[x] = parent_[parent_[x]];
    return x;
  }
  void unite(size_t a, size_t b) { parent_[find(a)] = find(b); }

 private:
  std::vector<size_t> parent_;
};

const TensorView& view(const KernelContext& ctx, Operand o) {
  return o.output ? ctx.outputs.at(o.index) : ctx.inputs.at(o.index);
}

int tensorOf(const PlannedStep& step, Operand o) {
  const std::vector<int>& list = o.output ? step.outputs : step.inputs;
  return o.index < list.size() ? list[o.index] : -1;
}

}  // namespace

bool hasSpatialLayout(const TensorView& v) {
  return v.present() && v.rank() == 4 && v.shape()[2] * v.shape()[3] > 1;
}

bool layoutMatters(const TensorView& v) {
  return hasSpatialLayout(v) && v.dtype() == DType::F32;
}

std::vector<bool> chooseChannelsLast(const std::vector<PlannedStep>& steps,
                                     const std::vector<bool>& intermediate,
                                     const LayoutPolicy& policy) {
  std::function<bool(const TensorView&)> matters = layoutMatters;
  if (policy.matters) matters = policy.matters;
  const auto ruleOf = [&](const std::string& op) {
    return policy.rule_of ? policy.rule_of(op) : CpuKernelRegistry::instance().channelsLastRule(op);
  };
  const size_t n = intermediate.size();
  DisjointSets sets(n);
  std::vector<bool> pinned(n, false);
  for (size_t t = 0; t < n; ++t) pinned[t] = !intermediate[t];
  for (const PlannedStep& step : steps) {
    const KernelContext& ctx = *step.ctx;
    const ChannelsLastRule* rule = ruleOf(ctx.op);
    OperandGroups groups = rule && !step.promoted ? (*rule)(ctx) : OperandGroups{};
    std::vector<bool> in_group_in(ctx.inputs.size()), in_group_out(ctx.outputs.size());
    for (const std::vector<Operand>& group : groups) {
      // A group mixing other tensors (a bool result, a 2-D one) stays plain.
      bool uniform = true;
      for (Operand o : group) uniform &= !view(ctx, o).present() || matters(view(ctx, o));
      if (!uniform) continue;
      int first = -1;
      for (Operand o : group) {
        int t = tensorOf(step, o);
        if (t < 0 || !view(ctx, o).present()) continue;
        (o.output ? in_group_out : in_group_in)[o.index] = true;
        if (first >= 0) sets.unite(static_cast<size_t>(first), static_cast<size_t>(t));
        first = t;
      }
    }
    auto pinUngrouped = [&](const std::vector<int>& tensors, const std::vector<TensorView>& views,
                            const std::vector<bool>& grouped) {
      for (size_t i = 0; i < tensors.size(); ++i)
        if (tensors[i] >= 0 && !grouped[i] && matters(views[i]))
          pinned[static_cast<size_t>(tensors[i])] = true;
    };
    pinUngrouped(step.inputs, ctx.inputs, in_group_in);
    pinUngrouped(step.outputs, ctx.outputs, in_group_out);
  }
  std::vector<bool> root_pinned(n, false);
  for (size_t t = 0; t < n; ++t)
    if (pinned[t]) root_pinned[sets.find(t)] = true;
  std::vector<bool> chosen(n, false);
  for (const PlannedStep& step : steps)
    for (const auto* list : {&step.inputs, &step.outputs})
      for (size_t i = 0; i < list->size(); ++i) {
        int t = (*list)[i];
        const TensorView& v = list == &step.inputs ? step.ctx->inputs[i] : step.ctx->outputs[i];
        if (t >= 0 && matters(v) && !root_pinned[sets.find(static_cast<size_t>(t))])
          chosen[static_cast<size_t>(t)] = true;
      }
  return chosen;
}

void channelsLastToPlain(const float* src, float* dst, const Shape& nchw) {
  const int64_t n = nchw[0], c = nchw[1], hw = nchw[2] * nchw[3];
  for (int64_t b = 0; b < n; ++b)
    for (int64_t p = 0; p < hw; ++p)
      for (int64_t ch = 0; ch < c; ++ch) dst[(b * c + ch) * hw + p] = src[(b * hw + p) * c + ch];
}

OperandGroups dataInOutSeparately(const KernelContext& ctx) {
  if (ctx.input(0).rank() != 4) return {};
  return {{{false, 0}}, {{true, 0}}};
}

OperandGroups dataInOutTogether(const KernelContext& ctx) {
  if (ctx.input(0).rank() != 4) return {};
  return {{{false, 0}, {true, 0}}};
}

OperandGroups allOperandsWhenSameShape(const KernelContext& ctx) {
  std::vector<Operand> group;
  for (size_t i = 0; i < ctx.inputs.size(); ++i) {
    if (!ctx.hasInput(i) || ctx.input(i).shape() != ctx.output(0).shape()) return {};
    group.push_back({false, i});
  }
  for (size_t i = 0; i < ctx.outputs.size(); ++i) {
    if (ctx.output(i).shape() != ctx.output(0).shape()) return {};
    group.push_back({true, i});
  }
  return {group};
}

}  // namespace ds::cpu
