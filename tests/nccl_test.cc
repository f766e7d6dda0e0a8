// The NCCL transport on a GPU: one rank bootstrapped over TCP (the torchrun way) and
// one over another communicator (the MPI way), each collective on device buffers.
// One GPU allows one rank (NCCL refuses two ranks on a device); multi-GPU machines
// run the same code per rank. Skipped without a GPU or without NCCL in the build.
#ifdef DS_HAVE_CUDA

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <functional>
#include <vector>

#include "ir/error.h"
#include "kernels/cuda/nccl_communicator.h"
#include "runtime/comm/local_communicator.h"

namespace ds::cuda {
namespace {

bool haveGpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

std::vector<float> roundTrip(const std::vector<float>& host, size_t out_elems,
                             const std::function<void(float*, float*)>& fn) {
  void *in = nullptr, *out = nullptr;
  EXPECT_EQ(cudaMalloc(&in, host.size() * sizeof(float)), cudaSuccess);
  EXPECT_EQ(cudaMalloc(&out, out_elems * sizeof(float)), cudaSuccess);
  cudaMemcpy(in, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice);
  fn(static_cast<float*>(in), static_cast<float*>(out));
  std::vector<float> got(out_elems);
  cudaMemcpy(got.data(), out, out_elems * sizeof(float), cudaMemcpyDeviceToHost);
  cudaFree(in);
  cudaFree(out);
  return got;
}

void checkCollectives(Communicator& c) {
  ASSERT_EQ(c.size(), 1);
  std::vector<float> x = {1.5f, -2.0f, 3.25f, 4.0f};
  auto same = roundTrip(x, 4, [&](float* in, float* out) {
    c.allReduce(in, out, 4, DType::F32, {"AllReduce", "sum"});
  });
  EXPECT_EQ(same, x);
  same = roundTrip(x, 4, [&](float* in, float* out) {
    c.reduceScatter(in, out, 4, DType::F32, {"ReduceScatter", "rs"});
  });
  EXPECT_EQ(same, x);
  same = roundTrip(x, 4, [&](float* in, float* out) {
    c.allGather(in, out, 4, DType::F32, {"AllGather", "ag"});
  });
  EXPECT_EQ(same, x);
  same = roundTrip(x, 4, [&](float* in, float* out) {
    c.broadcast(in, 4, DType::F32, 0, {"Broadcast", "b"});
    cudaMemcpy(out, in, 4 * sizeof(float), cudaMemcpyDeviceToDevice);
  });
  EXPECT_EQ(same, x);
  c.barrier({"barrier", "end"});
}

TEST(Nccl, TorchrunBootstrapAndCollectives) {
  if (!haveNccl() || !haveGpu()) GTEST_SKIP() << "needs NCCL and a GPU";
  TorchrunEnv env;  // rank 0 of 1: no peer to reach
  env.master_addr = "127.0.0.1";
  env.master_port = 29511;
  NcclCommunicator comm(env, 30);
  EXPECT_EQ(comm.kind(), "nccl");
  checkCollectives(comm);
}

TEST(Nccl, BootstrapOverAnotherCommunicator) {
  if (!haveNccl() || !haveGpu()) GTEST_SKIP() << "needs NCCL and a GPU";
  LocalWorld world(1, 30);
  NcclCommunicator comm(world.comm(0), 0, 30);
  checkCollectives(comm);
}

TEST(Nccl, BoolCannotBeSummed) {
  if (!haveNccl() || !haveGpu()) GTEST_SKIP() << "needs NCCL and a GPU";
  LocalWorld world(1, 30);
  NcclCommunicator comm(world.comm(0), 0, 30);
  EXPECT_THROW(comm.allReduce(nullptr, nullptr, 1, DType::Bool, {"AllReduce", "b"}), Error);
}

}  // namespace
}  // namespace ds::cuda

#endif  // DS_HAVE_CUDA
