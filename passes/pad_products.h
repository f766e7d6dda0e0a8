// Pass "pad-products": a 16-bit MatMul by 2-D weights whose output rows are not a
// multiple of 8 elements (16 bytes: GPT-2's 50257-word vocabulary) computes into
// rows padded to a multiple of 64 with zero weights, then slices its output back.
// Tensor-core GEMM kernels read and write rows by 16-byte-aligned vectors (TMA);
// an odd row pitch leaves cuBLAS the slow kernels for the forward product and
// both gradient products, which read the logits' gradient rows. Padding costs a
// copy of the weights and of the output (forward) and of its gradient (backward).
// nanoGPT pads GPT-2's vocabulary to 50304 for the same reason.
//
// Run after mixed precision, before autodiff (which then differentiates the Concat
// and the Slice). Guarantees: every value computes what it did (the padded columns
// are extra outputs, sliced away; the real ones sum the same products), every
// reader of the product (a graph output too) reads the slice, and only products of
// at least 512 columns with a 2-D weight are padded. Returns true if it changed the graph.
#pragma once

#include "ir/graph.h"

namespace ds {

bool padProducts(Graph& graph);

}  // namespace ds
