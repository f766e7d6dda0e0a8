#include "runtime/feed_ranges.h"

#include <algorithm>
#include <climits>
#include <vector>

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
    const int64_t classes = intAttr(step, "classes", 0);        // of padded scores
    return FeedRange{classes > 0 ? classes : scores.shape.at(1),
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

// Steps whose output holds their input's values, rearranged or not: a range on the
// output (a loss reading labels flattened to rows) is the input's.
bool keepsValues(const std::string& op) {
  return op == "Reshape" || op == "Flatten" || op == "Squeeze" || op == "Unsqueeze" ||
         op == "Identity" || op == "Copy";
}

}  // namespace

std::optional<FeedRange> feedRange(const PlanFile& plan, int tensor) {
  std::vector<int> values = {tensor};  // the feed and the reshapes of it
  for (size_t next = 0; next < values.size(); ++next)
    for (const planpb::RankPlan& rank : plan.plan.ranks())
      for (const planpb::Step& step : rank.steps())
        for (int slot = 0; slot < step.inputs_size(); ++slot) {
          if (step.inputs(slot) != values[next]) continue;
          if (auto range = rangeFromStep(plan, step, slot)) return range;
          if (slot == 0 && keepsValues(step.op()) && step.outputs_size() == 1 &&
              std::find(values.begin(), values.end(), step.outputs(0)) == values.end())
            values.push_back(step.outputs(0));
        }
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
