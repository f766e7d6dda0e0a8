// Pass "seed-dropout": gives every training-mode Dropout of a training graph the
// optimizer step as its second input.
//
// Why: a kernel that draws a fresh mask per run keeps hidden state (its run
// count), which a checkpoint cannot capture and another backend cannot
// reproduce. With the step as an input, the mask is a pure function of (run
// seed, node, step, micro-step) — kernels/dropout_rng.h — so training 10 steps
// equals training 5, resuming and training 5, on any backend.
//
// Guarantees: each Dropout with training_mode = 1 and ratio > 0 reads `step`
// (the kStepFeed source) as input 1; nothing else changes. Algorithm:
//  1. Find the step feed; without Dropout nodes the graph is unchanged.
//  2. Append it as input 1 of each training-mode Dropout that has none.
#pragma once

#include "ir/graph.h"

namespace ds {

// Returns whether any node changed. `step` is the optimizer-step feed.
bool seedDropout(Graph& graph, Value* step);

}  // namespace ds
