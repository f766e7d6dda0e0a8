#include "runtime/shards.h"

#include <cstring>

#include "ir/error.h"
#include "runtime/comm/communicator.h"

namespace ds {

ShardLayout shardLayoutOf(const planpb::TensorInfo& t) {
  ShardLayout layout;
  layout.world_size = t.shard().world_size();
  for (const planpb::ShardPiece& p : t.shard().pieces())
    layout.pieces.push_back({p.name(), Shape(p.shape().begin(), p.shape().end()), p.offset()});
  return layout;
}

bool isSharded(const planpb::TensorInfo& t) {
  return t.shard().world_size() > 0;
}

std::vector<std::string> wholeNames(const planpb::TensorInfo& t) {
  if (!isSharded(t)) return {t.name()};
  std::vector<std::string> out;
  for (const planpb::ShardPiece& p : t.shard().pieces()) out.push_back(p.name());
  return out;
}

void unpackShards(const ShardLayout& layout, const Tensor& flat,
                  std::map<std::string, Tensor>* whole) {
  const size_t es = dtypeSize(flat.dtype());
  for (const ShardPiece& p : layout.pieces) {
    Tensor t(TensorType{flat.dtype(), p.shape});
    DS_CHECK(
        (p.offset + t.numel()) * static_cast<int64_t>(es) <= static_cast<int64_t>(flat.bytes()),
        "shard layout: piece '", p.name, "' lies outside the flat buffer");
    std::memcpy(t.raw(), flat.raw() + static_cast<size_t>(p.offset) * es, t.bytes());
    (*whole)[p.name] = std::move(t);
  }
}

Tensor packShard(const ShardLayout& layout, DType dtype, int rank,
                 const std::map<std::string, Tensor>& whole, bool missing_is_zero) {
  const int64_t k = layout.shardElements();
  const int64_t begin = k * rank, end = begin + k;
  const size_t es = dtypeSize(dtype);
  Tensor shard(TensorType{dtype, {k}});
  for (const ShardPiece& p : layout.pieces) {
    auto it = whole.find(p.name);
    if (it == whole.end()) {
      DS_CHECK(missing_is_zero, "no value for '", p.name, "'");
      continue;
    }
    const Tensor& t = it->second;
    DS_CHECK(t.dtype() == dtype && t.shape() == p.shape, "'", p.name, "' is ", t.type().toString(),
             ", the layout needs ", TensorType{dtype, p.shape}.toString());
    // The overlap of the piece [offset, offset + n) with this rank's [begin, end).
    const int64_t lo = std::max(begin, p.offset), hi = std::min(end, p.offset + t.numel());
    if (lo >= hi) continue;
    std::memcpy(shard.raw() + static_cast<size_t>(lo - begin) * es,
                t.raw() + static_cast<size_t>(lo - p.offset) * es,
                static_cast<size_t>(hi - lo) * es);
  }
  return shard;
}

std::map<std::string, Tensor> gatherWholeTensors(const Executor& exec,
                                                 const std::vector<int>& indices) {
  std::map<std::string, Tensor> whole;
  const PlanFile& plan = exec.plan();
  for (int index : indices) {
    const planpb::TensorInfo& info = plan.plan.tensors(index);
    Tensor local = exec.readTensor(index);
    if (!isSharded(info)) {
      whole[info.name()] = std::move(local);
      continue;
    }
    const ShardLayout layout = shardLayoutOf(info);
    Tensor flat(TensorType{local.dtype(), {local.numel() * layout.world_size}});
    Communicator* comm = exec.communicator();
    if (comm)
      comm->allGather(local.raw(), flat.raw(), local.numel(), local.dtype(),
                      {"AllGather", "whole tensor " + info.name()});
    else
      DS_CHECK(layout.world_size == 1, "tensor '", info.name(), "' is sharded over ",
               layout.world_size, " ranks; gathering it needs the ranks' communicator");
    if (!comm) flat = std::move(local);
    unpackShards(layout, flat, &whole);
  }
  return whole;
}

}  // namespace ds
