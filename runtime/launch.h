// Running every rank of a plan: dsrun hands the launcher what one rank does (a
// RankBody given that rank's communicator) and the launcher runs it once per rank:
//  * --comm local: N threads of this process, one LocalWorld between them;
//  * --comm mpi: this process is one rank of `mpirun -np N`, its rank from MPI.
// Either way, a rank that throws makes the others fail fast (never hang), and the
// result lists one line per failed rank for the tool to print before exiting 2.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "runtime/comm/comm_util.h"
#include "runtime/comm/communicator.h"
#include "runtime/comm/fault_injection.h"

namespace ds {

struct LaunchOptions {
  std::string comm = "local";  // "local" or "mpi"
  double timeout_s = comm::kDefaultTimeoutSeconds;
  FaultSpec fault;  // test hook, dsrun --fault
};

// One rank's work; throws ds::Error on failure. Under local, N of them run at once.
using RankBody = std::function<void(Communicator& comm)>;

struct LaunchResult {
  // "rank R: message", in rank order; empty when every rank succeeded.
  std::vector<std::string> errors;
  // A rank thread is stuck outside any collective, or MPI cannot be shut down
  // cleanly with a peer gone: print the errors and leave with std::_Exit.
  bool must_exit = false;
  bool ok() const { return errors.empty(); }
};

// "mpi" when this process was started by mpirun (and the build has MPI), else
// "local": `mpirun -np N dsrun PLAN` then needs no --comm.
std::string defaultComm();

// Runs `body` on each of the plan's `world_size` ranks.
LaunchResult launchRanks(int world_size, const LaunchOptions& options, const RankBody& body);

}  // namespace ds
