// The local device transport: N ranks are N threads of one process sharing ONE
// GPU, each with its own streams, which NCCL refuses (one rank per device). It
// lets multi-rank plans (data parallelism, ZeRO) run on a single GPU, and checks
// the CUDA executor's multi-rank paths against the CPU oracle bit for bit: sums
// are element-wise in rank order 0..N-1 (f16 and bf16 in f32, rounded once),
// exactly as LocalCommunicator's.
//
// The ranks meet on the host, over each rank's host Communicator (normally a
// LocalCommunicator of the same threads), which brings its timeouts, failed-peer
// handling and error wording. The GPU work is ordered with CUDA events, since
// cudaEvent_t values and device pointers are valid in every thread of a process.
// Each rank owns three events, `ready`, `reduced` and `done`; a collective on
// rank r, stream s, is:
//  1. record ready_r on s (after the work s already holds: the inputs);
//  2. rendezvous: host allGather of every rank's call {kind, send, recv, count,
//     dtype, root}; every rank checks that the calls agree (the same verdict on
//     every rank, so all throw or none does);
//  3. s waits for ready_q of every peer q: the peers' inputs are written;
//  4. enqueue this rank's part, which reads peers' buffers and writes only its own;
//  5. record done_r on s; host barrier; s waits for done_q of every peer q, so
//     work enqueued on s after the call, which may overwrite this rank's buffers,
//     runs after every peer's part has stopped reading them.
// AllReduce runs a second part between 4 and 5, behind its own event pair:
// record reduced_r, host barrier, wait for every reduced_q.
//
// Why the host order is safe with one event per role, re-recorded every call:
// cudaStreamWaitEvent waits for the record that is most recent when it is called.
// A peer waits for r's event right after the rendezvous that follows r's record,
// before the peer arrives at its own next rendezvous; r records that event again
// only after passing one more rendezvous (ready and reduced: the call's last;
// done: the next call's first), which cannot complete before the peer arrives.
// So every wait sees the record of the same call. (AllReduce's middle round has
// its own event, `reduced`, rather than recording `ready` twice, so that each
// event is recorded once per call and this argument holds as stated.) Waits only
// follow records made before a rendezvous every rank passed, so a rank that fails
// never leaves a peer's stream waiting for a record that never comes.
//
// The parts never let a rank write memory a peer reads in the same phase, so
// in-place calls need no scratch memory:
//  * ReduceScatter: rank r sums shard r of every send into recv_r.
//  * AllGather: rank r copies send_q into slot q of recv_r, for every q (not when
//    send_q already is that slot, as in place for q == r).
//  * Broadcast: every rank but root copies root's buffer into its own.
//  * AllReduce: rank r sums chunk r (comm::chunkOf) of every send into chunk r of
//    recv_r; after the `reduced` round, copies chunk q of recv_q into recv_r for
//    every q != r. In place, round 1 reads chunks q != r of send_r = recv_r, which
//    round 2 overwrites: that is what the `reduced` round waits for.
// A sum is one kernel launch (local_device_kernels.h) given all N pointers by
// value, hence at most kMaxLocalDeviceRanks ranks; copies are cudaMemcpyAsync.
//
// The calls return once the work is enqueued, but meet the peers on the host, so
// capturable() is false: a CUDA graph would replay the GPU work without the
// rendezvous that orders it. The events are shared: the last rank to destroy its
// communicator destroys every rank's events, so no peer still ending its last
// call waits on a destroyed event. Calls on one communicator come from one thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "runtime/comm/communicator.h"
#include "runtime/comm/device_communicator.h"

namespace ds::cuda {

class LocalDeviceCommunicator : public DeviceCommunicator {
 public:
  // Collective over `host` (its rank and size): every rank constructs one, each in
  // its own thread of this process, all on GPU `device`. `host` must outlive it.
  LocalDeviceCommunicator(Communicator& host, int device);
  ~LocalDeviceCommunicator() override;
  LocalDeviceCommunicator(const LocalDeviceCommunicator&) = delete;
  LocalDeviceCommunicator& operator=(const LocalDeviceCommunicator&) = delete;

  int rank() const override;
  int size() const override;
  std::string kind() const override { return "local-device"; }
  int device() const override;
  bool capturable() const override { return false; }

  void allReduce(const void* send, void* recv, int64_t count, DType dtype, void* stream,
                 const CollectiveSite& site) override;
  void reduceScatter(const void* send, void* recv, int64_t recv_count, DType dtype, void* stream,
                     const CollectiveSite& site) override;
  void allGather(const void* send, void* recv, int64_t send_count, DType dtype, void* stream,
                 const CollectiveSite& site) override;
  void broadcast(void* buf, int64_t count, DType dtype, int root, void* stream,
                 const CollectiveSite& site) override;

 private:
  struct State;  // the host communicator, CUDA events, the last rendezvous's calls
  std::unique_ptr<State> s_;
};

}  // namespace ds::cuda
