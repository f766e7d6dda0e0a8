// The communicators at the API level: every collective on the local transport at
// world sizes 1, 2, 3, 4 and 8 against a serial computation, bit for bit (the sum
// order is fixed: rank 0 first); in-place use; and the failure paths: a rank that
// throws, one that never comes (timeout), one that leaves, and ranks that disagree
// all end every other rank with one line naming the collective and the missing rank.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <mutex>
#include <thread>

#include <unistd.h>

#include "ir/error.h"
#include "ir/tensor.h"
#include "runtime/comm/comm_util.h"
#include "runtime/comm/local_communicator.h"
#include "runtime/comm/tcp_bootstrap.h"
#include "runtime/launch.h"
#include "tests/test_util.h"

namespace ds {
namespace {

using test::contains;

// Rank r's i-th input: varied magnitudes, so that a different summation order
// would change the low bits.
float value(int r, int64_t i) {
  uint64_t x =
      (static_cast<uint64_t>(r) * 1000003u + static_cast<uint64_t>(i)) * 6364136223846793005ull;
  return static_cast<float>(static_cast<double>(x >> 40) / (1 << 24) - 0.5) *
         static_cast<float>(1 << (i % 7)) * 1.37f;
}

std::vector<float> inputOf(int r, int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = value(r, i);
  return v;
}

// The serial reference: element i summed over ranks 0..n-1 in that order.
std::vector<float> serialSum(int ranks, int64_t n) {
  std::vector<float> s = inputOf(0, n);
  for (int r = 1; r < ranks; ++r) {
    std::vector<float> x = inputOf(r, n);
    for (size_t i = 0; i < s.size(); ++i) s[i] += x[i];
  }
  return s;
}

bool sameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

LaunchOptions localOptions(double timeout_s) {
  return {"local", timeout_s, FaultSpec{}};
}

// Runs body on n local ranks; expects success.
void onRanks(int n, const RankBody& body) {
  LaunchResult r = launchRanks(n, localOptions(30), body);
  for (const std::string& e : r.errors) ADD_FAILURE() << e;
}

const CollectiveSite kSite{"AllReduce", "sum"};

class CommLocal : public ::testing::TestWithParam<int> {};

TEST_P(CommLocal, AllReduceMatchesSerialSumBitForBit) {
  const int n = GetParam();
  for (int64_t count : {int64_t{1}, int64_t{5}, int64_t{1000}}) {
    std::vector<float> want = serialSum(n, count);
    onRanks(n, [&](Communicator& comm) {
      std::vector<float> in = inputOf(comm.rank(), count), out(in.size());
      comm.allReduce(in.data(), out.data(), count, DType::F32, kSite);
      EXPECT_TRUE(sameBits(out, want)) << "rank " << comm.rank() << " count " << count;
      comm.allReduce(in.data(), in.data(), count, DType::F32, kSite);  // in place
      EXPECT_TRUE(sameBits(in, want)) << "in place, rank " << comm.rank();
    });
  }
}

TEST_P(CommLocal, ReduceScatterGivesEachRankItsShardOfTheSum) {
  const int n = GetParam();
  const int64_t k = 37;
  std::vector<float> want = serialSum(n, n * k);
  onRanks(n, [&](Communicator& comm) {
    std::vector<float> in = inputOf(comm.rank(), n * k), out(static_cast<size_t>(k));
    comm.reduceScatter(in.data(), out.data(), k, DType::F32, {"ReduceScatter", "rs"});
    std::vector<float> shard(want.begin() + comm.rank() * k, want.begin() + (comm.rank() + 1) * k);
    EXPECT_TRUE(sameBits(out, shard)) << "rank " << comm.rank();
    // In place: the output is this rank's shard of the input.
    float* mine = in.data() + comm.rank() * k;
    comm.reduceScatter(in.data(), mine, k, DType::F32, {"ReduceScatter", "rs"});
    EXPECT_TRUE(sameBits(std::vector<float>(mine, mine + k), shard)) << "in place";
  });
}

TEST_P(CommLocal, AllGatherConcatenatesInRankOrder) {
  const int n = GetParam();
  const int64_t k = 9;
  std::vector<float> want;
  for (int r = 0; r < n; ++r) {
    std::vector<float> x = inputOf(r, k);
    want.insert(want.end(), x.begin(), x.end());
  }
  onRanks(n, [&](Communicator& comm) {
    std::vector<float> in = inputOf(comm.rank(), k), out(static_cast<size_t>(n * k));
    comm.allGather(in.data(), out.data(), k, DType::F32, {"AllGather", "ag"});
    EXPECT_TRUE(sameBits(out, want)) << "rank " << comm.rank();
    std::vector<float> inplace(static_cast<size_t>(n * k));
    std::copy(in.begin(), in.end(), inplace.begin() + comm.rank() * k);
    comm.allGather(inplace.data() + comm.rank() * k, inplace.data(), k, DType::F32,
                   {"AllGather", "ag"});
    EXPECT_TRUE(sameBits(inplace, want)) << "in place, rank " << comm.rank();
  });
}

TEST_P(CommLocal, BroadcastCopiesTheRootsBuffer) {
  const int n = GetParam();
  const int root = n - 1;
  onRanks(n, [&](Communicator& comm) {
    std::vector<float> buf = inputOf(comm.rank(), 11);
    comm.broadcast(buf.data(), 11, DType::F32, root, {"Broadcast", "b"});
    EXPECT_TRUE(sameBits(buf, inputOf(root, 11))) << "rank " << comm.rank();
    comm.barrier({"barrier", "end"});
  });
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, CommLocal, ::testing::Values(1, 2, 3, 4, 8));

TEST(CommLocalSums, OtherDtypesSumInRankOrder) {
  onRanks(3, [](Communicator& comm) {
    const int64_t big = int64_t{1} << 62;
    std::vector<int64_t> ints = {comm.rank() + 1, big};  // 1+2+3 and a wrapping sum
    comm.allReduce(ints.data(), ints.data(), 2, DType::I64, kSite);
    EXPECT_EQ(ints[0], 6);
    EXPECT_EQ(static_cast<uint64_t>(ints[1]), 3 * static_cast<uint64_t>(big));
    // f16 accumulates in f32 and rounds once: 2048 + 1 + 1 is 2050, not 2048.
    std::vector<uint16_t> half = {floatToHalf(comm.rank() == 0 ? 2048.0f : 1.0f)};
    comm.allReduce(half.data(), half.data(), 1, DType::F16, kSite);
    EXPECT_EQ(halfToFloat(half[0]), 2050.0f);
  });
}

TEST(CommLocalSums, BitIdenticalRunToRun) {
  const int64_t count = 100000;
  std::vector<std::vector<float>> results;
  for (int run = 0; run < 4; ++run) {
    std::vector<float> got;
    std::mutex mu;
    onRanks(8, [&](Communicator& comm) {
      std::vector<float> in = inputOf(comm.rank(), count);
      comm.allReduce(in.data(), in.data(), count, DType::F32, kSite);
      std::lock_guard lk(mu);
      if (comm.rank() == 5) got = in;
    });
    results.push_back(got);
  }
  for (const auto& r : results) EXPECT_TRUE(sameBits(r, results[0]));
  EXPECT_TRUE(sameBits(results[0], serialSum(8, count)));
}

// Errors by rank, and the time the run took.
struct Failure {
  std::vector<std::string> errors;
  double seconds = 0;
};

Failure failingRun(int n, double timeout_s, const RankBody& body,
                   const FaultSpec& fault = FaultSpec{}) {
  auto start = std::chrono::steady_clock::now();
  LaunchResult r = launchRanks(n, {"local", timeout_s, fault}, body);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return {r.errors, s};
}

void allReduceOnce(Communicator& comm) {
  float x = 1;
  comm.allReduce(&x, &x, 1, DType::F32, kSite);
}

TEST(CommLocalFaults, ARankThatThrowsEndsTheOthersAtOnce) {
  Failure f = failingRun(4, 10, [](Communicator& comm) {
    if (comm.rank() == 3) throw makeError("node 'mul' (Mul): boom");
    allReduceOnce(comm);
  });
  ASSERT_EQ(f.errors.size(), 4u);
  for (int r = 0; r < 3; ++r)
    EXPECT_EQ(f.errors[r],
              "rank " + std::to_string(r) + ": AllReduce 'sum': rank 3 failed; missing rank 3");
  EXPECT_EQ(f.errors[3], "rank 3: node 'mul' (Mul): boom");
  EXPECT_LT(f.seconds, 5.0);  // woken by the failure, not by the 10 s timeout
}

TEST(CommLocalFaults, InjectedFaultNamesTheCollective) {
  Failure f = failingRun(3, 2, allReduceOnce, FaultSpec{1, 0, FaultSpec::Mode::Throw});
  ASSERT_EQ(f.errors.size(), 3u);
  EXPECT_EQ(f.errors[1], "rank 1: injected fault (--fault) before AllReduce 'sum'");
  EXPECT_EQ(f.errors[0], "rank 0: AllReduce 'sum': rank 1 failed; missing rank 1");
}

TEST(CommLocalFaults, ARankThatNeverComesIsATimeout) {
  Failure f = failingRun(4, 0.5, [](Communicator& comm) {
    if (comm.rank() == 2)
      std::this_thread::sleep_for(std::chrono::milliseconds(800));
    else
      allReduceOnce(comm);
  });
  ASSERT_EQ(f.errors.size(), 3u) << f.errors[0];  // rank 2 itself finished fine
  for (const std::string& e : f.errors)
    EXPECT_TRUE(contains(e, "AllReduce 'sum': ") && contains(e, "timed out after 0.5 s") &&
                contains(e, "; missing rank 2"))
        << e;
}

TEST(CommLocalFaults, AStuckRankIsAbandoned) {
  auto start = std::chrono::steady_clock::now();
  LaunchResult r =
      launchRanks(2, {"local", 0.3, FaultSpec{1, 0, FaultSpec::Mode::Hang}}, allReduceOnce);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_TRUE(r.must_exit);
  ASSERT_EQ(r.errors.size(), 2u);
  EXPECT_TRUE(contains(r.errors[0], "rank 0: AllReduce 'sum': timed out")) << r.errors[0];
  EXPECT_TRUE(contains(r.errors[1], "rank 1: still running")) << r.errors[1];
  EXPECT_LT(s, 2.0);
}

TEST(CommLocalFaults, ARankThatLeavesEarlyIsNamed) {
  Failure f = failingRun(3, 5, [](Communicator& comm) {
    if (comm.rank() != 0) allReduceOnce(comm);
  });
  ASSERT_EQ(f.errors.size(), 2u);
  EXPECT_EQ(f.errors[0],
            "rank 1: AllReduce 'sum': rank 0 finished without joining (the plans disagree); "
            "missing rank 0");
  EXPECT_LT(f.seconds, 4.0);
}

TEST(CommLocalFaults, DisagreeingRanksFailInsteadOfCorruptingData) {
  Failure f = failingRun(2, 5, [](Communicator& comm) {
    std::vector<float> x(4);
    if (comm.rank() == 0)
      comm.allReduce(x.data(), x.data(), 4, DType::F32, kSite);
    else
      comm.allGather(x.data(), x.data(), 2, DType::F32, {"AllGather", "g"});
  });
  ASSERT_EQ(f.errors.size(), 2u);
  EXPECT_TRUE(contains(f.errors[0],
                       "the ranks' plans disagree: rank 0 is in AllReduce 'sum' "
                       "(f32 x 4), rank 1 is in AllGather 'g' (f32 x 2)"))
      << f.errors[0];
}

// The torchrun-style bootstrap NCCL uses, with threads as ranks on localhost.
TEST(CommTcp, RankZeroSendsTheBlobToEveryRank) {
  const int port = 29600 + static_cast<int>(getpid() % 300);
  std::vector<std::vector<uint8_t>> got(3);
  std::vector<std::thread> ranks;
  for (int r = 0; r < 3; ++r)
    ranks.emplace_back([&, r] {
      TorchrunEnv env{r, 3, r, "127.0.0.1", port};
      std::vector<uint8_t> data;
      if (r == 0) data = {1, 2, 3, 250};
      got[r] = tcpBroadcastFromRank0(env, data, 10);
    });
  for (auto& t : ranks) t.join();
  for (const auto& g : got) EXPECT_EQ(g, (std::vector<uint8_t>{1, 2, 3, 250}));
}

TEST(CommTcp, RankZeroNamesTheRanksThatNeverCame) {
  const int port = 29900 + static_cast<int>(getpid() % 300);
  std::string error;
  std::thread rank1([&] { tcpBroadcastFromRank0({1, 3, 1, "127.0.0.1", port}, {}, 5); });
  try {
    tcpBroadcastFromRank0({0, 3, 0, "127.0.0.1", port}, {7}, 0.5);
  } catch (const Error& e) {
    error = e.what();
  }
  rank1.join();
  EXPECT_TRUE(contains(error, "bootstrap 'MASTER_PORT ")) << error;
  EXPECT_TRUE(contains(error, "timed out after 0.5 s (--comm-timeout); missing rank 2")) << error;
}

TEST(CommUtil, ChunksCoverTheBufferEvenly) {
  EXPECT_EQ(comm::chunkOf(10, 4, 0).count, 3);
  EXPECT_EQ(comm::chunkOf(10, 4, 1).offset, 3);
  EXPECT_EQ(comm::chunkOf(10, 4, 3).offset, 8);
  EXPECT_EQ(comm::chunkOf(10, 4, 3).count, 2);
  EXPECT_EQ(comm::chunkOf(2, 4, 3).count, 0);
  EXPECT_EQ(comm::ranksString({1, 3}), "ranks 1, 3");
}

TEST(CommUtil, FaultSpecParses) {
  FaultSpec f = parseFaultSpec("3:2:kill");
  EXPECT_EQ(f.rank, 3);
  EXPECT_EQ(f.collective, 2);
  EXPECT_EQ(f.mode, FaultSpec::Mode::Kill);
  EXPECT_THROW(parseFaultSpec("3:x:kill"), Error);
  EXPECT_THROW(parseFaultSpec("3:1:explode"), Error);
}

}  // namespace
}  // namespace ds
