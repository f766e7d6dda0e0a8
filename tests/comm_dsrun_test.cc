// dsrun on a hand-written 4-rank plan with every collective: rank r scales the
// input by r+1, then AllReduce, ReduceScatter + AllGather and Broadcast. Run as 4
// local threads and as 4 MPI processes, the outputs are the serial computation's,
// bit for bit. Fault tests: a rank that throws, dies (SIGKILL, under mpirun) or
// hangs makes every other rank exit with one line naming the collective and the
// missing rank within the timeout, and dsrun/mpirun exit non-zero.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>

#include "ir/plan.h"
#include "ir/text.h"
#include "ir/verifier.h"
#include "passes/lower_to_plan.h"
#include "passes/memory_plan.h"
#include "runtime/comm/mpi_communicator.h"
#include "runtime/npy.h"
#include "tests/test_util.h"
#include "tests/training_fixtures.h"

namespace ds {
namespace {

using test::contains;

constexpr int kRanks = 4;

const char* kGraph = R"(graph collectives {
  input %x : f32[4,3]
  const %c0 : f32[] = [1.0]
  const %c1 : f32[] = [2.0]
  const %c2 : f32[] = [3.0]
  const %c3 : f32[] = [4.0]
  %y = Mul(%x, %c0) : f32[4,3] @scale
  %z = AllReduce(%y) {world_size = 4} : f32[4,3] @sum
  %s = ReduceScatter(%y) {world_size = 4} : f32[1,3] @shard
  %g = AllGather(%s) {world_size = 4} : f32[4,3] @gather
  %b = Broadcast(%y) {world_size = 4, root = 2} : f32[4,3] @bcast
  return %z, %g, %b
})";

int tensorIndex(const PlanFile& plan, const std::string& name) {
  for (int i = 0; i < plan.plan.tensors_size(); ++i)
    if (plan.plan.tensors(i).name() == name) return i;
  ADD_FAILURE() << "no tensor " << name;
  return -1;
}

// The plan, with rank r's Mul reading c<r>, and the feed, written once per process.
struct Fixture {
  std::string plan_path, feed_path;
  Tensor x;
};

const Fixture& fixture() {
  static const Fixture f = [] {
    auto g = parseGraph(kGraph);
    verifyGraph(*g);
    LowerOptions lower;
    lower.world_size = kRanks;
    PlanFile plan = lowerToPlan(*g, planMemory(*g), lower);
    for (int r = 0; r < kRanks; ++r)
      for (auto& step : *plan.plan.mutable_ranks(r)->mutable_steps())
        if (step.node() == "scale") step.set_inputs(1, tensorIndex(plan, "c" + std::to_string(r)));
    Fixture out;
    out.plan_path = test::scratch("collectives4.plan");
    writePlanFile(out.plan_path, plan);
    out.x = Tensor({DType::F32, {4, 3}});
    for (int64_t i = 0; i < 12; ++i) out.x.setDouble(i, 0.1 * static_cast<double>(i) - 0.37);
    out.feed_path = test::scratch("collectives4_x.npy");
    writeNpy(out.feed_path, out.x);
    return out;
  }();
  return f;
}

std::string dsrun(const std::string& out_dir, const std::string& extra = "") {
  const Fixture& f = fixture();
  return test::binary("dsrun") + " " + f.plan_path + " --feed x=" + f.feed_path +
         (out_dir.empty() ? "" : " --dump-outputs " + out_dir) + " " + extra;
}

// No --comm: under mpirun dsrun picks the MPI transport itself.
std::string mpirun(const std::string& command) {
  return test::mpirunPrefix(kRanks) + command;
}

