// The values an integer feed may take, read from the plan: a label read by a
// cross-entropy loss lies in [0, classes) (the class count is the size of the
// scores' class axis) unless it equals the loss's ignore_index; indices read by
// Gather lie in [0, size of the gathered axis). The trainer checks --feed
// datasets against these ranges before the first step, so a bad label is one
// line naming the feed and the sample rather than a kernel failure mid-run, and
// --data synthetic draws integer feeds from them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "ir/plan.h"
#include "ir/tensor.h"

namespace ds {

struct FeedRange {
  int64_t end = 0;                // values lie in [0, end)
  std::optional<int64_t> ignore;  // a value also allowed (ignore_index)
  std::string reader;             // "loss node 'loss' (SoftmaxCrossEntropyLoss)"
};

// The range of plan tensor `tensor` from its readers, or nullopt when no reader
// constrains it (float feeds, integer feeds only used arithmetically).
std::optional<FeedRange> feedRange(const PlanFile& plan, int tensor);

// Checks every value of `data` (samples along axis 0) against the feed's range;
// the error names `what` (e.g. "--feed label"), the sample and the value.
void checkFeedRange(const PlanFile& plan, int tensor, const Tensor& data, const std::string& what);

}  // namespace ds
