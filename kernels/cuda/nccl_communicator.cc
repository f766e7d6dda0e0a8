#include "kernels/cuda/nccl_communicator.h"

#include "ir/error.h"

#ifdef DS_HAVE_NCCL

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstring>
#include <thread>
#include <vector>

namespace ds::cuda {
namespace {

ncclDataType_t ncclSumType(DType t, const CollectiveSite& site) {
  switch (t) {
    case DType::F32:
      return ncclFloat32;
    case DType::F16:
      return ncclFloat16;
    case DType::BF16:
      return ncclBfloat16;
    case DType::F64:
      return ncclFloat64;
    case DType::I64:
      return ncclInt64;
    case DType::I32:
      return ncclInt32;
    case DType::I8:
      return ncclInt8;
    case DType::U8:
      return ncclUint8;
    case DType::Bool:
      break;
  }
  comm::checkSummable(t, site);
  throw makeError(site.describe(), ": NCCL cannot sum ", dtypeName(t));
}

}  // namespace

bool haveNccl() {
  return true;
}

struct NcclCommunicator::State {
  ncclComm_t comm = nullptr;
  int rank = 0, size = 1;
  int device = 0;  // the GPU the communicator was created on
  double timeout_s = comm::kDefaultTimeoutSeconds;
  cudaStream_t stream = nullptr;
  int* barrier_word = nullptr;  // device memory the barrier all-reduces

  [[noreturn]] void abortAndThrow(const CollectiveSite& site, const std::string& what) {
    // A communicator with a missing peer never recovers; aborting it frees the GPU
    // work stuck waiting for that peer, so the process can exit.
    if (comm) ncclCommAbort(comm);
    comm = nullptr;
    throw Error(site.describe() + ": " + what + "; NCCL does not say which ranks are missing");
  }

  void ready(const CollectiveSite& site) const {
    DS_CHECK(comm != nullptr, site.describe(),
             ": the NCCL communicator was aborted after an earlier error");
  }

  void check(ncclResult_t rc, const char* call, const CollectiveSite& site) {
    if (rc != ncclSuccess && rc != ncclInProgress)
      abortAndThrow(site, std::string(call) + " failed: " + ncclGetErrorString(rc));
  }

