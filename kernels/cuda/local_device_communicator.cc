#include "kernels/cuda/local_device_communicator.h"

#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <sstream>
#include <vector>

#include "ir/error.h"
#include "kernels/cuda/cuda_util.h"
#include "kernels/cuda/local_device_kernels.h"
#include "runtime/comm/comm_util.h"

namespace ds::cuda {
namespace {

enum Kind : int64_t { kAllReduce, kReduceScatter, kAllGather, kBroadcast };
const char* const kKindNames[] = {"AllReduce", "ReduceScatter", "AllGather", "Broadcast"};

// The events a rank owns, named by what their record means.
enum Role : int { kReady, kReduced, kDone };
constexpr size_t kRoles = 3;

// One rank's call as the rendezvous exchanges it: kCallWords int64s.
struct Call {
  Kind kind = kAllReduce;
  const void* send = nullptr;
  void* recv = nullptr;
  int64_t count = 0;
  DType dtype = DType::F32;
  int root = 0;
};
constexpr size_t kCallWords = 6;

// What each rank sends at construction (kHelloWords int64s): where it runs, and
// its events from kFirstEvent on, by role.
constexpr size_t kPid = 0, kDevice = 1, kUsers = 2, kFirstEvent = 3;
constexpr size_t kHelloWords = kFirstEvent + kRoles;

int64_t word(const void* p) {
  return static_cast<int64_t>(reinterpret_cast<intptr_t>(p));
}
template <typename T>
T pointer(int64_t w) {
  return reinterpret_cast<T>(static_cast<intptr_t>(w));
}

const uint8_t* bytes(const void* p) {
  return static_cast<const uint8_t*>(p);
}
uint8_t* bytes(void* p) {
  return static_cast<uint8_t*>(p);
}

std::string describeCall(int rank, const Call& c) {
  std::ostringstream os;
  os << "rank " << rank << " is in " << kKindNames[c.kind] << " (" << dtypeName(c.dtype) << " x "
     << c.count;
  if (c.kind == kBroadcast) os << ", root " << c.root;
  os << ")";
  return os.str();
}

void destroyEvents(const std::vector<cudaEvent_t>& events) {
  for (cudaEvent_t e : events)
    if (e) cudaEventDestroy(e);
}

}  // namespace

struct LocalDeviceCommunicator::State {
  Communicator& host;
  const int rank, size, device;
  // events[role * size + rank]: every rank's events; every rank holds the same table.
  std::vector<cudaEvent_t> events;
  // How many ranks still use `events`: one counter for the world, made by rank 0.
  std::atomic<int>* users = nullptr;
  std::vector<Call> calls;        // the last rendezvous's calls, by rank
  std::vector<int64_t> wire;      // the same, as the host allGather returns them
  std::vector<const void*> srcs;  // a sum's sources, by rank

  State(Communicator& host_comm, int device_index)
      : host(host_comm),
        rank(host_comm.rank()),
        size(host_comm.size()),
        device(device_index),
        calls(static_cast<size_t>(size)),
        wire(kCallWords * static_cast<size_t>(size)),
        srcs(static_cast<size_t>(size)) {}

  cudaEvent_t event(Role role, int r) const {
    return events[static_cast<size_t>(role) * static_cast<size_t>(size) + static_cast<size_t>(r)];
  }

  // Kernels and copies go to the calling thread's current device, which a rank
  // thread may not have set to ours.
  void useDevice() const {
    cudaError_t rc = cudaSetDevice(device);
    if (rc == cudaSuccess) return;
    cudaGetLastError();  // leave no error behind for an unrelated later check
    throw makeError("local device rank ", rank, ": cannot use GPU ", device, ": ",
                    cudaGetErrorString(rc));
  }

  void handshake();

