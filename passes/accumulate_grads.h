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
//  1. scaleLoss: %scaled = Div(%loss, G) — the value autodiff differentiates.
//  2. accumulateGradients: per parameter p with gradient g, a source
//     %p.grad_acc and %p.grad_acc/sum = Add(%p.grad_acc, g) with the state
//     update p.grad_acc = sum; the optimizer reads the sum.
//  3. resetAccumulators (after the optimizer pass): %p.grad_acc/zero =
//     ZerosLike(sum) in the optimizer-step phase, a second update of the
//     accumulator, which the verifier orders after every reader of the sum.
#pragma once

#include <cstdint>
#include <map>

#include "ir/graph.h"

namespace ds {

Value* scaleLoss(Graph& graph, Value* loss, int64_t accumulation_steps);

// Returns parameter -> accumulated gradient, the values the optimizer step reads.
std::map<Value*, Value*> accumulateGradients(Graph& graph, const std::map<Value*, Value*>& grads);

void resetAccumulators(Graph& graph, const std::map<Value*, Value*>& accumulated);

}  // namespace ds
