// Pieces every communicator shares: the deterministic rank-order sum, the split of
// a buffer into per-rank chunks, and the wording of collective errors, so the
// transports compute the same bits and fail with the same messages.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "ir/dtype.h"
#include "runtime/comm/communicator.h"

namespace ds::comm {

inline constexpr double kDefaultTimeoutSeconds = 300;

// dst[i] = ((srcs[0][i] + srcs[1][i]) + ...) + srcs[n-1][i]: floats in their compute
// type (f16, bf16: f32, rounded once at the end), integers wrapping. dst may be one
// of the sources exactly (each element is read before it is written). Throws for
// bool, which has no sum.
void sumInRankOrder(const void* const* srcs, int n, void* dst, int64_t count, DType dtype);

// Throws naming the collective when `dtype` cannot be summed.
void checkSummable(DType dtype, const CollectiveSite& site);

// The first element and the count of rank r's chunk when `count` elements are split
// over n ranks as evenly as possible (the first count % n chunks one longer).
struct Chunk {
  int64_t offset = 0;
  int64_t count = 0;
};
Chunk chunkOf(int64_t count, int n, int r);

// "rank 3", "ranks 1, 3", "no rank".
std::string ranksString(const std::vector<int>& ranks);

// "timed out after 2 s (--comm-timeout)".
std::string timeoutWhat(double timeout_s);
// "AllReduce 'g': WHAT; missing rank 3": the one line every give-up throws.
std::string failureMessage(const CollectiveSite& site, const std::string& what,
                           const std::vector<int>& missing);

// A deadline `seconds` from now.
using Clock = std::chrono::steady_clock;
Clock::time_point deadlineAfter(double seconds);

}  // namespace ds::comm
