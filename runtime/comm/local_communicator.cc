#include "runtime/comm/local_communicator.h"

#include <algorithm>
#include <cstring>
#include <new>
#include <sstream>

#include "ir/error.h"

namespace ds {

// One rank's face of a LocalWorld. The copies and sums run between the world's
// rendezvous A and B, outside its lock: every rank touches only its own output and
// the shared buffer's chunk it owns.
class LocalCommunicator : public Communicator {
 public:
  enum Kind { kAllReduce, kReduceScatter, kAllGather, kBroadcast, kBarrier };

  LocalCommunicator(LocalWorld& world, int rank)
      : world_(world), rank_(rank), srcs_(static_cast<size_t>(world.size())) {}

  int rank() const override { return rank_; }
  int size() const override { return world_.size(); }
  std::string kind() const override { return "local"; }

  void allReduce(const void* send, void* recv, int64_t count, DType dtype,
                 const CollectiveSite& site) override {
    comm::checkSummable(dtype, site);
    arrive({site, kAllReduce, send, recv, count, dtype, 0});
    // Rank r sums chunk r of every rank's input into the shared buffer; nobody
    // writes its output before rendezvous B, since outputs may be inputs.
    const size_t es = dtypeSize(dtype);
    comm::Chunk chunk = comm::chunkOf(count, size(), rank_);
    for (int r = 0; r < size(); ++r) srcs_[r] = bytes(world_.calls_[r].send) + chunk.offset * es;
    comm::sumInRankOrder(srcs_.data(), size(), world_.scratch_.data() + chunk.offset * es,
                         chunk.count, dtype);
    world_.depart();
    // The shared buffer stays intact until every rank arrives at the next collective.
    std::memcpy(recv, world_.scratch_.data(), static_cast<size_t>(count) * es);
  }

  void reduceScatter(const void* send, void* recv, int64_t recv_count, DType dtype,
                     const CollectiveSite& site) override {
    comm::checkSummable(dtype, site);
    arrive({site, kReduceScatter, send, recv, recv_count, dtype, 0});
    // Only this rank reads shard rank() of the inputs, so it may sum straight into
    // its output even when the output is that shard of its own input.
    const size_t offset = static_cast<size_t>(rank_ * recv_count) * dtypeSize(dtype);
    for (int r = 0; r < size(); ++r) srcs_[r] = bytes(world_.calls_[r].send) + offset;
    comm::sumInRankOrder(srcs_.data(), size(), recv, recv_count, dtype);
    world_.depart();
  }

  void allGather(const void* send, void* recv, int64_t send_count, DType dtype,
                 const CollectiveSite& site) override {
    arrive({site, kAllGather, send, recv, send_count, dtype, 0});
    const size_t shard = static_cast<size_t>(send_count) * dtypeSize(dtype);
    for (int r = 0; r < size(); ++r) {
      uint8_t* dst = static_cast<uint8_t*>(recv) + static_cast<size_t>(r) * shard;
      if (dst != world_.calls_[r].send) std::memcpy(dst, world_.calls_[r].send, shard);
    }
    world_.depart();  // peers may still read this rank's input
  }

  void broadcast(void* buf, int64_t count, DType dtype, int root,
                 const CollectiveSite& site) override {
    DS_CHECK(root >= 0 && root < size(), site.describe(), ": root ", root,
             " is not a rank of a world of ", size());
    arrive({site, kBroadcast, buf, buf, count, dtype, root});
    if (rank_ != root)
      std::memcpy(buf, world_.calls_[root].send, static_cast<size_t>(count) * dtypeSize(dtype));
    world_.depart();  // root's buffer is read until every rank has copied it
  }

  void barrier(const CollectiveSite& site) override {
    arrive({site, kBarrier, nullptr, nullptr, 0, DType::U8, 0});
  }

 private:
  static const uint8_t* bytes(const void* p) { return static_cast<const uint8_t*>(p); }
  void arrive(const LocalWorld::Call& call) {
    world_.arrive(rank_, call, comm::deadlineAfter(world_.timeoutSeconds()));
  }

