#include "kernels/cuda/device_comms.h"

#include <cuda_runtime_api.h>

#include <cstdlib>

#include "ir/error.h"
#include "kernels/cuda/local_device_communicator.h"
#include "kernels/cuda/nccl_communicator.h"

namespace ds::cuda {
namespace {

int visibleGpus() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) return 0;
  return count;
}

// The rank's index among the ranks of its node: launchers say it in the
// environment (Open MPI, torchrun, Slurm); threads of one process are all local.
int nodeLocalRank(const Communicator& host) {
  if (host.kind() == "local") return host.rank();
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "LOCAL_RANK", "SLURM_LOCALID"})
    if (const char* value = std::getenv(name)) return std::atoi(value);
  return host.rank();
}

}  // namespace

std::unique_ptr<DeviceCommunicator> makeDeviceCommunicator(Communicator& host,
                                                           const std::string& choice,
                                                           double timeout_s) {
  DS_CHECK(choice == "auto" || choice == "nccl" || choice == "local", "--device-comm '", choice,
           "': expected auto, nccl or local");
  const int gpus = visibleGpus();
  const int local_rank = nodeLocalRank(host);
  bool nccl = choice == "nccl" || (choice == "auto" && local_rank < gpus &&
                                   (host.kind() != "local" || host.size() <= gpus));
  if (nccl) {
    DS_CHECK(haveNccl(), "--device-comm nccl: this build has no NCCL");
    DS_CHECK(local_rank < gpus, "rank ", host.rank(), " is node-local rank ", local_rank,
             " but this node has ", gpus,
             " GPU(s); NCCL needs one GPU per rank (use --device-comm local to run threads of "
             "one process on one GPU)");
    return std::make_unique<NcclCommunicator>(host, local_rank, timeout_s);
  }
  DS_CHECK(host.kind() == "local",
           "--device-comm local: ranks must be threads of one process "
           "(--comm local), not ",
           host.kind(), " processes");
  return std::make_unique<LocalDeviceCommunicator>(host, 0);
}

}  // namespace ds::cuda