  // Steps 1-3 of the header: records ready, meets the peers (checking that the
  // calls agree) and makes `stream` wait for their inputs. Fills `calls`.
  void begin(const Call& call, cudaStream_t stream, const CollectiveSite& site) {
    useDevice();
    DS_CUDA_CHECK(cudaEventRecord(event(kReady, rank), stream));
    int64_t mine[kCallWords] = {
        call.kind, word(call.send), word(call.recv), call.count, static_cast<int64_t>(call.dtype),
        call.root};
    host.allGather(mine, wire.data(), kCallWords, DType::I64, site);
    for (int q = 0; q < size; ++q) {
      const int64_t* w = wire.data() + static_cast<size_t>(q) * kCallWords;
      calls[q] = {static_cast<Kind>(w[0]),  pointer<const void*>(w[1]), pointer<void*>(w[2]), w[3],
                  static_cast<DType>(w[4]), static_cast<int>(w[5])};
    }
    // Every rank judges the same calls, so all throw or none does.
    for (int q = 1; q < size; ++q) {
      const Call &first = calls[0], &c = calls[q];
      if (c.kind != first.kind || c.count != first.count || c.dtype != first.dtype ||
          c.root != first.root)
        throw Error(site.describe() + ": the ranks' plans disagree: " + describeCall(0, first) +
                    ", " + describeCall(q, c));
    }
    waitForPeers(kReady, stream);
  }

  // Records `role`, meets the peers, and makes `stream` wait for their records.
  void meet(Role role, cudaStream_t stream, const CollectiveSite& site) {
    DS_CUDA_CHECK(cudaEventRecord(event(role, rank), stream));
    host.barrier(site);
    waitForPeers(role, stream);
  }

  void waitForPeers(Role role, cudaStream_t stream) const {
    for (int q = 0; q < size; ++q)
      if (q != rank) DS_CUDA_CHECK(cudaStreamWaitEvent(stream, event(role, q), 0));
  }

  static void copy(void* dst, const void* src, size_t n, cudaStream_t stream) {
    if (n == 0 || dst == src) return;
    DS_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, stream));
  }

  // dst = Σ_q srcs[q] over `count` elements, one launch; one rank's "sum" is a
  // copy, which keeps every bit, as the CPU's does.
  void sum(void* dst, int64_t count, DType dtype, cudaStream_t stream) const {
    if (count <= 0) return;
    if (size == 1) return copy(dst, srcs[0], static_cast<size_t>(count) * dtypeSize(dtype), stream);
    RankSources sources;
    sources.count = size;
    for (int q = 0; q < size; ++q) sources.ptr[q] = srcs[q];
    sumRanksInOrder(sources, dst, count, dtype, stream);
    DS_CUDA_CHECK(cudaGetLastError());
  }
};

// Each rank makes its events and learns everyone's. Rank 0 also makes the users
// counter, whose address the others learn here.
void LocalDeviceCommunicator::State::handshake() {
  std::vector<cudaEvent_t> own(kRoles, nullptr);
  std::atomic<int>* counter = rank == 0 ? new std::atomic<int>(size) : nullptr;
  try {
    for (cudaEvent_t& e : own) DS_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    std::vector<int64_t> hello(kHelloWords), all(kHelloWords * static_cast<size_t>(size));
    hello[kPid] = static_cast<int64_t>(getpid());
    hello[kDevice] = device;
    hello[kUsers] = word(counter);
    for (size_t role = 0; role < kRoles; ++role) hello[kFirstEvent + role] = word(own[role]);
    host.allGather(hello.data(), all.data(), kHelloWords, DType::I64,
                   {"bootstrap", "local device events"});
    // Every rank judges the same words, so all throw or none does.
    for (int q = 1; q < size; ++q) {
      const int64_t* peer = all.data() + static_cast<size_t>(q) * kHelloWords;
      DS_CHECK(peer[kPid] == all[kPid],
               "the local device transport needs its ranks in one process: rank 0 is process ",
               all[kPid], ", rank ", q, " process ", peer[kPid]);
      DS_CHECK(peer[kDevice] == all[kDevice],
               "the local device transport needs its ranks on one GPU: rank 0 is on GPU ",
               all[kDevice], ", rank ", q, " on GPU ", peer[kDevice]);
    }
    users = pointer<std::atomic<int>*>(all[kUsers]);
    events.resize(kRoles * static_cast<size_t>(size));
    for (size_t role = 0; role < kRoles; ++role)
      for (size_t q = 0; q < static_cast<size_t>(size); ++q)
        events[role * static_cast<size_t>(size) + q] =
            pointer<cudaEvent_t>(all[q * kHelloWords + kFirstEvent + role]);
  } catch (...) {
    // No peer adopted them: the handshake failed on every rank, or never ended.
    destroyEvents(own);
    delete counter;
    throw;
  }
}

LocalDeviceCommunicator::LocalDeviceCommunicator(Communicator& host, int device)
    : s_(std::make_unique<State>(host, device)) {
  DS_CHECK(s_->size <= kMaxLocalDeviceRanks, "the local device transport runs at most ",
           kMaxLocalDeviceRanks, " ranks on one GPU, not ", s_->size);
  s_->useDevice();
  s_->handshake();
}

