// A test hook for the fault handling: `dsrun --fault RANK:K:MODE` makes rank RANK
// fail as it enters its K-th collective (counting from 0), so tests can check that
// every other rank reports the collective and the missing rank within the timeout
// and that the launcher exits non-zero. Modes: throw (a ds::Error, as a failing
// kernel would), kill (SIGKILL: the process dies, as under an OOM killer), hang
// (sleeps forever: only the timeout can notice).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "runtime/comm/communicator.h"

namespace ds {

struct FaultSpec {
  enum class Mode { Throw, Kill, Hang };
  int rank = -1;  // -1: no fault
  int64_t collective = 0;
  Mode mode = Mode::Throw;

  bool active() const { return rank >= 0; }
};

// Parses RANK:K:MODE; throws a ds::Error naming --fault.
FaultSpec parseFaultSpec(const std::string& text);

// `inner` with the fault injected when this rank is the faulty one; otherwise a
// plain forwarder. `inner` must outlive the result.
std::unique_ptr<Communicator> withFault(Communicator& inner, const FaultSpec& fault);

}  // namespace ds
