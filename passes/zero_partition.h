// Pass "zero-partition": data parallelism over N ranks and ZeRO stages 1-3, as
// DeepSpeed's zero_optimization configures them. It runs between autodiff and the
// optimizer; collectives are IR ops (ir/ops/collective.cc), so --dump ir and
// --dump plan show them and the plan verifier proves every rank issues the same.
//
// Every rank runs the same graph on its own micro-batch; the loss is divided by
// G x N (scaleLoss), so gradients summed over the ranks are the global batch's mean.
//
// Guarantees:
//  * Parameters with gradients are grouped, in declaration order, into buckets of
//    at most `reduce_bucket_elements` (stage 3: `prefetch_bucket_elements`)
//    elements. A bucket's gradients are flattened into one communication buffer
//    (Reshape, Concat; role comm; on several ranks cast to the communication dtype:
//    f32 with `communicate_in_f32`, else the parameters' dtype), reduced, and the
//    reduction is placed right after
//    the bucket's last gradient is produced, so full gradients die early — except at
//    stages 0 and 1 with accumulation, where full gradients accumulate over the
//    micro-steps and are reduced once, in the optimizer step.
//  * Stage 0: the buffer is AllReduced and split back; every rank steps every
//    parameter with the same summed gradient.
//  * Stages 1-3: the buffer is zero-padded to N*k elements and ReduceScattered: rank
//    r receives elements [r*k, (r+1)*k), its gradient shard, and steps only that
//    shard (a sharded source, ir/graph.h ShardLayout), so optimizer state is 1/N.
//    Stages 2 and 3 reduce every micro-step and accumulate only the shard.
//  * Stages 1 and 2 (and stage-3 parameters of at most
//    `param_persistence_threshold` elements) keep every parameter whole and step a
//    sharded fp32 master copy ("zero/bucketI.master"); after the step an AllGather
//    refreshes every parameter from the updated masters.
//  * Stage 3 keeps only the rank's shard of each bucket ("zero/bucketI.params").
//    An AllGather rebuilds the bucket's parameters before their first forward use —
//    prefetched one bucket ahead: it is issued before the first use of the bucket
//    used just before it — and the memory plan releases them after their last use;
//    backward (which prefetches the same way, in backward order) uses either the
//    same values, when the bucket's reuse distance (elements gathered between its
//    forward and backward use) is at most `max_reuse_distance` and the kept buckets
//    fit `max_live_parameters`, or a second AllGather before the first backward use.
//  * The gradient norm sums squared shards over the ranks (addOptimizer).
//  * Mixed precision (passes/mixed_precision.h): buckets hold one dtype; 16-bit
//    parameters are stepped through f32 masters ("<param>.master", whole at stage
//    0, sharded above) whose rounded values are written back after the step, and
//    their gradients are cast to f32 before the optimizer.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "ir/graph.h"
#include "passes/add_optimizer.h"

namespace ds {

struct ZeroOptions {
  int stage = 0;
  int64_t world_size = 1;
  int64_t accumulation = 1;  // gradient_accumulation_steps
  // Whole 16-bit gradients (stages 0 and 1) accumulate in f32 (DeepSpeed's
  // grad_accum_dtype "fp32"; its default for bf16 without ZeRO); stages 2 and 3
  // always accumulate their shards in f32.
  bool accumulate_in_f32 = false;
  // 16-bit gradients are reduced in f32 (DeepSpeed's communication_data_type "fp32").
  bool communicate_in_f32 = false;
  // One rank at stage 0 in mixed precision: an f32 master per parameter instead of
  // one per bucket, for an optimizer that needs whole parameters (Lamb's trust
  // ratio; DeepSpeed then runs its unfused FP16 optimizer).
  bool whole_masters = false;
  // DeepSpeed's defaults (its "auto" values need a model hidden size ONNX lacks).
  int64_t reduce_bucket_elements = 500'000'000;
  int64_t prefetch_bucket_elements = 50'000'000;
  int64_t param_persistence_threshold = 100'000;
  int64_t max_live_parameters = 1'000'000'000;
  int64_t max_reuse_distance = 1'000'000'000;
  // Stage 3 gathers a bucket one bucket ahead of its use (stage3_prefetch_bucket_size
  // > 0); off: right before it.
  bool prefetch = true;
};

// What the optimizer then steps, and what the pass finishes after it.
struct ZeroPartition {
  std::vector<ParamGrad> updates;      // parameters (stage 0) or rank shards
  int64_t shard_world_size = 1;        // for addOptimizer's gradient norm
  std::vector<ParamGrad> accumulated;  // accumulators to reset after the step
  // A master copy the optimizer steps and what it refreshes after the step (rounded
  // to their dtype): with `all_gather`, the whole parameters its shards pack;
  // otherwise one tensor of its own shape (a 16-bit parameter or stage-3 shard).
  struct WriteBack {
    Value* master;
    std::vector<Value*> targets;
    bool all_gather;
  };
  std::vector<WriteBack> write_back;
};

// `grads` maps parameters to gradients (autodiff); nodes after `last_forward` are
// backward. With one rank at stage 0 the gradients pass through unchanged (only
// accumulated when G > 1); 16-bit parameters then step f32 masters packed by
// bucket (one multi-tensor optimizer step per bucket), f32 ones in place.
ZeroPartition partitionForZero(Graph& graph, const std::map<Value*, Value*>& grads,
                               const Node* last_forward, const ZeroOptions& options);

// After addOptimizer (whose result is `next`): writes the updated masters back into
// their parameters (all-gathering shards), then resets the accumulators.
void finishZeroStep(Graph& graph, const ZeroPartition& partition,
                    const std::map<Value*, Value*>& next);

}  // namespace ds
