// Collective ops: the communication the distributed passes place in the graph.
// Every rank of a plan runs the same collectives in the same order (the plan
// verifier checks it), each with `world_size` N, the number of ranks taking part,
// so that shape rules know N.
//
// Shards are contiguous and equal: a buffer of N*k elements (flat, row-major) is
// split so that rank r holds elements [r*k, (r+1)*k). For a tensor of shape
// [N*a, b, ...] that is rows [r*a, (r+1)*a) of axis 0, so shards split axis 0, which
// must be divisible by N (the passes pad flat buffers to make it so).
//
// Sums run in rank order 0..N-1 (runtime/comm/communicator.h), so every transport
// but NCCL gives bit-identical results.
#include "ir/op_registry.h"
#include "ir/ops/ops.h"

namespace ds {
namespace {

AttrSpec worldSizeAttr() {
  return {"world_size", AttrKind::Int, std::nullopt};
}

int64_t worldSize(InferContext& ctx) {
  int64_t n = ctx.node().i("world_size");
  if (n < 1) ctx.fail("world_size must be at least 1, is ", n);
  return n;
}

void checkSummable(InferContext& ctx) {
  if (ctx.dtype(0) == DType::Bool) ctx.fail("cannot sum bool tensors");
}

// AllReduce(x){world_size} -> sum over ranks of x, same type.
OpSchema allReduce() {
  OpSchema s;
  s.name = "AllReduce";
  s.attrs = {worldSizeAttr(), {"reduction", AttrKind::String, std::string("sum")}};
  s.inplace_input = 0;
  s.infer = [](InferContext& ctx) {
    worldSize(ctx);
    checkSummable(ctx);
    if (ctx.node().s("reduction") != "sum") ctx.fail("only reduction 'sum' is supported");
    ctx.setOutput(0, ctx.input(0));
  };
  return s;
}

// ReduceScatter(x: [N*a, ...]){world_size} -> [a, ...]: this rank's shard of the sum.
OpSchema reduceScatter() {
  OpSchema s;
  s.name = "ReduceScatter";
  s.attrs = {worldSizeAttr()};
  s.infer = [](InferContext& ctx) {
    int64_t n = worldSize(ctx);
    checkSummable(ctx);
    Shape shape = ctx.shape(0);
    if (shape.empty() || shape[0] % n != 0) ctx.fail("axis 0 must split into ", n, " equal shards");
    shape[0] /= n;
    ctx.setOutput(0, ctx.dtype(0), shape);
  };
  return s;
}

// AllGather(x: [a, ...]){world_size} -> [N*a, ...]: every rank's x, in rank order.
OpSchema allGather() {
  OpSchema s;
  s.name = "AllGather";
  s.attrs = {worldSizeAttr()};
  s.infer = [](InferContext& ctx) {
    int64_t n = worldSize(ctx);
    Shape shape = ctx.shape(0);
    if (shape.empty()) ctx.fail("a scalar has no axis 0 to gather along");
    shape[0] *= n;
    ctx.setOutput(0, ctx.dtype(0), shape);
  };
  return s;
}

// Broadcast(x){world_size, root} -> root's x on every rank.
OpSchema broadcast() {
  OpSchema s;
  s.name = "Broadcast";
  s.attrs = {worldSizeAttr(), {"root", AttrKind::Int, int64_t{0}}};
  s.inplace_input = 0;
  s.infer = [](InferContext& ctx) {
    int64_t n = worldSize(ctx), root = ctx.node().i("root");
    if (root < 0 || root >= n) ctx.fail("root ", root, " is not a rank of ", n);
    ctx.setOutput(0, ctx.input(0));
  };
  return s;
}

}  // namespace

void registerCollectiveOps(OpRegistry& r) {
  r.add(allReduce());
  r.add(reduceScatter());
  r.add(allGather());
  r.add(broadcast());
}

}  // namespace ds