  // Polls until NCCL has finished the call (non-blocking communicators return
  // before) and, with `stream_too`, the stream has run it; the timeout applies.
  void wait(const CollectiveSite& site, bool stream_too) {
    auto deadline = comm::deadlineAfter(timeout_s);
    for (int idle = 0;; ++idle) {
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm, &async);
      if (async != ncclSuccess && async != ncclInProgress)
        abortAndThrow(site, std::string("NCCL error: ") + ncclGetErrorString(async) + " (" +
                                ncclGetLastError(comm) + ")");
      if (async == ncclSuccess) {
        if (!stream_too) return;
        cudaError_t q = cudaStreamQuery(stream);
        if (q == cudaSuccess) return;
        if (q != cudaErrorNotReady)
          abortAndThrow(site, std::string("CUDA error: ") + cudaGetErrorString(q));
      }
      if (comm::Clock::now() > deadline) abortAndThrow(site, comm::timeoutWhat(timeout_s));
      if (idle > 200) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  // The collectives of both faces: enqueue on `on`, then wait until NCCL has
  // finished enqueueing and, with `until_done` (the blocking face, whose stream is
  // `stream`), until the stream has run the collective.
  void allReduce(const void* send, void* recv, int64_t count, DType dtype, cudaStream_t on,
                 const CollectiveSite& site, bool until_done) {
    ready(site);
    check(ncclAllReduce(send, recv, static_cast<size_t>(count), ncclSumType(dtype, site), ncclSum,
                        comm, on),
          "ncclAllReduce", site);
    wait(site, until_done);
  }

  void reduceScatter(const void* send, void* recv, int64_t recv_count, DType dtype, cudaStream_t on,
                     const CollectiveSite& site, bool until_done) {
    ready(site);
    check(ncclReduceScatter(send, recv, static_cast<size_t>(recv_count), ncclSumType(dtype, site),
                            ncclSum, comm, on),
          "ncclReduceScatter", site);
    wait(site, until_done);
  }

  // Gathers and broadcasts move bytes, so every dtype (bool too) goes as u8.
  void allGather(const void* send, void* recv, int64_t send_count, DType dtype, cudaStream_t on,
                 const CollectiveSite& site, bool until_done) {
    ready(site);
    check(ncclAllGather(send, recv, static_cast<size_t>(send_count) * dtypeSize(dtype), ncclUint8,
                        comm, on),
          "ncclAllGather", site);
    wait(site, until_done);
  }

  void broadcast(void* buf, int64_t count, DType dtype, int root, cudaStream_t on,
                 const CollectiveSite& site, bool until_done) {
    ready(site);
    check(ncclBroadcast(buf, buf, static_cast<size_t>(count) * dtypeSize(dtype), ncclUint8, root,
                        comm, on),
          "ncclBroadcast", site);
    wait(site, until_done);
  }
};

void NcclCommunicator::init(int rank, int size, int device, const std::string& id_bytes,
                            double timeout_s) {
  DS_CHECK(timeout_s > 0, "--comm-timeout must be positive, is ", timeout_s);
  s_->rank = rank;
  s_->size = size;
  s_->device = device;
  s_->timeout_s = timeout_s;
  cudaError_t rc = cudaSetDevice(device);
  DS_CHECK(rc == cudaSuccess, "NCCL rank ", rank, ": cannot use GPU ", device, ": ",
           cudaGetErrorString(rc));
  ncclUniqueId id;
  DS_CHECK(id_bytes.size() == sizeof id, "NCCL bootstrap: got ", id_bytes.size(),
           " bytes of unique id, expected ", sizeof id);
  std::memcpy(&id, id_bytes.data(), sizeof id);
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // so that a rank that never joins is a timeout, not a hang
  const CollectiveSite site{"NCCL init", ""};
  s_->check(ncclCommInitRankConfig(&s_->comm, size, id, rank, &config), "ncclCommInitRankConfig",
            site);
  s_->wait(site, false);
  rc = cudaMalloc(reinterpret_cast<void**>(&s_->barrier_word), sizeof(int));
  DS_CHECK(rc == cudaSuccess, "NCCL rank ", rank, ": cudaMalloc: ", cudaGetErrorString(rc));
}

namespace {

std::string newUniqueId() {
  ncclUniqueId id;
  ncclResult_t rc = ncclGetUniqueId(&id);
  DS_CHECK(rc == ncclSuccess, "ncclGetUniqueId failed: ", ncclGetErrorString(rc));
  return std::string(reinterpret_cast<const char*>(&id), sizeof id);
}

}  // namespace

NcclCommunicator::NcclCommunicator(Communicator& bootstrap, int device, double timeout_s)
    : s_(std::make_unique<State>()) {
  std::string id(sizeof(ncclUniqueId), '\0');
  if (bootstrap.rank() == 0) id = newUniqueId();
  bootstrap.broadcast(id.data(), static_cast<int64_t>(id.size()), DType::U8, 0,
                      {"bootstrap", "ncclUniqueId"});
  init(bootstrap.rank(), bootstrap.size(), device, id, timeout_s);
}

NcclCommunicator::NcclCommunicator(const TorchrunEnv& env, double timeout_s)
    : s_(std::make_unique<State>()) {
  std::vector<uint8_t> id;
  if (env.rank == 0) {
    std::string made = newUniqueId();
    id.assign(made.begin(), made.end());
  }
  id = tcpBroadcastFromRank0(env, std::move(id), timeout_s);
  init(env.rank, env.world_size, env.local_rank, std::string(id.begin(), id.end()), timeout_s);
}

NcclCommunicator::~NcclCommunicator() {
  if (s_->comm) {
    // Finalizing a non-blocking communicator completes asynchronously: bounded wait.
    ncclCommFinalize(s_->comm);
    auto deadline = comm::deadlineAfter(s_->timeout_s);
    ncclResult_t state = ncclInProgress;
    while (state == ncclInProgress && comm::Clock::now() < deadline)
      ncclCommGetAsyncError(s_->comm, &state);
    if (state == ncclSuccess)
      ncclCommDestroy(s_->comm);
    else
      ncclCommAbort(s_->comm);
  }
  if (s_->barrier_word) cudaFree(s_->barrier_word);
}

void NcclCommunicator::setStream(void* cuda_stream) {
  s_->stream = static_cast<cudaStream_t>(cuda_stream);
}

int NcclCommunicator::rank() const {
  return s_->rank;
}
int NcclCommunicator::size() const {
  return s_->size;
}

void NcclCommunicator::allReduce(const void* send, void* recv, int64_t count, DType dtype,
                                 const CollectiveSite& site) {
  s_->allReduce(send, recv, count, dtype, s_->stream, site, true);
}

void NcclCommunicator::reduceScatter(const void* send, void* recv, int64_t recv_count, DType dtype,
                                     const CollectiveSite& site) {
  s_->reduceScatter(send, recv, recv_count, dtype, s_->stream, site, true);
}

void NcclCommunicator::allGather(const void* send, void* recv, int64_t send_count, DType dtype,
                                 const CollectiveSite& site) {
  s_->allGather(send, recv, send_count, dtype, s_->stream, site, true);
}

void NcclCommunicator::broadcast(void* buf, int64_t count, DType dtype, int root,
                                 const CollectiveSite& site) {
  s_->broadcast(buf, count, dtype, root, s_->stream, site, true);
}

void NcclCommunicator::barrier(const CollectiveSite& site) {
  s_->ready(site);
  s_->check(ncclAllReduce(s_->barrier_word, s_->barrier_word, 1, ncclInt32, ncclSum, s_->comm,
                          s_->stream),
            "ncclAllReduce", site);
  s_->wait(site, true);
}

int NcclCommunicator::device() const {
  return s_->device;
}

// Capturable, by NCCL's documentation ("Using NCCL with CUDA Graphs", NCCL >= 2.9
// with CUDA >= 11.3): collectives, point-to-point and group calls may all be
// captured, provided every rank captures the same collectives (plans guarantee it)
// and a process with a thread per GPU captures in cudaStreamCaptureModeThreadLocal
// (or Relaxed). The guide sets no condition on non-blocking communicators, and
// nothing found in NCCL's issues says they cannot be captured: non-blocking is a
// host-side property (NCCL 2.14's notes, NVIDIA/nccl#715; a maintainer in
// NVIDIA/nccl#1346: "the GPU-side isn't affected"). Two consequences for capture:
// (1) a non-blocking call may return ncclInProgress and launch from NCCL's own
// thread (src/group.cc, groupLaunchNonBlocking); the calls below poll until NCCL
// has finished enqueueing, so the work is in the stream before they return and
// before the capture ends, and only ThreadLocal or Relaxed capture lets that
// thread's CUDA calls through; (2) the first call of a collective may set up
// connections (allocations that capture forbids), so capture after one eager
// step. The polling is ncclCommGetAsyncError, a host call capture allows; the
// device face never queries the stream (the blocking face does: never capture it).
// Not yet run under capture on a GPU.
bool NcclCommunicator::capturable() const {
  return true;
}

void NcclCommunicator::allReduce(const void* send, void* recv, int64_t count, DType dtype,
                                 void* stream, const CollectiveSite& site) {
  s_->allReduce(send, recv, count, dtype, static_cast<cudaStream_t>(stream), site, false);
}

void NcclCommunicator::reduceScatter(const void* send, void* recv, int64_t recv_count, DType dtype,
                                     void* stream, const CollectiveSite& site) {
  s_->reduceScatter(send, recv, recv_count, dtype, static_cast<cudaStream_t>(stream), site, false);
}

void NcclCommunicator::allGather(const void* send, void* recv, int64_t send_count, DType dtype,
                                 void* stream, const CollectiveSite& site) {
  s_->allGather(send, recv, send_count, dtype, static_cast<cudaStream_t>(stream), site, false);
}

void NcclCommunicator::broadcast(void* buf, int64_t count, DType dtype, int root, void* stream,
                                 const CollectiveSite& site) {
  s_->broadcast(buf, count, dtype, root, static_cast<cudaStream_t>(stream), site, false);
}

}  // namespace ds::cuda

#else  // !DS_HAVE_NCCL

namespace ds::cuda {

bool haveNccl() {
  return false;
}

struct NcclCommunicator::State {};

namespace {
[[noreturn]] void noNccl() {
  throw makeError("this build has no NCCL (nccl.h and libnccl were not found at configure time)");
}
}  // namespace

NcclCommunicator::NcclCommunicator(Communicator&, int, double) {
  noNccl();
}
NcclCommunicator::NcclCommunicator(const TorchrunEnv&, double) {
  noNccl();
}
NcclCommunicator::~NcclCommunicator() = default;
void NcclCommunicator::setStream(void*) {}
void NcclCommunicator::init(int, int, int, const std::string&, double) {}
int NcclCommunicator::rank() const {
  return 0;
}
int NcclCommunicator::size() const {
  return 1;
}
void NcclCommunicator::allReduce(const void*, void*, int64_t, DType, const CollectiveSite&) {}
void NcclCommunicator::reduceScatter(const void*, void*, int64_t, DType, const CollectiveSite&) {}
void NcclCommunicator::allGather(const void*, void*, int64_t, DType, const CollectiveSite&) {}
void NcclCommunicator::broadcast(void*, int64_t, DType, int, const CollectiveSite&) {}
void NcclCommunicator::barrier(const CollectiveSite&) {}
int NcclCommunicator::device() const {
  return 0;
}
bool NcclCommunicator::capturable() const {
  return false;
}
void NcclCommunicator::allReduce(const void*, void*, int64_t, DType, void*, const CollectiveSite&) {
}
void NcclCommunicator::reduceScatter(const void*, void*, int64_t, DType, void*,
                                     const CollectiveSite&) {}
void NcclCommunicator::allGather(const void*, void*, int64_t, DType, void*, const CollectiveSite&) {
}
void NcclCommunicator::broadcast(void*, int64_t, DType, int, void*, const CollectiveSite&) {}

}  // namespace ds::cuda

#endif
