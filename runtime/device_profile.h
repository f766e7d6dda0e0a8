// What the cost model knows about a GPU and its interconnect: peak arithmetic
// rates, memory bandwidth, kernel launch overhead and the bandwidth and latency of
// the links a collective crosses. The numbers are datasheet peaks (and a few
// measured-order latencies), so predictions are lower bounds on real step times;
// docs/cost_model.md says how they are used.
#pragma once

#include <string>
#include <vector>

namespace ds {

struct DeviceProfile {
  std::string name;
  double fp16_flops = 0;  // dense tensor-core FLOP/s, fp16 and bf16
  double tf32_flops = 0;  // dense tensor-core FLOP/s, tf32
  double fp32_flops = 0;  // CUDA-core FLOP/s, fp32
  double fp64_flops = 0;  // CUDA-core FLOP/s, fp64
  double hbm_bytes_per_s = 0;
  double launch_seconds = 0;           // per kernel: launch and tail
  double nvlink_bytes_per_s = 0;       // per GPU, per direction
  double nvlink_latency_seconds = 0;   // per ring hop
  double network_bytes_per_s = 0;      // inter-node, per GPU, per direction
  double network_latency_seconds = 0;  // per ring hop
  int gpus_per_node = 1;
  // The host, for optimizer offload: one GPU's share of the node's CPU cores
  // (f64 FLOP/s, a conservative rate for the host's f32 updates) and memory bandwidth, the PCIe
  // link between that GPU and host memory (per direction) and the cost of one host step (a callback
  // the stream runs).
  double host_flops = 0;
  double host_bytes_per_s = 0;
  double host_step_seconds = 0;
  double pcie_bytes_per_s = 0;
};

// NVIDIA H100 SXM5 80 GB in an 8-GPU HGX node with one 400 Gb/s NIC per GPU.
DeviceProfile h100Sxm();

// The profile `name` ("h100"); an unknown name is a ds::Error listing the known ones.
DeviceProfile deviceProfile(const std::string& name);
std::vector<std::string> deviceProfileNames();

}  // namespace ds
