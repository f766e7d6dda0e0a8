#include "runtime/launch.h"

#include <omp.h>

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <sstream>
#include <thread>

#include "ir/error.h"
#include "runtime/comm/local_communicator.h"
#include "runtime/comm/mpi_communicator.h"

namespace ds {
namespace {

std::string rankError(int rank, const std::string& what) {
  return "rank " + std::to_string(rank) + ": " + what;
}

// Runs body, returning "" or its error; a non-ds exception is reported, not lost.
std::string runCaught(const RankBody& body, Communicator& comm) {
  try {
    body(comm);
    return "";
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("internal error: ") + e.what();
  }
}

// Ranks on one machine share its cores: each gets its share of OpenMP threads, so
// N ranks do not start N times the machine's threads.
void shareCores(int ranks_on_this_machine) {
  if (ranks_on_this_machine <= 1 || std::getenv("OMP_NUM_THREADS")) return;
  omp_set_num_threads(std::max(1, omp_get_max_threads() / ranks_on_this_machine));
}

// What the rank threads share with the launching thread. Held by shared_ptr, since a
// stuck thread is detached and may outlive launchRanks.
struct LocalRun {
  LocalRun(int n, double timeout_s) : world(n, timeout_s), errors(static_cast<size_t>(n)) {}
  LocalWorld world;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> errors;
  std::vector<char> exited;
  int running = 0;
  bool any_failed = false;
};

LaunchResult launchLocal(int n, const LaunchOptions& o, const RankBody& body) {
  auto run = std::make_shared<LocalRun>(n, o.timeout_s);
  run->exited.assign(static_cast<size_t>(n), 0);
  run->running = n;
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r)
    threads.emplace_back([run, r, n, &o, &body] {
      shareCores(n);  // OpenMP settings are per thread: each rank thread sets its own
      std::unique_ptr<Communicator> comm = withFault(run->world.comm(r), o.fault);
      std::string error = runCaught(body, *comm);
      // Tell the world first, so ranks waiting for this one wake up at once.
      if (error.empty())
        run->world.finish(r);
      else
        run->world.fail(r);
      std::lock_guard lk(run->mu);
      run->errors[static_cast<size_t>(r)] = error;
      run->exited[static_cast<size_t>(r)] = 1;
      run->any_failed |= !error.empty();
      --run->running;
      run->cv.notify_all();
    });
  LaunchResult result;
  {
    std::unique_lock lk(run->mu);
    run->cv.wait(lk, [&] { return run->running == 0 || run->any_failed; });
    // After a failure the others stop at their next collective; a rank that never
    // reaches one within the timeout is stuck, and is abandoned rather than waited on.
    run->cv.wait_until(lk, comm::deadlineAfter(o.timeout_s), [&] { return run->running == 0; });
    for (int r = 0; r < n; ++r) {
      if (!run->exited[static_cast<size_t>(r)]) {
        std::ostringstream os;
        os << "still running " << o.timeout_s
           << " s (--comm-timeout) after the run failed, outside any collective; abandoned";
        result.errors.push_back(rankError(r, os.str()));
        result.must_exit = true;
      } else if (!run->errors[static_cast<size_t>(r)].empty()) {
        result.errors.push_back(rankError(r, run->errors[static_cast<size_t>(r)]));
      }
    }
  }
  for (int r = 0; r < n; ++r) {
    if (run->exited[static_cast<size_t>(r)])
      threads[static_cast<size_t>(r)].join();
    else
      threads[static_cast<size_t>(r)].detach();
  }
  return result;
}

// Open MPI tells each process how many ranks share its machine.
int localRanksUnderMpi() {
  const char* v = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  return v ? std::max(1, std::atoi(v)) : 1;
}

LaunchResult launchMpi(int n, const LaunchOptions& o, const RankBody& body) {
  MpiCommunicator mpi(o.timeout_s);
  LaunchResult result;
  // From here on an error leaves MPI unfinalized: a peer may be gone, and
  // MPI_Finalize would wait for it.
  result.must_exit = true;
  if (mpi.size() != n) {
    result.errors.push_back(
        rankError(mpi.rank(), "--comm mpi: the plan has " + std::to_string(n) +
                                  " ranks but mpirun started " + std::to_string(mpi.size()) +
                                  " processes (use mpirun -np " + std::to_string(n) + ")"));
    return result;
  }
  shareCores(localRanksUnderMpi());
  std::unique_ptr<Communicator> comm = withFault(mpi, o.fault);
  std::string error = runCaught(body, *comm);
  if (error.empty()) error = runCaught([&](Communicator&) { mpi.finalize(); }, mpi);
  if (!error.empty()) {
    result.errors.push_back(rankError(mpi.rank(), error));
    return result;
  }
  result.must_exit = false;
  return result;
}

}  // namespace

std::string defaultComm() {
  bool under_mpirun = std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMIX_RANK");
  return under_mpirun && haveMpi() ? "mpi" : "local";
}

LaunchResult launchRanks(int world_size, const LaunchOptions& options, const RankBody& body) {
  DS_CHECK(world_size >= 1, "the plan has no ranks");
  if (options.comm == "local") return launchLocal(world_size, options, body);
  if (options.comm == "mpi") return launchMpi(world_size, options, body);
  throw makeError("--comm '", options.comm, "': expected local or mpi");
}

}  // namespace ds
