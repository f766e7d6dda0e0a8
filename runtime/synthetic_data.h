// --data synthetic: random samples of the plan's feed shapes, for smoke tests and
// throughput runs without a dataset. Float feeds are standard normal; integer
// feeds are uniform over the range their readers accept (labels in [0, classes),
// the class count being the size of the loss scores' class axis; Gather indices
// in [0, table size)), so every step is a valid step. Sample k of feed F is a pure
// function of (seed, F, k) — counter-based like kernels/dropout_rng.h — so a
// resumed run sees the same data as an uninterrupted one.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "ir/plan.h"
#include "ir/tensor.h"

namespace ds {

class SyntheticData {
 public:
  // Every feed of `plan` except the trainer's own (named ds.*: learning rate, step); throws
  // naming an integer feed whose range the plan does not determine.
  SyntheticData(const PlanFile& plan, uint64_t seed);

  bool hasFeed(const std::string& name) const { return feeds_.count(name) != 0; }
  // Samples [first, first + count) of feed `name`: its plan shape with axis 0 = count.
  Tensor batch(const std::string& name, int64_t first, int64_t count) const;

 private:
  struct Feed {
    TensorType type;      // one micro-batch
    int64_t classes = 0;  // integer feeds: values in [0, classes)
  };
  std::map<std::string, Feed> feeds_;
  uint64_t seed_;
};

}  // namespace ds
