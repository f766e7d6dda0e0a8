#include "runtime/comm/comm_util.h"

#include <algorithm>
#include <cstring>
#include <sstream>

#include "ir/error.h"
#include "ir/tensor.h"

namespace ds::comm {
namespace {

// Accumulates in Acc and stores Store: the same loop for every dtype, element outer
// and rank inner, so the order of additions is always rank order.
template <typename Store, typename Acc, typename Load, typename Save>
void sumLoop(const void* const* srcs, int n, void* dst, int64_t count, Load load, Save save) {
  auto* out = static_cast<Store*>(dst);
  for (int64_t i = 0; i < count; ++i) {
    Acc acc = load(static_cast<const Store*>(srcs[0])[i]);
    for (int r = 1; r < n; ++r) acc = acc + load(static_cast<const Store*>(srcs[r])[i]);
    out[i] = save(acc);
  }
}

template <typename T>
void sumPlain(const void* const* srcs, int n, void* dst, int64_t count) {
  sumLoop<T, T>(
      srcs, n, dst, count, [](T v) { return v; }, [](T v) { return v; });
}

// Signed integers add as unsigned so that overflow wraps instead of being undefined.
template <typename T, typename U>
void sumWrapping(const void* const* srcs, int n, void* dst, int64_t count) {
  sumLoop<T, U>(
      srcs, n, dst, count, [](T v) { return static_cast<U>(v); },
      [](U v) { return static_cast<T>(v); });
}

}  // namespace

void sumInRankOrder(const void* const* srcs, int n, void* dst, int64_t count, DType dtype) {
  if (n == 1) {
    if (srcs[0] != dst) std::memmove(dst, srcs[0], static_cast<size_t>(count) * dtypeSize(dtype));
    return;
  }
  switch (dtype) {
    case DType::F32:
      return sumPlain<float>(srcs, n, dst, count);
    case DType::F64:
      return sumPlain<double>(srcs, n, dst, count);
    case DType::F16:
      return sumLoop<uint16_t, float>(srcs, n, dst, count, halfToFloat, floatToHalf);
    case DType::BF16:
      return sumLoop<uint16_t, float>(srcs, n, dst, count, bf16ToFloat, floatToBf16);
    case DType::I64:
      return sumWrapping<int64_t, uint64_t>(srcs, n, dst, count);
    case DType::I32:
      return sumWrapping<int32_t, uint32_t>(srcs, n, dst, count);
    case DType::I8:
      return sumWrapping<int8_t, uint8_t>(srcs, n, dst, count);
    case DType::U8:
      return sumWrapping<uint8_t, uint8_t>(srcs, n, dst, count);
    case DType::Bool:
      break;
  }
  throw makeError("cannot sum ", dtypeName(dtype), " tensors");
}

void checkSummable(DType dtype, const CollectiveSite& site) {
  DS_CHECK(dtype != DType::Bool, site.describe(), ": cannot sum ", dtypeName(dtype), " tensors");
}

Chunk chunkOf(int64_t count, int n, int r) {
  int64_t base = count / n, extra = count % n;
  return {r * base + std::min<int64_t>(r, extra), base + (r < extra ? 1 : 0)};
}

std::string ranksString(const std::vector<int>& ranks) {
  if (ranks.empty()) return "no rank";
  std::ostringstream os;
  os << (ranks.size() == 1 ? "rank " : "ranks ");
  for (size_t i = 0; i < ranks.size(); ++i) os << (i ? ", " : "") << ranks[i];
  return os.str();
}

std::string timeoutWhat(double timeout_s) {
  std::ostringstream os;
  os << "timed out after " << timeout_s << " s (--comm-timeout)";
  return os.str();
}

std::string failureMessage(const CollectiveSite& site, const std::string& what,
                           const std::vector<int>& missing) {
  return site.describe() + ": " + what + "; missing " + ranksString(missing);
}

Clock::time_point deadlineAfter(double seconds) {
  return Clock::now() +
         std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

}  // namespace ds::comm
