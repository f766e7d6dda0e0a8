// Collectives on device memory, enqueued on a CUDA stream: what the CUDA executor
// runs a plan's AllReduce, ReduceScatter, AllGather and Broadcast steps with.
// Implementations: kernels/cuda/nccl_communicator.h (one GPU per rank) and
// kernels/cuda/local_device_communicator.h (N ranks as threads of one process
// sharing one GPU, which NCCL refuses).
//
// Unlike Communicator (runtime/comm/communicator.h), whose calls return when the
// data has arrived, these calls return once the collective is *enqueued* on
// `stream`: work the stream enqueued before it is its input, work enqueued after
// it sees its result, and the host never waits for the GPU. A call may still
// block the host to meet the other ranks (the local transport does), so every
// rank must enqueue the same collectives in the same order with the same counts,
// dtypes and roots, as plans guarantee. Buffer rules are Communicator's. Errors
// that happen on the device surface at the next call or at the executor's next
// synchronisation, as one-line ds::Errors naming the collective.
//
// The header has no CUDA types (streams are void*), so ds_runtime can hold one.
#pragma once

#include <cstdint>
#include <string>

#include "ir/dtype.h"
#include "runtime/comm/communicator.h"

namespace ds {

class DeviceCommunicator {
 public:
  virtual ~DeviceCommunicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string kind() const = 0;  // "nccl", "local-device"
  // The CUDA device the buffers must live on (the one the rank's executor uses).
  virtual int device() const = 0;
  // Whether the calls may be recorded into a CUDA graph (stream capture) and
  // replayed: NCCL's may; the local transport's meet on the host, so may not.
  virtual bool capturable() const = 0;

  virtual void allReduce(const void* send, void* recv, int64_t count, DType dtype, void* stream,
                         const CollectiveSite& site) = 0;
  virtual void reduceScatter(const void* send, void* recv, int64_t recv_count, DType dtype,
                             void* stream, const CollectiveSite& site) = 0;
  virtual void allGather(const void* send, void* recv, int64_t send_count, DType dtype,
                         void* stream, const CollectiveSite& site) = 0;
  // Every rank's buf gets root's buf.
  virtual void broadcast(void* buf, int64_t count, DType dtype, int root, void* stream,
                         const CollectiveSite& site) = 0;
};

}  // namespace ds