// Under mpirun with each rank's stderr in its own file, read back in rank order:
// when a job aborts, mpirun may drop the last lines it forwards from a rank (Open MPI
// 4.1), while the files always hold what each rank said.
test::CommandResult mpirunToFiles(const std::string& dsrun_command, const std::string& name,
                                  int np = kRanks) {
  std::string dir = test::tempPath(name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::string cmd = dsrun_command + " --comm mpi 2>" + dir + "/err.$OMPI_COMM_WORLD_RANK";
  test::CommandResult r = test::runCommand(test::mpirunPrefix(np) + "sh -c 'exec " + cmd + "'");
  for (int rank = 0; rank < np; ++rank) {
    std::ifstream in(dir + "/err." + std::to_string(rank));
    r.output += std::string(std::istreambuf_iterator<char>(in), {});
  }
  return r;
}

// The outputs rank 0 writes must be the serial computation's, bit for bit.
void expectSerialResults(const std::string& dir) {
  const Tensor& x = fixture().x;
  std::vector<float> sum(12), bcast(12);
  for (int64_t i = 0; i < 12; ++i) {
    float xi = static_cast<float>(x.getDouble(i));
    sum[i] = ((xi * 1.0f + xi * 2.0f) + xi * 3.0f) + xi * 4.0f;  // rank order
    bcast[i] = xi * 3.0f;                                        // root 2
  }
  auto bits = [&](const std::string& name, const std::vector<float>& want) {
    Tensor got = readNpy(dir + "/" + name + ".npy");
    ASSERT_EQ(got.bytes(), want.size() * sizeof(float)) << name;
    EXPECT_EQ(std::memcmp(got.raw(), want.data(), got.bytes()), 0) << name;
  };
  bits("z", sum);
  bits("g", sum);  // reduce-scatter then all-gather sums in the same order
  bits("b", bcast);
}

struct Timed {
  test::CommandResult result;
  double seconds;
};

Timed timed(const std::function<test::CommandResult()>& run) {
  auto start = std::chrono::steady_clock::now();
  test::CommandResult r = run();
  return {r, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()};
}

TEST(CommDsrun, CollectivesRoundTripThroughTextAndPlan) {
  auto g = parseGraph(kGraph);
  verifyGraph(*g);
  std::string text = printGraph(*g);
  EXPECT_EQ(printGraph(*parseGraph(text)), text);
  EXPECT_TRUE(contains(text, "Broadcast(%y) {root = 2, world_size = 4}")) << text;
  std::string dump = printPlan(readPlanFile(fixture().plan_path));
  EXPECT_TRUE(contains(dump, "AllReduce")) << dump;
}

TEST(CommDsrun, LocalRanksGiveTheSerialResult) {
  std::string dir = test::scratch("collectives4_local");
  test::CommandResult r = test::runCommand(dsrun(dir));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "steps of rank 0")) << r.output;
  expectSerialResults(dir);
}

TEST(CommDsrun, MpiRanksGiveTheSameResultAsLocal) {
  if (!test::haveMpirun()) GTEST_SKIP() << "no MPI in this build or no mpirun";
  std::string dir = test::scratch("collectives4_mpi");
  test::CommandResult r = test::runCommand(mpirun(dsrun(dir)));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  expectSerialResults(dir);
}

// --backend cuda runs the ranks as well: on a machine with a GPU as threads
// sharing it (the local device transport, whose sums are the serial ones bit for
// bit); without one, one line says so instead of silently running on the CPU.
TEST(CommDsrun, SeveralRanksOnTheCudaBackend) {
  std::string dir = test::scratch("collectives4_cuda");
  test::CommandResult r = test::runCommand(dsrun(dir, "--backend cuda --device-comm local"));
  if (contains(r.output, "--backend cuda: no usable GPU") ||
      contains(r.output, "--backend cuda: this dsrun was built without CUDA")) {
    test::expectOneLineError(r, "--backend cuda");
    std::cout << "no GPU: only the one-line error was checked: " << r.output;  // for gpu_check
    return;
  }
  ASSERT_EQ(r.exit_code, 0) << r.output;
  expectSerialResults(dir);
}