  LocalWorld& world_;
  const int rank_;
  std::vector<const void*> srcs_;  // per call, allocated once so collectives cannot throw
};

namespace {

const char* kindName(int kind) {
  static const char* const kNames[] = {"AllReduce", "ReduceScatter", "AllGather", "Broadcast",
                                       "barrier"};
  return kNames[kind];
}

}  // namespace

std::string LocalWorld::describeCall(int rank, const Call& c) {
  std::ostringstream os;
  os << "rank " << rank << " is in " << kindName(c.kind) << " '" << c.site.node << "' ("
     << dtypeName(c.dtype) << " x " << c.count;
  if (c.kind == LocalCommunicator::kBroadcast) os << ", root " << c.root;
  os << ")";
  return os.str();
}

LocalWorld::LocalWorld(int size, double timeout_s)
    : size_(size),
      timeout_s_(timeout_s),
      state_(static_cast<size_t>(size), State::Running),
      calls_(static_cast<size_t>(size)),
      arrived_(static_cast<size_t>(size), 0) {
  DS_CHECK(size >= 1, "a world needs at least one rank, not ", size);
  DS_CHECK(timeout_s > 0, "--comm-timeout must be positive, is ", timeout_s);
  for (int r = 0; r < size; ++r) comms_.push_back(std::make_unique<LocalCommunicator>(*this, r));
}

LocalWorld::~LocalWorld() = default;

Communicator& LocalWorld::comm(int rank) {
  return *comms_.at(static_cast<size_t>(rank));
}

void LocalWorld::fail(int rank) {
  std::lock_guard lk(mu_);
  if (state_[rank] == State::Running) state_[rank] = State::Failed;
  cv_.notify_all();
}

void LocalWorld::finish(int rank) {
  std::lock_guard lk(mu_);
  if (state_[rank] == State::Running) state_[rank] = State::Finished;
  cv_.notify_all();
}

bool LocalWorld::failed() const {
  std::lock_guard lk(mu_);
  return std::any_of(state_.begin(), state_.end(),
                     [](State s) { return s == State::Failed || s == State::GaveUp; });
}

// Ranks that have not arrived, leaving out those that were here and gave up; with
// `only_stopped`, only those that failed or finished (they will never come).
std::vector<int> LocalWorld::missingLocked(bool only_stopped) const {
  std::vector<int> missing;
  for (int r = 0; r < size_; ++r) {
    State s = state_[r];
    bool stopped = s == State::Failed || s == State::Finished;
    if (!arrived_[r] && s != State::GaveUp && (!only_stopped || stopped)) missing.push_back(r);
  }
  return missing;
}

void LocalWorld::giveUpLocked(int rank, const std::string& message) {
  if (arrived_[rank]) {  // so that the round never completes without this rank
    arrived_[rank] = 0;
    --num_arrived_;
  }
  if (state_[rank] == State::Running) state_[rank] = State::GaveUp;
  cv_.notify_all();
  throw Error(message);
}

// Why waiting any longer in `site` is pointless, or "" while it is not. A failed
// rank is named first; else the first rank that gave up (a timeout), whose missing
// ranks are also ours; else ranks that finished without joining.
std::string LocalWorld::brokenReasonLocked(const CollectiveSite& site) const {
  std::vector<int> failed;
  for (int r = 0; r < size_; ++r)
    if (state_[r] == State::Failed) failed.push_back(r);
  if (!failed.empty())
    return comm::failureMessage(site, comm::ranksString(failed) + " failed", missingLocked(true));
  if (!first_give_up_.empty()) return site.describe() + ": " + first_give_up_;
  std::vector<int> finished = missingLocked(true);
  if (!finished.empty())
    return comm::failureMessage(
        site, comm::ranksString(finished) + " finished without joining (the plans disagree)",
        finished);
  return "";
}

void LocalWorld::arrive(int rank, const Call& call, comm::Clock::time_point deadline) {
  std::unique_lock lk(mu_);
  auto giveUpIfBroken = [&] {
    if (std::string why = brokenReasonLocked(call.site); !why.empty()) giveUpLocked(rank, why);
  };
  giveUpIfBroken();
  calls_[rank] = call;
  arrived_[rank] = 1;
  const uint64_t round = arrival_round_;
  if (++num_arrived_ == size_) {
    checkCallsLocked();
    std::fill(arrived_.begin(), arrived_.end(), 0);
    num_arrived_ = 0;
    ++arrival_round_;
    cv_.notify_all();
  }
  while (arrival_round_ == round) {
    giveUpIfBroken();
    if (cv_.wait_until(lk, deadline) == std::cv_status::timeout && arrival_round_ == round) {
      giveUpIfBroken();  // a peer that timed out a moment earlier has the same story
      std::vector<int> missing = missingLocked(false);
      std::string what = comm::timeoutWhat(timeout_s_);
      if (first_give_up_.empty())  // the ranks still waiting report the same cause
        first_give_up_ =
            "rank " + std::to_string(rank) + " " + what + "; missing " + comm::ranksString(missing);
      giveUpLocked(rank, comm::failureMessage(call.site, what, missing));
    }
  }
  if (!call_error_.empty()) {
    state_[rank] = State::GaveUp;
    throw Error(call.site.describe() + ": " + call_error_);
  }
}

void LocalWorld::checkCallsLocked() {
  call_error_.clear();
  const Call& first = calls_[0];
  for (int r = 1; r < size_; ++r) {
    const Call& c = calls_[r];
    if (c.kind != first.kind || c.count != first.count || c.dtype != first.dtype ||
        c.root != first.root) {
      call_error_ =
          "the ranks' plans disagree: " + describeCall(0, first) + ", " + describeCall(r, c);
      return;
    }
  }
  if (first.kind != LocalCommunicator::kAllReduce) return;
  size_t need = static_cast<size_t>(first.count) * dtypeSize(first.dtype);
  try {
    if (scratch_.size() < need) scratch_.resize(need);
  } catch (const std::bad_alloc&) {
    call_error_ = "cannot allocate " + std::to_string(need) + " bytes for the sums";
  }
}

void LocalWorld::depart() {
  std::unique_lock lk(mu_);
  const uint64_t round = departure_round_;
  if (++num_departed_ == size_) {
    num_departed_ = 0;
    ++departure_round_;
    cv_.notify_all();
    return;
  }
  // No timeout: every rank that passed rendezvous A gets here after a bounded copy.
  cv_.wait(lk, [&] { return departure_round_ != round; });
}

}  // namespace ds
