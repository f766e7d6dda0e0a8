// Which device transport a rank of a multi-rank CUDA run uses for the plan's
// collectives (runtime/comm/device_communicator.h), given its host communicator
// (threads of this process, or processes under mpirun):
//  * "nccl": NCCL, one GPU per rank: rank r of a threaded run on GPU r, a process
//    under mpirun on the GPU of its node-local rank;
//  * "local": the local device transport, every rank a thread on GPU 0, for
//    multi-rank plans on a machine with fewer GPUs than ranks (NCCL refuses two
//    ranks on one GPU);
//  * "auto": NCCL when every rank can have a GPU of its own, else local.
#pragma once

#include <memory>
#include <string>

#include "runtime/comm/communicator.h"
#include "runtime/comm/device_communicator.h"

namespace ds::cuda {

std::unique_ptr<DeviceCommunicator> makeDeviceCommunicator(Communicator& host,
                                                           const std::string& choice,
                                                           double timeout_s);

}  // namespace ds::cuda
