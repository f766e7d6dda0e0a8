// Pass "accumulate-gradients": gradient accumulation over G micro-steps, as
// DeepSpeed's engine does it (gradient_accumulation_steps).
//
// Guarantees: every micro-step runs forward and backward on its micro-batch and
// adds each parameter's gradient into a persistent, zero-initialised accumulator
// ("<param>.grad_acc", role optstate, so plans and checkpoints keep it with the
// optimizer state); the optimizer step reads the accumulated sums and afterwards
// resets the accumulators to zero (optimizer-step phase). The backward pass starts
// from the loss divided by G, as DeepSpeed's engine.backward scales it, so the
// update equals one step over the G micro-batches concatenated for a loss that
// averages over its samples; the "loss" output itself stays unscaled.
//
// Algorithm:
//  1. scaleLoss: %scaled = Div(%loss, G x N) — the value autodiff differentiates
//     (N ranks: the data-parallel mean; passes/zero_partition.h).
//  2. accumulateGradients: per parameter p with gradient g, a source
//     %p.grad_acc and %p.grad_acc/sum = Add(%p.grad_acc, g) with the state
//     update p.grad_acc = sum; the optimizer reads the sum.
//  3. resetAccumulators (after the optimizer pass): %p.grad_acc/zero =
//     ZerosLike(sum) in the optimizer-step phase, a second update of the
//     accumulator, which the verifier orders after every reader of the sum.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "ir/graph.h"
#include "passes/add_optimizer.h"

namespace ds {

// The loss every rank differentiates: loss / divisor, with divisor G (accumulation
// steps) x N (ranks), so that gradients summed over micro-steps and ranks are the
// global batch's mean.
Value* scaleLoss(Graph& graph, Value* loss, int64_t divisor);

// Accumulators for the gradients of `grads` (parameters or ZeRO shards); returns
// the same list with each gradient replaced by its running sum. With `in_f32`, a
// 16-bit gradient is cast to f32 and summed in an f32 accumulator (DeepSpeed's
// data_types.grad_accum_dtype "fp32"); otherwise the sum keeps the gradient's dtype.
std::vector<ParamGrad> accumulateGradients(Graph& graph, const std::vector<ParamGrad>& grads,
                                           bool in_f32 = false);
std::map<Value*, Value*> accumulateGradients(Graph& graph, const std::map<Value*, Value*>& grads);

void resetAccumulators(Graph& graph, const std::vector<ParamGrad>& accumulated);
void resetAccumulators(Graph& graph, const std::map<Value*, Value*>& accumulated);

}  // namespace ds
