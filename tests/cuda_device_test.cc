// The CUDA build links and answers on any machine; GPU tests skip without a GPU.
#include <gtest/gtest.h>

#ifdef DS_HAVE_CUDA
#include "kernels/cuda/device.h"

TEST(CudaDevice, ReportsDevicesOrAReason) {
  int count = ds::cuda::deviceCount();
  if (count == 0) {
    EXPECT_FALSE(ds::cuda::unavailableReason().empty());
    GTEST_SKIP() << "no GPU visible: " << ds::cuda::unavailableReason();
  }
  EXPECT_TRUE(ds::cuda::unavailableReason().empty());
  EXPECT_NE(ds::cuda::describeDevice(0).find("sm_"), std::string::npos);
}
#else
TEST(CudaDevice, ReportsDevicesOrAReason) {
  GTEST_SKIP() << "built without CUDA (DS_ENABLE_CUDA=OFF or no nvcc)";
}
#endif
