// The device communicators (runtime/comm/device_communicator.h). The local device
// transport at world sizes 1-4, its ranks threads sharing the GPU, each on its own
// non-blocking stream: every collective, in place and out of place, in f32, f16,
// bf16 and i64, with counts the world size does not divide, against the host
// LocalCommunicator on the same data, bit for bit (both sum in rank order); ranks
// that disagree; and 50 back-to-back collectives on reused buffers with no host
// synchronisation, which fail if a rank overwrites a buffer a peer still reads or
// reads a peer's buffer before it is written. NCCL's device face on one rank.
// Inputs are uploaded on the rank's stream right before each collective and
// results downloaded on it right after, so only the collective's own event
// ordering keeps the ranks' streams apart. Without a GPU only the construction
// errors run; the rest skip.
#ifdef DS_HAVE_CUDA

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "ir/error.h"
#include "ir/float16.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/local_device_communicator.h"
#include "kernels/cuda/local_device_kernels.h"
#include "kernels/cuda/nccl_communicator.h"
#include "runtime/comm/local_communicator.h"
#include "runtime/launch.h"
#include "tests/test_util.h"

namespace ds::cuda {
namespace {

using test::contains;
using Bytes = std::vector<uint8_t>;

#define SKIP_WITHOUT_GPU()                                         \
  do {                                                             \
    if (std::string why = cuda::unavailableReason(); !why.empty()) \
      GTEST_SKIP() << "no GPU: " << why;                           \
  } while (0)

void cudaOk(cudaError_t rc, const char* what) {
  if (rc != cudaSuccess) throw makeError(what, ": ", cudaGetErrorString(rc));
}

class DeviceBytes {
 public:
  explicit DeviceBytes(size_t n) { cudaOk(cudaMalloc(&p_, n ? n : 1), "cudaMalloc"); }
  ~DeviceBytes() { cudaFree(p_); }
  DeviceBytes(const DeviceBytes&) = delete;
  DeviceBytes& operator=(const DeviceBytes&) = delete;
  uint8_t* get() const { return static_cast<uint8_t*>(p_); }

 private:
  void* p_ = nullptr;
};

// Pinned host memory: copies from and to it are truly asynchronous, so a test can
// enqueue many collectives without the host ever waiting for the GPU.
class PinnedBytes {
 public:
  explicit PinnedBytes(size_t n) { cudaOk(cudaMallocHost(&p_, n ? n : 1), "cudaMallocHost"); }
  ~PinnedBytes() { cudaFreeHost(p_); }
  PinnedBytes(const PinnedBytes&) = delete;
  PinnedBytes& operator=(const PinnedBytes&) = delete;
  uint8_t* get() const { return static_cast<uint8_t*>(p_); }