TEST(CommDsrun, WrongProcessCountIsOneLine) {
  if (!test::haveMpirun()) GTEST_SKIP() << "no MPI in this build or no mpirun";
  test::CommandResult r = mpirunToFiles(dsrun(""), "mpi_np2", 2);
  EXPECT_NE(r.exit_code, 0);
  for (int rank = 0; rank < 2; ++rank)
    EXPECT_TRUE(contains(r.output, "dsrun: error: rank " + std::to_string(rank) +
                                       ": --comm mpi: the plan has 4 ranks but mpirun started "
                                       "2 processes (use mpirun -np 4)"))
        << r.output;
}

void expectOthersName(const std::string& output, int dead, const std::string& collective) {
  for (int r = 0; r < kRanks; ++r) {
    if (r == dead) continue;
    std::string prefix = "dsrun: error: rank " + std::to_string(r) + ": " + collective;
    size_t at = output.find(prefix);
    ASSERT_NE(at, std::string::npos) << output;
    std::string line = output.substr(at, output.find('\n', at) - at);
    EXPECT_TRUE(contains(line, "missing rank " + std::to_string(dead))) << line;
  }
}

TEST(CommDsrun, LocalRankThatThrowsStopsTheOthersAtOnce) {
  Timed t =
      timed([] { return test::runCommand(dsrun("", "--comm-timeout 10 --fault 3:0:throw")); });
  EXPECT_EQ(t.result.exit_code, 2) << t.result.output;
  expectOthersName(t.result.output, 3, "AllReduce 'sum': rank 3 failed");
  EXPECT_TRUE(contains(t.result.output,
                       "dsrun: error: rank 3: injected fault (--fault) before AllReduce 'sum'"))
      << t.result.output;
  EXPECT_LT(t.seconds, 5.0);  // woken by the failure, not by the 10 s timeout
}

TEST(CommDsrun, LocalRankThatHangsIsATimeout) {
  // Rank 1 hangs in its second collective, the ReduceScatter 'shard'.
  Timed t = timed([] { return test::runCommand(dsrun("", "--comm-timeout 1 --fault 1:1:hang")); });
  EXPECT_EQ(t.result.exit_code, 2) << t.result.output;
  expectOthersName(t.result.output, 1, "ReduceScatter 'shard': ");
  EXPECT_TRUE(contains(t.result.output, "timed out after 1 s (--comm-timeout)"));
  EXPECT_TRUE(contains(t.result.output, "dsrun: error: rank 1: still running"));
  EXPECT_LT(t.seconds, 10.0);
}

TEST(CommDsrun, MpiRankThatDiesStopsTheOthers) {
  if (!test::haveMpirun()) GTEST_SKIP() << "no MPI in this build or no mpirun";
  Timed t = timed(
      [] { return mpirunToFiles(dsrun("", "--comm-timeout 2 --fault 3:0:kill"), "mpi_kill"); });
  EXPECT_NE(t.result.exit_code, 0) << t.result.output;
  expectOthersName(t.result.output, 3, "AllReduce 'sum': ");
  EXPECT_LT(t.seconds, 30.0);
}

TEST(CommDsrun, MpiRankThatHangsIsATimeout) {
  if (!test::haveMpirun()) GTEST_SKIP() << "no MPI in this build or no mpirun";
  Timed t = timed(
      [] { return mpirunToFiles(dsrun("", "--comm-timeout 2 --fault 2:0:hang"), "mpi_hang"); });
  EXPECT_NE(t.result.exit_code, 0) << t.result.output;
  // The first rank to time out exits; mpirun then ends the others, which say so.
  expectOthersName(t.result.output, 2, "AllReduce 'sum': ");
  EXPECT_TRUE(contains(t.result.output, "timed out after 2 s (--comm-timeout); missing rank 2"))
      << t.result.output;
  EXPECT_LT(t.seconds, 30.0);
}

}  // namespace
}  // namespace ds
