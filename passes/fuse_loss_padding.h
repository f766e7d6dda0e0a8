// Pass "fuse-loss-padding" (on a training graph after pad-products, before
// autodiff): the cross-entropy loss reads pad-products' padded logits itself.
//
// pad-products computes a 16-bit product over 16-byte-aligned rows (GPT-2's 50257
// vocabulary padded to 50304) and slices the padding off. A loss over the slice
// makes autodiff write the slice's gradient and then a zero-padded copy of it
// (SliceGrad): [8192, 50257] and [8192, 50304] in GPT-2's case. Here the loss
// reads the padded scores with `classes` = the sliced width (ir/ops/shape_helpers.h
// checkPaddedClasses), so its gradient is the padded one, zeros in the padding.
//
// Guarantees: a SoftmaxCrossEntropyLoss without class weights or log_prob whose
// scores are Slice(x) (2-D, or a Reshape of it to [rows, width] keeping the last
// axis) keeping the first `width` entries of x's last axis reads x (reshaped to
// [rows, padded width]) with classes = width instead. The loss, and the gradient in
// the first `width` columns, are the same values to the bit; the Slice stays for
// its other readers (the model's logits output). Returns true if it changed the graph.
#pragma once

#include "ir/graph.h"

namespace ds {

bool fuseLossPadding(Graph& graph);

}  // namespace ds
