// The communicator: what a rank uses to exchange data with the other ranks of a
// run. One interface, several transports (runtime/comm/local_communicator.h:
// threads of one process; mpi_communicator.h: processes under mpirun;
// kernels/cuda/nccl_communicator.h: GPUs), so the collective kernels and the
// launcher never depend on the transport.
//
// Semantics shared by every implementation (docs/comm.md):
//  * Every rank calls the same collectives in the same order with the same count,
//    dtype and root; the plan guarantees it.
//  * Sums are element-wise in rank order 0..N-1 (f16 and bf16 accumulate in f32 and
//    round once), so a result does not depend on thread or message timing. The local
//    and MPI transports give bit-identical results; NCCL uses its own order.
//  * Shards are contiguous and equal: of a flat buffer of N*k elements, rank r holds
//    elements [r*k, (r+1)*k).
//  * Every blocking call gives up after the communicator's timeout, or as soon as
//    the transport learns that a peer failed, throwing a one-line ds::Error that
//    names the collective (op and plan node) and the ranks it was waiting for.
//
// The header is interface only (no out-of-line definitions), so CPU kernels can
// call it without linking the runtime.
#pragma once

#include <cstdint>
#include <string>

#include "ir/dtype.h"

namespace ds {

// Where a collective is issued: its op and plan node, for error messages.
struct CollectiveSite {
  std::string op;    // "AllReduce", ..., or "barrier"
  std::string node;  // the plan step's node name; may be empty outside plans

  std::string describe() const { return node.empty() ? op : op + " '" + node + "'"; }
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string kind() const = 0;  // "local", "mpi", "nccl"

  // recv[i] = sum over ranks of send[i], for `count` elements. recv may be send.
  virtual void allReduce(const void* send, void* recv, int64_t count, DType dtype,
                         const CollectiveSite& site) = 0;
  // send holds size()*recv_count elements; recv gets the sum of every rank's shard
  // rank(). recv is disjoint from send or exactly send + rank()*recv_count.
  virtual void reduceScatter(const void* send, void* recv, int64_t recv_count, DType dtype,
                             const CollectiveSite& site) = 0;
  // recv (size()*send_count elements) gets every rank's send, in rank order. send
  // is disjoint from recv or exactly recv + rank()*send_count.
  virtual void allGather(const void* send, void* recv, int64_t send_count, DType dtype,
                         const CollectiveSite& site) = 0;
  // Every rank's buf gets root's buf.
  virtual void broadcast(void* buf, int64_t count, DType dtype, int root,
                         const CollectiveSite& site) = 0;
  virtual void barrier(const CollectiveSite& site) = 0;
};

}  // namespace ds
