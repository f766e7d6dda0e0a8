// Whole tensors and ZeRO shards. A persistent plan tensor is either whole on every
// rank, or sharded (TensorInfo.shard, ShardLayout in ir/graph.h): rank r holds the
// r-th equal part of a flat buffer that packs whole tensors — parameters and their
// optimizer state, named as a one-rank plan names them ("fc.weight",
// "fc.weight.exp_avg"). Checkpoints (re-sharding to another world size or stage),
// --export-onnx (consolidated weights, as DeepSpeed's zero_to_fp32) and the
// equivalence tests all see a multi-rank plan's state through these functions.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "ir/plan.h"
#include "runtime/executor.h"

namespace ds {

// The tensor's shard layout; world_size 0 when the tensor is whole.
ShardLayout shardLayoutOf(const planpb::TensorInfo& t);
bool isSharded(const planpb::TensorInfo& t);

// The names of the whole tensors a plan tensor holds: its own, or its pieces'.
std::vector<std::string> wholeNames(const planpb::TensorInfo& t);

// Adds the whole tensors packed in `flat` (every rank's shard of `layout`,
// concatenated in rank order) to `whole`.
void unpackShards(const ShardLayout& layout, const Tensor& flat,
                  std::map<std::string, Tensor>* whole);

// Rank `rank`'s shard of `layout` (dtype `dtype`), cut from whole tensors; a piece
// absent from `whole` is zeros when `missing_is_zero`, else an error naming it.
Tensor packShard(const ShardLayout& layout, DType dtype, int rank,
                 const std::map<std::string, Tensor>& whole, bool missing_is_zero);

// The whole tensors of plan tensors `indices` on an executor's rank: sharded ones
// all-gathered over its communicator, so every rank must call this with the same
// indices; whole ones read locally. Keyed by whole-tensor name.
std::map<std::string, Tensor> gatherWholeTensors(const Executor& exec,
                                                 const std::vector<int>& indices);

}  // namespace ds
