// Bootstrap over TCP, the way torchrun-style launchers (Slurm, Kubernetes) set ranks
// up: every process knows MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE; rank 0
// listens and sends a small blob (NCCL's unique id) to every other rank. Each rank
// names itself when it connects, so a timeout names the ranks that never came.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ds {

// The torchrun environment; a missing or malformed variable is a ds::Error naming it.
struct TorchrunEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr;
  int master_port = 0;
};
TorchrunEnv torchrunEnvFromEnvironment();

// Rank 0 passes `data` and sends it to ranks 1..world-1; the others pass nothing and
// get it back. Gives up after `timeout_s` with a ds::Error naming the missing ranks
// (rank 0) or the unreachable address (the others).
std::vector<uint8_t> tcpBroadcastFromRank0(const TorchrunEnv& env, std::vector<uint8_t> data,
                                           double timeout_s);

}  // namespace ds
