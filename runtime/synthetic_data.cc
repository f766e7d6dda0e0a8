#include "runtime/synthetic_data.h"

#include <cmath>

#include "ir/error.h"
#include "kernels/dropout_rng.h"
#include "runtime/feed_ranges.h"

namespace ds {

SyntheticData::SyntheticData(const PlanFile& plan, uint64_t seed) : seed_(seed) {
  for (int index : plan.plan.feeds()) {
    const std::string& name = plan.plan.tensors(index).name();
    if (name.rfind("ds.", 0) == 0) continue;  // the trainer's own: ds.lr, ds.step, ...
    Feed feed{plan.tensorType(index), 0};
    DS_CHECK(!feed.type.shape.empty(), "--data synthetic: input '", name,
             "' is a scalar; it has no sample axis");
    if (!isFloat(feed.type.dtype)) {
      std::optional<FeedRange> range = feedRange(plan, index);
      DS_CHECK(range.has_value(), "--data synthetic: input '", name, "' (", feed.type.toString(),
               ") is not read by a loss or a Gather, so its valid values are unknown; use --feed");
      feed.classes = range->end;
    }
    feeds_[name] = feed;
  }
}

Tensor SyntheticData::batch(const std::string& name, int64_t first, int64_t count) const {
  const Feed& feed = feeds_.at(name);
  TensorType type = feed.type;
  type.shape[0] = count;
  Tensor out(type);
  const int64_t per_sample = type.numel() / count;
  const uint64_t feed_key = mixIn(seed_, nodeHash(name));
  // Every element is a pure function of (seed, feed, sample, element), so samples
  // are made in parallel: a 224x224 batch would otherwise keep a GPU waiting.
#pragma omp parallel for if (count * per_sample > 65536)
  for (int64_t s = 0; s < count; ++s) {
    const uint64_t key = mixIn(feed_key, static_cast<uint64_t>(first + s));
    for (int64_t e = 0; e < per_sample; ++e) {
      uint64_t r = mixIn(key, static_cast<uint64_t>(e));
      int64_t i = s * per_sample + e;
      if (feed.classes > 0) {
        out.setInt(i, static_cast<int64_t>(r % static_cast<uint64_t>(feed.classes)));
        continue;
      }
      // Box-Muller from two 32-bit uniforms in (0, 1].
      double u1 = (static_cast<double>(r >> 32) + 1.0) / 4294967296.0;
      double u2 = (static_cast<double>(r & 0xffffffffull) + 1.0) / 4294967296.0;
      out.setDouble(i, std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
    }
  }
  return out;
}

}  // namespace ds
