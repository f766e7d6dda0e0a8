// CUDA kernels of the collective ops (ir/ops/collective.cc; CPU twin:
// kernels/cpu/collective.cc): each enqueues its exchange on the step's stream
// through the rank's DeviceCommunicator (KernelContext::device_comm: NCCL, or the
// local device transport), which returns without waiting for the GPU. A plan of
// one rank needs no communicator: its collectives are copies (or nothing, when the
// memory plan put the output over the input). The op's world_size must match the
// communicator's, checked at load.
#include "kernels/cuda/cuda_util.h"
#include "runtime/comm/device_communicator.h"

namespace ds::cuda {
namespace {

enum class Collective { AllReduce, ReduceScatter, AllGather, Broadcast };

Collective collectiveOf(const std::string& op) {
  if (op == "AllReduce") return Collective::AllReduce;
  if (op == "ReduceScatter") return Collective::ReduceScatter;
  if (op == "AllGather") return Collective::AllGather;
  return Collective::Broadcast;
}

std::unique_ptr<CudaKernel> collectiveKernel(const KernelContext& ctx, const Device&) {
  const int64_t world = ctx.i("world_size");
  DeviceCommunicator* comm = ctx.device_comm;
  if (!comm && world != 1)
    ctx.fail("the plan has ", world,
             " ranks but the CUDA executor has no device communicator (dsrun makes one per "
             "rank: NCCL, or the local device transport when ranks share a GPU)");
  if (comm && comm->size() != world)
    ctx.fail("the plan has ", world, " ranks but the communicator has ", comm->size());
  if (!comm)
    return launchKernel([](const KernelContext& c, const Device& d, void*) {
      copyAsync(c.input(0), c.output(0), d.stream);
    });
  const Collective kind = collectiveOf(ctx.op);
  const int root = kind == Collective::Broadcast ? static_cast<int>(ctx.i("root")) : 0;
  const CollectiveSite site{ctx.op, ctx.node_name};
  return launchKernel([comm, kind, root, site](const KernelContext& c, const Device& d, void*) {
    const TensorView &in = c.input(0), &out = c.output(0);
    switch (kind) {
      case Collective::AllReduce:
        return comm->allReduce(in.data, out.data, in.numel(), in.dtype(), d.stream, site);
      case Collective::ReduceScatter:
        return comm->reduceScatter(in.data, out.data, out.numel(), in.dtype(), d.stream, site);
      case Collective::AllGather:
        return comm->allGather(in.data, out.data, in.numel(), in.dtype(), d.stream, site);
      case Collective::Broadcast:  // in place: the output is the buffer
        copyAsync(in, out, d.stream);
        return comm->broadcast(out.data, out.numel(), out.dtype(), root, d.stream, site);
    }
  });
}

}  // namespace

void registerCollectiveKernels(CudaKernelRegistry& r) {
  // They move or sum 16-bit data themselves (sums in f32, rounded once).
  for (const char* op : {"AllReduce", "ReduceScatter", "AllGather", "Broadcast"})
    r.add(op, collectiveKernel, Precision::Native16);
}

}  // namespace ds::cuda
