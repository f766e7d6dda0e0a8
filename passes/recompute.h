// Activation recomputation (dscompile --checkpoint-activations; addTraining runs it
// right after autodiff, and the verifier checks the result): activation
// checkpointing, as DeepSpeed's and PyTorch's checkpoint() do it for the layers a
// model wraps, chosen by the compiler: backward recomputes the forward activations
// it reads from a few kept checkpoints instead of keeping them all from forward.
//
// Guarantees, on a graph whose forward ends at `last_forward` and whose backward
// follows it (after autodiff):
//  * The forward is cut into segments at checkpoints: values that are, at their
//    point of the forward, the only activation later forward nodes still read (the
//    residual stream between blocks). Of those, about the square root of their
//    number are chosen (of consecutive ones, the last: a Relu stays with its Add,
//    a pooled checkpoint is smaller), each closing a segment with an equal share of the bytes
//    backward reads (Chen et al.'s sqrt(n) schedule); the last segment, whose
//    backward comes first, holds a share too and is not recomputed.
//  * In every other segment, each value backward reads is made again by a copy of
//    the forward nodes it depends on within the segment, placed right before the
//    first backward node that reads any of them; backward reads the copies. The
//    originals then die after their last forward use.
//  * Not recomputed (backward reads the original): Dropout (its mask is drawn per
//    node name), values that are graph outputs or state updates, values that
//    depend on no feed (weights' casts), and nodes reading weights larger than
//    their outputs (embedding lookups). A copied training-mode BatchNormalization
//    has one output (no second update of the running statistics).
//  * Every copy computes what its original did from the same inputs, so training
//    is bit for bit the same; the cost is a second forward of the recomputed
//    segments. Returns how many nodes were copied, in how many segments.
#pragma once

#include <cstddef>

#include "ir/graph.h"

namespace ds {

struct RecomputeResult {
  size_t copied_nodes = 0;
  size_t segments = 0;  // recomputed segments
};

RecomputeResult recomputeActivations(Graph& graph, const Node* last_forward);

}  // namespace ds
