// The MPI transport: one rank per process under mpirun (Open MPI from Debian).
//
// Collectives are built from nonblocking point-to-point messages polled against
// the timeout, rather than from MPI's blocking collectives, for two reasons:
//  * a dead or stuck peer becomes an error naming it (the ranks whose messages have
//    not arrived) within --comm-timeout, instead of a hang inside MPI;
//  * sums happen here, in rank order, exactly as in the local transport, so MPI and
//    local runs give bit-identical results (MPI's own reductions choose their order).
// AllReduce is a reduce-scatter (rank r receives chunk r from every peer and sums it)
// followed by an all-gather of the sums: 2(N-1)/N of the buffer sent per rank, the
// same volume as a ring. When mpirun ends the job because a peer died, the SIGTERM
// it sends turns into the same one-line error naming the missing ranks.
//
// Built only when CMake finds MPI (DS_HAVE_MPI); otherwise the constructor throws.
#pragma once

#include <memory>
#include <string>

#include "runtime/comm/comm_util.h"
#include "runtime/comm/communicator.h"

namespace ds {

// True when this build has the MPI transport.
bool haveMpi();

class MpiCommunicator : public Communicator {
 public:
  // Initialises MPI (once per process) and takes the rank and size of the job.
  explicit MpiCommunicator(double timeout_s = comm::kDefaultTimeoutSeconds);
  ~MpiCommunicator() override;

  // Clean shutdown after a successful run: a barrier (so a rank that left early is
  // reported, not waited for inside MPI), then MPI_Finalize. Never call it after an
  // error: with a peer gone MPI_Finalize can block, so error paths exit instead.
  void finalize();

  int rank() const override;
  int size() const override;
  std::string kind() const override { return "mpi"; }
  void allReduce(const void* send, void* recv, int64_t count, DType dtype,
                 const CollectiveSite& site) override;
  void reduceScatter(const void* send, void* recv, int64_t recv_count, DType dtype,
                     const CollectiveSite& site) override;
  void allGather(const void* send, void* recv, int64_t send_count, DType dtype,
                 const CollectiveSite& site) override;
  void broadcast(void* buf, int64_t count, DType dtype, int root,
                 const CollectiveSite& site) override;
  void barrier(const CollectiveSite& site) override;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace ds
