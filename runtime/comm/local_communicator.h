// The in-process transport: N ranks are N threads of one process sharing memory.
// A LocalWorld owns the shared state and hands out one Communicator per rank; ranks
// read each other's buffers directly, so a collective costs one or two copies.
//
// Every collective is two rendezvous of all ranks:
//  A. arrival: each rank publishes its call (buffers, count, dtype, root); the last
//     to arrive checks that the calls agree. Only this wait can time out or fail,
//     because only here can a peer be missing.
//  B. departure: after the copies or sums, so that no rank returns (and reuses its
//     buffers) while a peer still reads them. Between A and B ranks only copy and
//     add, which cannot block or throw, so B needs no timeout.
// A rank that fails (LocalWorld::fail, called by the launcher when a rank throws)
// wakes every waiting rank at once; they throw naming the collective and the ranks
// they were waiting for. AllReduce sums into a shared buffer chunk by chunk, each
// chunk by one rank, always in rank order: results are bit-identical run to run.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/comm/comm_util.h"
#include "runtime/comm/communicator.h"

namespace ds {

class LocalWorld {
 public:
  explicit LocalWorld(int size, double timeout_s = comm::kDefaultTimeoutSeconds);
  ~LocalWorld();
  LocalWorld(const LocalWorld&) = delete;
  LocalWorld& operator=(const LocalWorld&) = delete;

  int size() const { return size_; }
  double timeoutSeconds() const { return timeout_s_; }
  Communicator& comm(int rank);

  // `rank` failed (the launcher reports its error): ranks waiting for it, now or
  // later, throw at once. A rank that gave up in a collective stays a follower of
  // the failure that made it give up, so the root cause keeps its name.
  void fail(int rank);
  // `rank` completed its work: ranks that wait for it in a collective fail (the
  // plans disagree) instead of timing out.
  void finish(int rank);
  bool failed() const;

 private:
  friend class LocalCommunicator;
  enum class State { Running, Failed, GaveUp, Finished };
  struct Call {
    CollectiveSite site;
    int kind = 0;  // which collective (LocalCommunicator's enum)
    const void* send = nullptr;
    void* recv = nullptr;
    int64_t count = 0;
    DType dtype = DType::F32;
    int root = 0;
  };

  // Rendezvous A: publishes `call` and waits for every rank's; throws on timeout,
  // on a failed peer or when the ranks' calls disagree.
  void arrive(int rank, const Call& call, comm::Clock::time_point deadline);
  // Rendezvous B: waits until every rank is done with the shared buffers.
  void depart();
  void checkCallsLocked();  // by the last rank to arrive
  static std::string describeCall(int rank, const Call& call);
  // This rank stops waiting and throws `message`; the others learn of it.
  [[noreturn]] void giveUpLocked(int rank, const std::string& message);
  std::string brokenReasonLocked(const CollectiveSite& site) const;
  std::vector<int> missingLocked(bool only_stopped) const;

  const int size_;
  const double timeout_s_;
  std::vector<std::unique_ptr<Communicator>> comms_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<State> state_;
  std::string first_give_up_;  // why the first rank gave up, with whom it missed
  std::vector<Call> calls_;    // published at rendezvous A
  std::vector<char> arrived_;
  int num_arrived_ = 0;
  uint64_t arrival_round_ = 0;
  std::string call_error_;  // the calls of the last round disagree
  int num_departed_ = 0;
  uint64_t departure_round_ = 0;
  std::vector<uint8_t> scratch_;  // AllReduce's sums, sized by the last arrival
};

}  // namespace ds
