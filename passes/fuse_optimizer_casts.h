// Pass "fuse-optimizer-casts" (on a training graph, after the optimizer and the
// ZeRO write-back, before offload): mixed precision's optimizer step reads the
// 16-bit gradients and writes the rounded 16-bit parameters itself, as DeepSpeed's
// fused optimizers do, instead of a Cast to f32 before it and a Cast to 16 bits after.
//
// Guarantees, for every optimizer step (ir/optimizer_ops.h) of an f32 master:
//  * Its gradient, when it is a Cast of a 16-bit gradient to f32 that only optimizer
//    steps and full ReduceSumSquares (the gradient norm) read, is the 16-bit
//    gradient; those ReduceSumSquares sum it into f32 (`to`). The f32 copy is never
//    written.
//  * A Cast of its updated master to f16 or bf16 becomes its last output
//    (`round_to`), written by the step as it writes the master.
// Widening is exact and the rounded copy is rounded from the stored f32 master, so
// the plan computes what it computed before to the bit. The Casts are left without
// readers for the dead-code pass. Returns true if it changed the graph.
#pragma once

#include "ir/graph.h"

namespace ds {

bool fuseOptimizerCasts(Graph& graph);

}  // namespace ds
