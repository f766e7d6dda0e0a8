// GPU discovery for the CUDA backend. Builds wherever nvcc is found; the
// functions answer honestly on machines without a GPU or driver.
#pragma once

#include <string>

namespace ds::cuda {

// Number of visible CUDA devices; 0 when there is no GPU or no driver.
int deviceCount();
// Why no GPU can be used ("no CUDA driver", ...), or "" when one can.
std::string unavailableReason();
// "NVIDIA H100 80GB HBM3, sm_90, 79.1 GiB" for device `index`.
std::string describeDevice(int index);

}  // namespace ds::cuda
