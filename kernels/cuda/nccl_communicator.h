// The NCCL transport: one rank per GPU; buffers are device pointers. Builds where
// NCCL is (DS_HAVE_NCCL), runs only with GPUs.
//
// Bootstrap: rank 0 makes the ncclUniqueId and sends it to the others, either over
// an existing communicator (MPI under mpirun) or over TCP from the torchrun
// environment (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK), so Slurm and
// Kubernetes launchers work. The communicator is created non-blocking and every call
// is polled against the timeout; on timeout or an asynchronous NCCL error it is
// aborted (ncclCommAbort) and the call throws naming the collective. NCCL does not
// say which peer is missing, so the error says so. Sums follow NCCL's own order:
// results may differ from the CPU transports in the last bits.
//
// One object is both faces of the rank: a Communicator (each call returns when the
// data has arrived: it waits for the stream) and a DeviceCommunicator (each call
// returns once NCCL has enqueued the collective on the given stream; the host waits
// only for NCCL's own enqueueing, which a non-blocking communicator may finish
// after returning ncclInProgress, never for the GPU). rank(), size() and kind()
// are declared by both interfaces with the same signatures: one override serves both.
#pragma once

#include <memory>
#include <string>

#include "runtime/comm/comm_util.h"
#include "runtime/comm/communicator.h"
#include "runtime/comm/device_communicator.h"
#include "runtime/comm/tcp_bootstrap.h"

namespace ds::cuda {

bool haveNccl();

class NcclCommunicator : public Communicator, public DeviceCommunicator {
 public:
  // Bootstraps over `bootstrap` (its rank and size) on GPU `device`.
  NcclCommunicator(Communicator& bootstrap, int device,
                   double timeout_s = comm::kDefaultTimeoutSeconds);
  // Bootstraps over TCP on GPU env.local_rank.
  explicit NcclCommunicator(const TorchrunEnv& env,
                            double timeout_s = comm::kDefaultTimeoutSeconds);
  ~NcclCommunicator() override;

  // The CUDA stream collectives are ordered on (default: the legacy default stream,
  // which orders them after all earlier work of blocking streams).
  void setStream(void* cuda_stream);

  int rank() const override;
  int size() const override;
  std::string kind() const override { return "nccl"; }
  void allReduce(const void* send, void* recv, int64_t count, DType dtype,
                 const CollectiveSite& site) override;
  void reduceScatter(const void* send, void* recv, int64_t recv_count, DType dtype,
                     const CollectiveSite& site) override;
  void allGather(const void* send, void* recv, int64_t send_count, DType dtype,
                 const CollectiveSite& site) override;
  void broadcast(void* buf, int64_t count, DType dtype, int root,
                 const CollectiveSite& site) override;
  void barrier(const CollectiveSite& site) override;

  // DeviceCommunicator: enqueued on `stream` (a cudaStream_t on device()).
  int device() const override;
  bool capturable() const override;
  void allReduce(const void* send, void* recv, int64_t count, DType dtype, void* stream,
                 const CollectiveSite& site) override;
  void reduceScatter(const void* send, void* recv, int64_t recv_count, DType dtype, void* stream,
                     const CollectiveSite& site) override;
  void allGather(const void* send, void* recv, int64_t send_count, DType dtype, void* stream,
                 const CollectiveSite& site) override;
  void broadcast(void* buf, int64_t count, DType dtype, int root, void* stream,
                 const CollectiveSite& site) override;

 private:
  struct State;
  void init(int rank, int size, int device, const std::string& id, double timeout_s);
  std::unique_ptr<State> s_;
};

}  // namespace ds::cuda
