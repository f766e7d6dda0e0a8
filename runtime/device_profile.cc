#include "runtime/device_profile.h"

#include "ir/error.h"

namespace ds {

// Sources: NVIDIA H100 Tensor Core GPU datasheet (H100 SXM column): FP16/BF16
// tensor core 1,979 TFLOPS and TF32 989 TFLOPS "with sparsity", so half that
// dense; FP32 67 TFLOPS; FP64 34 TFLOPS; GPU memory bandwidth 3.35 TB/s; NVLink
// 900 GB/s, which is both directions together, so 450 GB/s each way. The
// inter-node link is a ConnectX-7 400 Gb/s (50 GB/s) InfiniBand NIC per GPU as in
// DGX H100. Launch overhead and link latencies are not datasheet figures but the
// usual orders of magnitude: a few microseconds per CUDA kernel, and NCCL's
// per-hop latency of a few microseconds within a node and ~10 us across IB.
// The host is DGX H100's (its user guide): two 56-core Xeon Platinum 8480C at
// 2.0 GHz (AVX-512, two FMA units: 32 f64 FLOPs per cycle per core) and eight
// channels of DDR5-4800 per socket (307 GB/s each), shared by eight GPUs: 0.9
// TFLOP/s and 77 GB/s per GPU. PCIe Gen5 x16: 64 GB/s each way. A host step
// costs a stream callback, ~10 us.
DeviceProfile h100Sxm() {
  DeviceProfile d;
  d.name = "H100 SXM";
  d.fp16_flops = 989e12;
  d.tf32_flops = 494.5e12;
  d.fp32_flops = 67e12;
  d.fp64_flops = 34e12;
  d.hbm_bytes_per_s = 3.35e12;
  d.launch_seconds = 4e-6;
  d.nvlink_bytes_per_s = 450e9;
  d.nvlink_latency_seconds = 3e-6;
  d.network_bytes_per_s = 50e9;
  d.network_latency_seconds = 10e-6;
  d.gpus_per_node = 8;
  d.host_flops = 112 * 2.0e9 * 32 / 8;
  d.host_bytes_per_s = 2 * 307.2e9 / 8;
  d.host_step_seconds = 10e-6;
  d.pcie_bytes_per_s = 64e9;
  return d;
}

std::vector<std::string> deviceProfileNames() {
  return {"h100"};
}

DeviceProfile deviceProfile(const std::string& name) {
  if (name == "h100") return h100Sxm();
  std::string known;
  for (const std::string& n : deviceProfileNames()) known += (known.empty() ? "" : ", ") + n;
  throw makeError("--device '", name, "': unknown device profile (known: ", known, ")");
}

}  // namespace ds
