#include "runtime/comm/mpi_communicator.h"

#include "ir/error.h"

#ifdef DS_HAVE_MPI

// Only MPI's C API: its deprecated C++ bindings do not compile warning-free.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#include <signal.h>

#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>

namespace ds {
namespace {

// Set by SIGTERM, which mpirun sends to every rank when one dies: the wait loop
// turns it into an error naming the ranks this rank was still waiting for.
volatile sig_atomic_t g_terminating = 0;
void onTerminate(int) {
  g_terminating = 1;
}

// MPI counts are int: longer messages go in pieces of at most this many bytes.
constexpr size_t kMaxMessageBytes = size_t{1} << 30;
// Tags cycle below the 32767 every MPI guarantees; they only make a message of
// one collective unmistakable for another's when debugging, since messages
// between two ranks arrive in order anyway.
constexpr int kTagCycle = 30000;
constexpr std::chrono::milliseconds kTerminateGrace{100};

std::string mpiErrorString(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  return std::string(text, static_cast<size_t>(len));
}

}  // namespace

bool haveMpi() {
  return true;
}

struct MpiCommunicator::State {
  MPI_Comm comm = MPI_COMM_NULL;
  int rank = 0, size = 1;
  double timeout_s = comm::kDefaultTimeoutSeconds;
  int next_tag = 0;
  // The requests of the collective in progress, with their peer and expected size.
  std::vector<MPI_Request> reqs;
  std::vector<int> peers;
  std::vector<char> is_recv;
  std::vector<int> bytes;
  std::vector<MPI_Status> statuses;
  std::vector<int> done;
  std::vector<std::vector<uint8_t>> scratch;  // per peer: received chunks to sum
  std::vector<const void*> srcs;

  int tag() { return next_tag = (next_tag + 1) % kTagCycle; }

  void post(const void* data, size_t n, int peer, int tag_, bool recv) {
    auto* p = static_cast<uint8_t*>(const_cast<void*>(data));
    do {  // one message even when empty: it tells the peer this rank arrived
      int piece = static_cast<int>(std::min(n, kMaxMessageBytes));
      MPI_Request r;
      int rc = recv ? MPI_Irecv(p, piece, MPI_BYTE, peer, tag_, comm, &r)
                    : MPI_Isend(p, piece, MPI_BYTE, peer, tag_, comm, &r);
      DS_CHECK(rc == MPI_SUCCESS, "MPI_", recv ? "Irecv" : "Isend",
               " failed: ", mpiErrorString(rc));
      reqs.push_back(r);
      peers.push_back(peer);
      is_recv.push_back(recv);
      bytes.push_back(piece);
      p += piece;
      n -= static_cast<size_t>(piece);
    } while (n > 0);
  }

  // The peers whose messages have not arrived; when every receive is done, those
  // that have not taken this rank's messages.
  std::vector<int> missing() const {
    std::vector<int> recv, send;
    for (size_t i = 0; i < reqs.size(); ++i)
      if (reqs[i] != MPI_REQUEST_NULL) (is_recv[i] ? recv : send).push_back(peers[i]);
    std::vector<int>& m = recv.empty() ? send : recv;
    std::sort(m.begin(), m.end());
    m.erase(std::unique(m.begin(), m.end()), m.end());
    return m;
  }