// A peer may still be ending its last call, about to wait for this rank's `done`
// event, so the events go when the last rank lets go of them. Destroying an event
// whose record is still pending is allowed: CUDA frees it once the record completes.
LocalDeviceCommunicator::~LocalDeviceCommunicator() {
  if (s_->users->fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  cudaSetDevice(s_->device);
  destroyEvents(s_->events);
  delete s_->users;
}

int LocalDeviceCommunicator::rank() const {
  return s_->rank;
}
int LocalDeviceCommunicator::size() const {
  return s_->size;
}
int LocalDeviceCommunicator::device() const {
  return s_->device;
}

void LocalDeviceCommunicator::allReduce(const void* send, void* recv, int64_t count, DType dtype,
                                        void* stream, const CollectiveSite& site) {
  comm::checkSummable(dtype, site);
  auto s = static_cast<cudaStream_t>(stream);
  s_->begin({kAllReduce, send, recv, count, dtype, 0}, s, site);
  const size_t es = dtypeSize(dtype);
  // Round 1: chunk r of every input, summed into chunk r of this rank's output.
  const comm::Chunk own = comm::chunkOf(count, s_->size, s_->rank);
  const size_t own_offset = static_cast<size_t>(own.offset) * es;
  for (int q = 0; q < s_->size; ++q) s_->srcs[q] = bytes(s_->calls[q].send) + own_offset;
  s_->sum(bytes(recv) + own_offset, own.count, dtype, s);
  // Round 2, once every rank's round 1 is done (in place, it read what we overwrite
  // now): the other chunks, from the ranks that summed them.
  s_->meet(kReduced, s, site);
  for (int q = 0; q < s_->size; ++q) {
    if (q == s_->rank) continue;
    const comm::Chunk c = comm::chunkOf(count, s_->size, q);
    const size_t offset = static_cast<size_t>(c.offset) * es;
    State::copy(bytes(recv) + offset, bytes(s_->calls[q].recv) + offset,
                static_cast<size_t>(c.count) * es, s);
  }
  s_->meet(kDone, s, site);
}

void LocalDeviceCommunicator::reduceScatter(const void* send, void* recv, int64_t recv_count,
                                            DType dtype, void* stream, const CollectiveSite& site) {
  comm::checkSummable(dtype, site);
  auto s = static_cast<cudaStream_t>(stream);
  s_->begin({kReduceScatter, send, recv, recv_count, dtype, 0}, s, site);
  // Only this rank reads shard rank() of the inputs, so it may sum straight into
  // its output even when that is the shard of its own input.
  const size_t offset =
      static_cast<size_t>(s_->rank) * static_cast<size_t>(recv_count) * dtypeSize(dtype);
  for (int q = 0; q < s_->size; ++q) s_->srcs[q] = bytes(s_->calls[q].send) + offset;
  s_->sum(recv, recv_count, dtype, s);
  s_->meet(kDone, s, site);
}

void LocalDeviceCommunicator::allGather(const void* send, void* recv, int64_t send_count,
                                        DType dtype, void* stream, const CollectiveSite& site) {
  auto s = static_cast<cudaStream_t>(stream);
  s_->begin({kAllGather, send, recv, send_count, dtype, 0}, s, site);
  const size_t shard = static_cast<size_t>(send_count) * dtypeSize(dtype);
  // In place, slot rank() already holds this rank's input: copy() skips it.
  for (int q = 0; q < s_->size; ++q)
    State::copy(bytes(recv) + static_cast<size_t>(q) * shard, s_->calls[q].send, shard, s);
  s_->meet(kDone, s, site);
}

void LocalDeviceCommunicator::broadcast(void* buf, int64_t count, DType dtype, int root,
                                        void* stream, const CollectiveSite& site) {
  DS_CHECK(root >= 0 && root < s_->size, site.describe(), ": root ", root,
           " is not a rank of a world of ", s_->size);
  auto s = static_cast<cudaStream_t>(stream);
  s_->begin({kBroadcast, buf, buf, count, dtype, root}, s, site);
  if (s_->rank != root)
    State::copy(buf, s_->calls[root].send, static_cast<size_t>(count) * dtypeSize(dtype), s);
  s_->meet(kDone, s, site);
}

}  // namespace ds::cuda
