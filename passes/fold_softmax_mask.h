// Pass "fold-softmax-mask": attention's masking of its scores, an Add of a constant
// mask (dsmodel's GPT) or a Where that fills masked scores with a constant
// (PyTorch's masked_fill), becomes Softmax's mask input, so the masked scores
// ([batch, heads, T, T], a transformer's largest tensor) are never written: the
// softmax adds the mask as it reads the scores (ir/ops/reduction.cc).
//
// Guarantees: every value computes what it did, up to rounding (the masked score is
// no longer rounded to its dtype before the softmax); only a last-axis Softmax whose
// input nothing else reads, and only masks that repeat along the scores' rows
// (softmaxMaskRows), fold. A Where's mask is its fill where the condition picks it
// and 0 elsewhere (x + 0 is x), only when that is what filling does: a fill of
// -inf (or f32's lowest), or of at most -1e4 with no row filled whole (see
// fillIsAdditive). Returns true if it changed the graph.
#pragma once

#include "ir/graph.h"

namespace ds {

bool foldMaskIntoSoftmax(Graph& graph);

}  // namespace ds
