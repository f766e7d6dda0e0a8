// CPU kernels of the collective ops (ir/ops/collective.cc): each hands its tensors
// to the rank's communicator (KernelContext::comm), which does the exchange. A
// single-rank plan runs without a communicator: every collective of one rank is a
// copy. The op's world_size must match the communicator's, checked at load.
#include <cstring>

#include "kernels/cpu/kernel.h"
#include "runtime/comm/communicator.h"

namespace ds::cpu {
namespace {

class CollectiveKernel : public CpuKernel {
 public:
  explicit CollectiveKernel(const KernelContext& ctx)
      : site_{ctx.op, ctx.node_name},
        comm_(ctx.comm),
        kind_(ctx.op == "AllReduce"       ? Kind::AllReduce
              : ctx.op == "ReduceScatter" ? Kind::ReduceScatter
              : ctx.op == "AllGather"     ? Kind::AllGather
                                          : Kind::Broadcast) {
    int64_t n = ctx.i("world_size");
    if (!comm_ && n != 1)
      ctx.fail("the plan has ", n,
               " ranks but this executor has no communicator (run it with dsrun, "
               "which starts one per rank)");
    if (comm_ && comm_->size() != n)
      ctx.fail("the plan has ", n, " ranks but the communicator has ", comm_->size());
  }

  void run(const KernelContext& ctx) override {
    const TensorView &in = ctx.input(0), &out = ctx.output(0);
    if (!comm_) {  // one rank: the input is the result
      if (out.data != in.data) std::memcpy(out.data, in.data, in.bytes());
      return;
    }
    switch (kind_) {
      case Kind::AllReduce:
        return comm_->allReduce(in.data, out.data, in.numel(), in.dtype(), site_);
      case Kind::ReduceScatter:
        return comm_->reduceScatter(in.data, out.data, out.numel(), in.dtype(), site_);
      case Kind::AllGather:
        return comm_->allGather(in.data, out.data, in.numel(), in.dtype(), site_);
      case Kind::Broadcast:
        return broadcast(ctx, in, out);
    }
  }

 private:
  // The communicator broadcasts in place; the output is the buffer unless the
  // memory plan put it over the input already.
  void broadcast(const KernelContext& ctx, const TensorView& in, const TensorView& out) {
    if (out.data != in.data) std::memcpy(out.data, in.data, in.bytes());
    comm_->broadcast(out.data, out.numel(), out.dtype(), static_cast<int>(ctx.i("root")), site_);
  }

  enum class Kind { AllReduce, ReduceScatter, AllGather, Broadcast };
  const CollectiveSite site_;
  Communicator* const comm_;
  const Kind kind_;
};

std::unique_ptr<CpuKernel> makeCollective(const KernelContext& ctx) {
  return std::make_unique<CollectiveKernel>(ctx);
}

}  // namespace

void registerCollectiveKernels(CpuKernelRegistry& r) {
  for (const char* op : {"AllReduce", "ReduceScatter", "AllGather", "Broadcast"})
    r.add(op, makeCollective);
}

}  // namespace ds::cpu