  // Polls every posted request until all complete; throws on the deadline, on
  // SIGTERM from the launcher and on MPI errors, naming the missing ranks.
  void waitAll(const CollectiveSite& site, comm::Clock::time_point deadline) {
    statuses.resize(reqs.size());
    done.resize(reqs.size());
    size_t remaining = reqs.size();
    comm::Clock::time_point terminating_since{};
    for (int idle = 0; remaining > 0; ++idle) {
      int count = 0;
      int rc = MPI_Testsome(static_cast<int>(reqs.size()), reqs.data(), &count, done.data(),
                            statuses.data());
      if (rc != MPI_SUCCESS)
        throw Error(comm::failureMessage(site, "MPI failed: " + mpiErrorString(rc), missing()));
      if (count == MPI_UNDEFINED) break;
      for (int k = 0; k < count; ++k)
        checkReceived(site, static_cast<size_t>(done[k]), statuses[k]);
      remaining -= static_cast<size_t>(count);
      if (count > 0) idle = 0;
      if (remaining == 0) break;
      if (g_terminating && terminating_since == comm::Clock::time_point{})
        terminating_since = comm::Clock::now();
      // A short grace lets messages already in flight land, so that only the ranks
      // that are really gone are named.
      if (g_terminating && comm::Clock::now() - terminating_since > kTerminateGrace)
        throw Error(
            comm::failureMessage(site, "mpirun is ending the job (a rank exited)", missing()));
      if (comm::Clock::now() > deadline)
        throw Error(comm::failureMessage(site, comm::timeoutWhat(timeout_s), missing()));
      // Spin briefly for latency, then sleep so that waiting ranks leave the cores
      // to the ranks still computing (they share a machine under --oversubscribe).
      if (idle > 200) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    reqs.clear();
    peers.clear();
    is_recv.clear();
    bytes.clear();
  }

  // A receive that got another size than posted means the ranks called different
  // collectives: an error, never silently wrong data.
  void checkReceived(const CollectiveSite& site, size_t i, MPI_Status& status) {
    if (!is_recv[i]) return;
    int got = 0;
    MPI_Get_count(&status, MPI_BYTE, &got);
    if (got != bytes[i])
      throw Error(site.describe() + ": rank " + std::to_string(peers[i]) + " sent " +
                  std::to_string(got) + " bytes where " + std::to_string(bytes[i]) +
                  " were expected (the ranks' plans disagree)");
  }

  uint8_t* scratchFor(int peer, size_t n) {
    auto& s = scratch[static_cast<size_t>(peer)];
    if (s.size() < n) s.resize(n);
    return s.data();
  }
};

MpiCommunicator::MpiCommunicator(double timeout_s) : s_(std::make_unique<State>()) {
  DS_CHECK(timeout_s > 0, "--comm-timeout must be positive, is ", timeout_s);
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) MPI_Init(nullptr, nullptr);
  struct sigaction sa {};
  sa.sa_handler = onTerminate;
  sigaction(SIGTERM, &sa, nullptr);
  MPI_Comm_dup(MPI_COMM_WORLD, &s_->comm);
  // Errors come back as codes, so they become ds::Errors naming the collective.
  MPI_Comm_set_errhandler(s_->comm, MPI_ERRORS_RETURN);
  MPI_Comm_rank(s_->comm, &s_->rank);
  MPI_Comm_size(s_->comm, &s_->size);
  s_->timeout_s = timeout_s;
  s_->scratch.resize(static_cast<size_t>(s_->size));
  s_->srcs.resize(static_cast<size_t>(s_->size));
}

MpiCommunicator::~MpiCommunicator() = default;

void MpiCommunicator::finalize() {
  barrier({"barrier", "end of run"});
  MPI_Comm_free(&s_->comm);
  MPI_Finalize();
}

int MpiCommunicator::rank() const {
  return s_->rank;
}
int MpiCommunicator::size() const {
  return s_->size;
}

void MpiCommunicator::allReduce(const void* send, void* recv, int64_t count, DType dtype,
                                const CollectiveSite& site) {
  comm::checkSummable(dtype, site);
  State& s = *s_;
  auto deadline = comm::deadlineAfter(s.timeout_s);
  const size_t es = dtypeSize(dtype);
  auto* in = static_cast<const uint8_t*>(send);
  auto* out = static_cast<uint8_t*>(recv);
  const comm::Chunk mine = comm::chunkOf(count, s.size, s.rank);
  // Reduce-scatter: chunk rank() of every peer's input, summed in rank order.
  int tag = s.tag();
  for (int p = 0; p < s.size; ++p) {
    if (p == s.rank) continue;
    s.post(s.scratchFor(p, mine.count * es), mine.count * es, p, tag, true);
    comm::Chunk c = comm::chunkOf(count, s.size, p);
    s.post(in + c.offset * es, c.count * es, p, tag, false);
  }
  s.waitAll(site, deadline);
  for (int p = 0; p < s.size; ++p)
    s.srcs[p] = p == s.rank ? in + mine.offset * es : s.scratch[p].data();
  // The sends of phase 1 are complete, so writing the output is safe even in place.
  comm::sumInRankOrder(s.srcs.data(), s.size, out + mine.offset * es, mine.count, dtype);
  // All-gather of the summed chunks.
  tag = s.tag();
  for (int p = 0; p < s.size; ++p) {
    if (p == s.rank) continue;
    comm::Chunk c = comm::chunkOf(count, s.size, p);
    s.post(out + c.offset * es, c.count * es, p, tag, true);
    s.post(out + mine.offset * es, mine.count * es, p, tag, false);
  }
  s.waitAll(site, deadline);
}

void MpiCommunicator::reduceScatter(const void* send, void* recv, int64_t recv_count, DType dtype,
                                    const CollectiveSite& site) {
  comm::checkSummable(dtype, site);
  State& s = *s_;
  auto deadline = comm::deadlineAfter(s.timeout_s);
  const size_t shard = static_cast<size_t>(recv_count) * dtypeSize(dtype);
  auto* in = static_cast<const uint8_t*>(send);
  int tag = s.tag();
  for (int p = 0; p < s.size; ++p) {
    if (p == s.rank) continue;
    s.post(s.scratchFor(p, shard), shard, p, tag, true);
    s.post(in + p * shard, shard, p, tag, false);
  }
  s.waitAll(site, deadline);
  for (int p = 0; p < s.size; ++p)
    s.srcs[p] = p == s.rank ? in + s.rank * shard : s.scratch[p].data();
  comm::sumInRankOrder(s.srcs.data(), s.size, recv, recv_count, dtype);
}

void MpiCommunicator::allGather(const void* send, void* recv, int64_t send_count, DType dtype,
                                const CollectiveSite& site) {
  State& s = *s_;
  auto deadline = comm::deadlineAfter(s.timeout_s);
  const size_t shard = static_cast<size_t>(send_count) * dtypeSize(dtype);
  auto* out = static_cast<uint8_t*>(recv);
  if (out + s.rank * shard != send) std::memmove(out + s.rank * shard, send, shard);
  int tag = s.tag();
  for (int p = 0; p < s.size; ++p) {
    if (p == s.rank) continue;
    s.post(out + p * shard, shard, p, tag, true);
    s.post(send, shard, p, tag, false);
  }
  s.waitAll(site, deadline);
}

void MpiCommunicator::broadcast(void* buf, int64_t count, DType dtype, int root,
                                const CollectiveSite& site) {
  State& s = *s_;
  DS_CHECK(root >= 0 && root < s.size, site.describe(), ": root ", root,
           " is not a rank of a world of ", s.size);
  auto deadline = comm::deadlineAfter(s.timeout_s);
  const size_t n = static_cast<size_t>(count) * dtypeSize(dtype);
  int tag = s.tag();
  if (s.rank != root) {
    s.post(buf, n, root, tag, true);
  } else {
    for (int p = 0; p < s.size; ++p)
      if (p != root) s.post(buf, n, p, tag, false);
  }
  s.waitAll(site, deadline);
}

void MpiCommunicator::barrier(const CollectiveSite& site) {
  State& s = *s_;
  auto deadline = comm::deadlineAfter(s.timeout_s);
  static uint8_t token_in = 0, token_out = 0;  // empty messages: any address will do
  int tag = s.tag();
  for (int p = 0; p < s.size; ++p) {
    if (p == s.rank) continue;
    s.post(&token_in, 0, p, tag, true);
    s.post(&token_out, 0, p, tag, false);
  }
  s.waitAll(site, deadline);
}

}  // namespace ds

#else  // !DS_HAVE_MPI

namespace ds {

bool haveMpi() {
  return false;
}

struct MpiCommunicator::State {};

MpiCommunicator::MpiCommunicator(double) {
  throw makeError(
      "--comm mpi: this dsrun was built without MPI (install libopenmpi-dev, "
      "scripts/setup.sh does, and rebuild)");
}
MpiCommunicator::~MpiCommunicator() = default;
void MpiCommunicator::finalize() {}
int MpiCommunicator::rank() const {
  return 0;
}
int MpiCommunicator::size() const {
  return 1;
}
void MpiCommunicator::allReduce(const void*, void*, int64_t, DType, const CollectiveSite&) {}
void MpiCommunicator::reduceScatter(const void*, void*, int64_t, DType, const CollectiveSite&) {}
void MpiCommunicator::allGather(const void*, void*, int64_t, DType, const CollectiveSite&) {}
void MpiCommunicator::broadcast(void*, int64_t, DType, int, const CollectiveSite&) {}
void MpiCommunicator::barrier(const CollectiveSite&) {}

}  // namespace ds

#endif