 private:
  void* p_ = nullptr;
};

// A rank's stream, non-blocking so that nothing orders it implicitly with the
// legacy default stream or with the other ranks' streams.
class Stream {
 public:
  Stream() { cudaOk(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking), "cudaStreamCreate"); }
  ~Stream() { cudaStreamDestroy(s_); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return s_; }
  void* handle() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

// Enqueued on `s`; pageable memory is staged before the call returns.
void upload(const Bytes& host, uint8_t* dev, const Stream& s) {
  cudaOk(cudaMemcpyAsync(dev, host.data(), host.size(), cudaMemcpyHostToDevice, s.get()), "upload");
}

// Enqueued on `s` after everything before it, then waited for.
Bytes download(const uint8_t* dev, size_t n, const Stream& s) {
  Bytes host(n);
  cudaOk(cudaMemcpyAsync(host.data(), dev, n, cudaMemcpyDeviceToHost, s.get()), "download");
  cudaOk(cudaStreamSynchronize(s.get()), "cudaStreamSynchronize");
  return host;
}

// Rank r's i-th input: varied magnitudes and signs, so that another summation
// order or a second rounding would change low bits; i64 spans the whole range,
// so its sums wrap.
Bytes inputOf(DType t, int r, int64_t n, int salt) {
  Bytes out(static_cast<size_t>(n) * dtypeSize(t));
  for (int64_t i = 0; i < n; ++i) {
    uint64_t x = (static_cast<uint64_t>(r) * 1000003u + static_cast<uint64_t>(i) +
                  static_cast<uint64_t>(salt) * 7919u) *
                 6364136223846793005ull;
    x ^= x >> 29;
    float f = static_cast<float>(static_cast<double>(x >> 40) / (1 << 24) - 0.5) *
              static_cast<float>(1 << (i % 7)) * 1.37f;
    uint8_t* p = out.data() + static_cast<size_t>(i) * dtypeSize(t);
    if (t == DType::F32) {
      std::memcpy(p, &f, 4);
    } else if (t == DType::F16 || t == DType::BF16) {
      uint16_t h = t == DType::F16 ? floatToHalf(f) : floatToBf16(f);
      std::memcpy(p, &h, 2);
    } else {
      std::memcpy(p, &x, 8);
    }
  }
  return out;
}

std::string describe(DType t, int rank, int64_t count, const std::string& what) {
  return what + ", " + std::string(dtypeName(t)) + " x " + std::to_string(count) + ", rank " +
         std::to_string(rank);
}

// Compares element by element so that a failure names the first bad element.
void expectSameBits(const Bytes& got, const Bytes& want, DType t, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  const size_t es = dtypeSize(t);
  for (size_t i = 0; i < got.size() / es; ++i) {
    if (std::memcmp(got.data() + i * es, want.data() + i * es, es) != 0) {
      uint64_t g = 0, w = 0;
      std::memcpy(&g, got.data() + i * es, es);
      std::memcpy(&w, want.data() + i * es, es);
      ADD_FAILURE() << what << ": element " << i << " has bits 0x" << std::hex << g
                    << ", the host transport's 0x" << w;
      return;
    }
  }
}

// Runs `body` on n rank threads over a LocalWorld (launchRanks); a rank that
// throws fails the test with its one-line error.
void onRanks(int n, const RankBody& body) {
  LaunchResult r = launchRanks(n, {"local", 60, FaultSpec{}}, body);
  for (const std::string& e : r.errors) ADD_FAILURE() << e;
}

const std::vector<DType> kDTypes = {DType::F32, DType::F16, DType::BF16, DType::I64};

void checkAllReduce(Communicator& host, DeviceCommunicator& dev, const Stream& s, DType t,
                    int64_t count) {
  const size_t bytes = static_cast<size_t>(count) * dtypeSize(t);
  const Bytes in = inputOf(t, host.rank(), count, 1);
  Bytes want(bytes);
  host.allReduce(in.data(), want.data(), count, t, {"AllReduce", "host"});
  DeviceBytes send(bytes), recv(bytes);
  upload(in, send.get(), s);
  dev.allReduce(send.get(), recv.get(), count, t, s.handle(), {"AllReduce", "out of place"});
  expectSameBits(download(recv.get(), bytes, s), want, t,
                 describe(t, host.rank(), count, "AllReduce out of place"));
  expectSameBits(download(send.get(), bytes, s), in, t,
                 describe(t, host.rank(), count, "AllReduce's input"));
  upload(in, send.get(), s);
  dev.allReduce(send.get(), send.get(), count, t, s.handle(), {"AllReduce", "in place"});
  expectSameBits(download(send.get(), bytes, s), want, t,
                 describe(t, host.rank(), count, "AllReduce in place"));
}

void checkReduceScatter(Communicator& host, DeviceCommunicator& dev, const Stream& s, DType t,
                        int64_t recv_count) {
  const size_t shard = static_cast<size_t>(recv_count) * dtypeSize(t);
  const size_t bytes = shard * static_cast<size_t>(host.size());
  const Bytes in = inputOf(t, host.rank(), recv_count * host.size(), 2);
  Bytes want(shard);
  host.reduceScatter(in.data(), want.data(), recv_count, t, {"ReduceScatter", "host"});
  DeviceBytes send(bytes), recv(shard);
  upload(in, send.get(), s);
  dev.reduceScatter(send.get(), recv.get(), recv_count, t, s.handle(),
                    {"ReduceScatter", "out of place"});
  expectSameBits(download(recv.get(), shard, s), want, t,
                 describe(t, host.rank(), recv_count, "ReduceScatter out of place"));
  upload(in, send.get(), s);
  uint8_t* own = send.get() + static_cast<size_t>(host.rank()) * shard;
  dev.reduceScatter(send.get(), own, recv_count, t, s.handle(), {"ReduceScatter", "in place"});
  expectSameBits(download(own, shard, s), want, t,
                 describe(t, host.rank(), recv_count, "ReduceScatter in place"));
}

void checkAllGather(Communicator& host, DeviceCommunicator& dev, const Stream& s, DType t,
                    int64_t send_count) {
  const size_t shard = static_cast<size_t>(send_count) * dtypeSize(t);
  const size_t bytes = shard * static_cast<size_t>(host.size());
  const Bytes in = inputOf(t, host.rank(), send_count, 3);
  Bytes want(bytes);
  host.allGather(in.data(), want.data(), send_count, t, {"AllGather", "host"});
  DeviceBytes send(shard), recv(bytes);
  upload(in, send.get(), s);
  cudaOk(cudaMemsetAsync(recv.get(), 0xab, bytes, s.get()), "cudaMemsetAsync");
  dev.allGather(send.get(), recv.get(), send_count, t, s.handle(), {"AllGather", "out of place"});
  expectSameBits(download(recv.get(), bytes, s), want, t,
                 describe(t, host.rank(), send_count, "AllGather out of place"));
  uint8_t* own = recv.get() + static_cast<size_t>(host.rank()) * shard;
  cudaOk(cudaMemsetAsync(recv.get(), 0xcd, bytes, s.get()), "cudaMemsetAsync");
  upload(in, own, s);
  dev.allGather(own, recv.get(), send_count, t, s.handle(), {"AllGather", "in place"});
  expectSameBits(download(recv.get(), bytes, s), want, t,
                 describe(t, host.rank(), send_count, "AllGather in place"));
}

void checkBroadcast(Communicator& host, DeviceCommunicator& dev, const Stream& s, DType t,
                    int64_t count) {
  const int root = host.size() - 1;  // not rank 0 where there is another
  const size_t bytes = static_cast<size_t>(count) * dtypeSize(t);
  Bytes want = inputOf(t, host.rank(), count, 4);  // every rank's differs
  DeviceBytes buf(bytes);
  upload(want, buf.get(), s);
  host.broadcast(want.data(), count, t, root, {"Broadcast", "host"});
  dev.broadcast(buf.get(), count, t, root, s.handle(), {"Broadcast", "from the last rank"});
  expectSameBits(download(buf.get(), bytes, s), want, t,
                 describe(t, host.rank(), count, "Broadcast from rank " + std::to_string(root)));
}

class CudaCommLocal : public ::testing::TestWithParam<int> {};

TEST_P(CudaCommLocal, AllReduceMatchesTheHostTransport) {
  SKIP_WITHOUT_GPU();
  onRanks(GetParam(), [](Communicator& host) {
    LocalDeviceCommunicator dev(host, 0);
    Stream s;
    for (DType t : kDTypes)
      for (int64_t count : {int64_t{1}, int64_t{1001}, int64_t{100003}})
        checkAllReduce(host, dev, s, t, count);
  });
}

TEST_P(CudaCommLocal, ReduceScatterMatchesTheHostTransport) {
  SKIP_WITHOUT_GPU();
  onRanks(GetParam(), [](Communicator& host) {
    LocalDeviceCommunicator dev(host, 0);
    Stream s;
    for (DType t : kDTypes)
      for (int64_t count : {int64_t{1}, int64_t{333}}) checkReduceScatter(host, dev, s, t, count);
  });
}

TEST_P(CudaCommLocal, AllGatherMatchesTheHostTransport) {
  SKIP_WITHOUT_GPU();
  onRanks(GetParam(), [](Communicator& host) {
    LocalDeviceCommunicator dev(host, 0);
    Stream s;
    for (DType t : kDTypes)
      for (int64_t count : {int64_t{1}, int64_t{333}}) checkAllGather(host, dev, s, t, count);
  });
}

TEST_P(CudaCommLocal, BroadcastMatchesTheHostTransport) {
  SKIP_WITHOUT_GPU();
  onRanks(GetParam(), [](Communicator& host) {
    LocalDeviceCommunicator dev(host, 0);
    EXPECT_EQ(dev.kind(), "local-device");
    EXPECT_EQ(dev.device(), 0);
    EXPECT_FALSE(dev.capturable());
    EXPECT_EQ(dev.rank(), host.rank());
    EXPECT_EQ(dev.size(), host.size());
    Stream s;
    for (DType t : kDTypes) checkBroadcast(host, dev, s, t, 1001);
  });
}

// 50 collectives enqueued back to back on the same two buffers, inputs uploaded
// from and results downloaded to pinned memory on the stream, with no host wait
// until the end: a peer still reading a buffer that the next upload or sum
// overwrites (the `done` events), or reading one before its upload (the `ready`
// events), or an AllReduce copying a chunk before its sum (the `reduced` events),
// changes results. Large buffers keep each kernel running long enough to overlap.
TEST_P(CudaCommLocal, BackToBackCollectivesOnReusedBuffers) {
  SKIP_WITHOUT_GPU();
  constexpr int kSteps = 50;
  const DType t = DType::F32;
  onRanks(GetParam(), [&](Communicator& host) {
    const int n = host.size();
    const int64_t k = 40009, count = k * n + (n > 1 ? 1 : 0);  // AllReduce's not divisible
    const size_t bytes = static_cast<size_t>(count) * 4;
    LocalDeviceCommunicator dev(host, 0);
    Stream s;
    DeviceBytes a(bytes), b(bytes);
    PinnedBytes inputs(bytes * kSteps), results(bytes * kSteps);
    std::vector<Bytes> want(kSteps);
    std::vector<size_t> result_bytes(kSteps);
    for (int step = 0; step < kSteps; ++step) {
      const Bytes in = inputOf(t, host.rank(), count, 100 + step);
      uint8_t* staged = inputs.get() + static_cast<size_t>(step) * bytes;
      std::memcpy(staged, in.data(), bytes);
      cudaOk(cudaMemcpyAsync(a.get(), staged, bytes, cudaMemcpyHostToDevice, s.get()), "upload");
      const CollectiveSite site{"step", std::to_string(step)};
      const uint8_t* out = b.get();
      Bytes& w = want[step];
      switch (step % 4) {
        case 0:  // out of place: a -> b
          w.resize(bytes);
          host.allReduce(in.data(), w.data(), count, t, site);
          dev.allReduce(a.get(), b.get(), count, t, s.handle(), site);
          break;
        case 1:  // in place in a
          w.resize(bytes);
          host.allReduce(in.data(), w.data(), count, t, site);
          dev.allReduce(a.get(), a.get(), count, t, s.handle(), site);
          out = a.get();
          break;
        case 2:  // shard rank() of a's first n*k elements -> b
          w.resize(static_cast<size_t>(k) * 4);
          host.reduceScatter(in.data(), w.data(), k, t, site);
          dev.reduceScatter(a.get(), b.get(), k, t, s.handle(), site);
          break;
        case 3:  // a's first k elements -> b's n*k
          w.resize(static_cast<size_t>(n * k) * 4);
          host.allGather(in.data(), w.data(), k, t, site);
          dev.allGather(a.get(), b.get(), k, t, s.handle(), site);
          break;
      }
      result_bytes[step] = w.size();
      cudaOk(cudaMemcpyAsync(results.get() + static_cast<size_t>(step) * bytes, out, w.size(),
                             cudaMemcpyDeviceToHost, s.get()),
             "download");
    }
    cudaOk(cudaStreamSynchronize(s.get()), "cudaStreamSynchronize");
    for (int step = 0; step < kSteps; ++step) {
      const uint8_t* got = results.get() + static_cast<size_t>(step) * bytes;
      expectSameBits(Bytes(got, got + result_bytes[step]), want[step], t,
                     "step " + std::to_string(step) + ", rank " + std::to_string(host.rank()));
    }
  });
}

INSTANTIATE_TEST_SUITE_P(CudaCommWorldSizes, CudaCommLocal, ::testing::Values(1, 2, 3, 4));

TEST(CudaCommLocalErrors, DisagreeingRanksNameTheCollective) {
  SKIP_WITHOUT_GPU();
  LaunchResult r = launchRanks(2, {"local", 30, FaultSpec{}}, [](Communicator& host) {
    LocalDeviceCommunicator dev(host, 0);
    Stream s;
    DeviceBytes buf(12 * 4);
    const int64_t count = host.rank() == 0 ? 10 : 12;
    dev.allReduce(buf.get(), buf.get(), count, DType::F32, s.handle(), {"AllReduce", "grads"});
  });
  ASSERT_EQ(r.errors.size(), 2u);
  for (const std::string& e : r.errors) {
    EXPECT_TRUE(contains(e,
                         "AllReduce 'grads': the ranks' plans disagree: rank 0 is in AllReduce "
                         "(f32 x 10), rank 1 is in AllReduce (f32 x 12)"))
        << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
}

TEST(CudaCommLocalErrors, DifferentCollectivesAreNamed) {
  SKIP_WITHOUT_GPU();
  LaunchResult r = launchRanks(2, {"local", 30, FaultSpec{}}, [](Communicator& host) {
    LocalDeviceCommunicator dev(host, 0);
    Stream s;
    DeviceBytes buf(8 * 4);
    if (host.rank() == 0)
      dev.broadcast(buf.get(), 4, DType::F32, 1, s.handle(), {"Broadcast", "w"});
    else
      dev.allGather(buf.get(), buf.get(), 4, DType::F32, s.handle(), {"AllGather", "w"});
  });
  ASSERT_EQ(r.errors.size(), 2u);
  EXPECT_TRUE(contains(r.errors[0],
                       "rank 0: Broadcast 'w': the ranks' plans disagree: rank 0 is "
                       "in Broadcast (f32 x 4, root 1), rank 1 is in AllGather "
                       "(f32 x 4)"))
      << r.errors[0];
}

TEST(CudaCommLocalErrors, BoolCannotBeSummed) {
  SKIP_WITHOUT_GPU();
  LocalWorld world(1, 30);
  LocalDeviceCommunicator dev(world.comm(0), 0);
  Stream s;
  DeviceBytes buf(4);
  try {
    dev.allReduce(buf.get(), buf.get(), 4, DType::Bool, s.handle(), {"AllReduce", "mask"});
    ADD_FAILURE() << "summed bools";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "AllReduce 'mask': cannot sum bool tensors");
  }
}

// These run on every machine: the checks come before any GPU work.
TEST(CudaCommLocalErrors, MoreRanksThanOneLaunchSumsIsAOneLineError) {
  LocalWorld world(kMaxLocalDeviceRanks + 1, 30);
  try {
    LocalDeviceCommunicator dev(world.comm(0), 0);
    ADD_FAILURE() << "constructed a world of " << kMaxLocalDeviceRanks + 1;
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "the local device transport runs at most 16 ranks on one GPU, not 17");
  }
}

TEST(CudaCommLocalErrors, AGpuThatCannotBeUsedIsAOneLineError) {
  LocalWorld world(1, 30);
  try {
    LocalDeviceCommunicator dev(world.comm(0), 9999);  // no machine has it
    ADD_FAILURE() << "used GPU 9999";
  } catch (const Error& e) {
    std::string what = e.what();
    EXPECT_TRUE(contains(what, "local device rank 0: cannot use GPU 9999: ")) << what;
    EXPECT_EQ(what.find('\n'), std::string::npos) << what;
  }
}

// NCCL's device face on one rank (NCCL refuses two ranks on one GPU): the calls
// return once enqueued; the stream's synchronisation makes the results visible.
TEST(CudaCommNccl, DeviceFaceEnqueuesOnTheGivenStream) {
  if (!haveNccl()) GTEST_SKIP() << "this build has no NCCL";
  SKIP_WITHOUT_GPU();
  LocalWorld world(1, 30);
  NcclCommunicator nccl(world.comm(0), 0, 30);
  DeviceCommunicator& dev = nccl;
  EXPECT_EQ(dev.kind(), "nccl");
  EXPECT_EQ(dev.device(), 0);
  EXPECT_TRUE(dev.capturable());
  EXPECT_EQ(dev.rank(), 0);
  EXPECT_EQ(dev.size(), 1);
  Stream s;
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::I64}) {
    const int64_t count = 1001;
    const size_t bytes = static_cast<size_t>(count) * dtypeSize(t);
    const Bytes in = inputOf(t, 0, count, 5);
    DeviceBytes a(bytes), b(bytes);
    auto run = [&](const std::string& what, auto&& enqueue) {
      upload(in, a.get(), s);
      cudaOk(cudaMemsetAsync(b.get(), 0xab, bytes, s.get()), "cudaMemsetAsync");
      enqueue();
      // One rank: every collective is the identity.
      expectSameBits(download(what == "Broadcast" ? a.get() : b.get(), bytes, s), in, t,
                     describe(t, 0, count, what));
    };
    run("AllReduce", [&] {
      dev.allReduce(a.get(), b.get(), count, t, s.handle(), {"AllReduce", "nccl"});
    });
    run("ReduceScatter", [&] {
      dev.reduceScatter(a.get(), b.get(), count, t, s.handle(), {"ReduceScatter", "nccl"});
    });
    run("AllGather", [&] {
      dev.allGather(a.get(), b.get(), count, t, s.handle(), {"AllGather", "nccl"});
    });
    run("Broadcast", [&] {
      dev.broadcast(a.get(), count, t, 0, s.handle(), {"Broadcast", "nccl"});
    });
  }
}

}  // namespace
}  // namespace ds::cuda

#endif  // DS_HAVE_CUDA
