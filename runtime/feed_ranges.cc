#include "runtime/feed_ranges.h"

#include <climits>

#include "ir/error.h"

namespace ds {
namespace {

int64_t intAttr(const planpb::Step& step, const std::string& name, int64_t fallback) {
  for (const auto& a : step.attrs())
    if (a.name() == name && a.value_case() == planpb::Attr::kI) return a.i();
  return fallback;
}

// The range one step imposes on its input `slot`, if any.
std::optional<FeedRange> rangeFromStep(const PlanFile& plan, const planpb::Step& step, int slot) {
  std::string reader = "node '" + step.node() + "' (" + step.op() + ")";
  if (step.op() == "SoftmaxCrossEntropyLoss" && slot == 1) {
    TensorType scores = plan.tensorType(step.inputs(0));        // [N, C, d...]
    int64_t ignore = intAttr(step, "ignore_index", INT64_MIN);  // INT64_MIN: unset
    return FeedRange{scores.shape.at(1),
                     ignore == INT64_MIN ? std::nullopt : std::optional<int64_t>(ignore), reader};
  }
  if (step.op() == "Gather" && slot == 1) {
    TensorType data = plan.tensorType(step.inputs(0));
    int64_t axis = intAttr(step, "axis", 0);
    if (axis < 0) axis += data.rank();
    return FeedRange{data.shape.at(static_cast<size_t>(axis)), std::nullopt, reader};
  }
  return std::nullopt;
}

}  // namespace

std::optional<FeedRange> feedRange(const PlanFile& plan, int tensor) {
  for (const planpb::RankPlan& rank : plan.plan.ranks())
    for (const planpb::Step& step : rank.steps())
      for (int slot = 0; slot < step.inputs_size(); ++slot)
        if (step.inputs(slot) == tensor)
          if (auto range = rangeFromStep(plan, step, slot)) return range;
  return std::nullopt;
}

void checkFeedRange(const PlanFile& plan, int tensor, const Tensor& data, const std::string& what) {
  std::optional<FeedRange> range = feedRange(plan, tensor);
  if (!range || isFloat(data.dtype()) || data.shape().empty() || data.numel() == 0) return;
  const int64_t per_sample = data.numel() / data.shape()[0];
  for (int64_t i = 0; i < data.numel(); ++i) {
    int64_t v = data.getInt(i);
    if ((v >= 0 && v < range->end) || v == range->ignore) continue;
    throw makeError(what, ": sample ", i / per_sample, " has value ", v, ", outside [0, ",
                    range->end, ") that ", range->reader, " accepts",
                    range->ignore ? " (ignore_index " + std::to_string(*range->ignore) + ")" : "");
  }
}

}  // namespace ds
