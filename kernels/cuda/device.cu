// GPU discovery through the CUDA runtime (see device.h).
#include <cuda_runtime.h>

#include <cstdio>

#include "kernels/cuda/device.h"

namespace ds::cuda {

int deviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return count;
}

std::string unavailableReason() {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return std::string("CUDA reports: ") + cudaGetErrorString(err);
  }
  return count == 0 ? "no CUDA device is visible" : "";
}

std::string describeDevice(int index) {
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, index) != cudaSuccess) {
    cudaGetLastError();
    return "unknown device";
  }
  char gib[32];
  std::snprintf(gib, sizeof(gib), "%.1f GiB",
                static_cast<double>(prop.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0));
  return std::string(prop.name) + ", sm_" + std::to_string(prop.major) +
         std::to_string(prop.minor) + ", " + gib;
}

}  // namespace ds::cuda
