// Pass "fuse-layer-norm": the layer norm that PyTorch writes out as element-wise
// ops and reductions below opset 17 (torch.nn.LayerNorm of an f32 model, Hugging
// Face's GPT-2 and BERT exported at their default opsets) becomes the registry's single
// LayerNormalization, so the forward makes one pass over memory instead of nine and
// training uses LayerNormalization's gradient rule (one LayerNormalizationGrad
// instead of some fifteen element-wise gradient steps). ONNX Runtime makes the same
// fusion.
//
// Recognised, with Add and Mul in either operand order:
//   m = ReduceMean(x){axes: the last k, keepdims}   d = Sub(x, m)
//   v = ReduceMean(Pow(d, 2) or Mul(d, d)){the same axes, keepdims}
//   n = Div(d, Sqrt(Add(v, epsilon)))
//   y = Add(Mul(n, scale), bias), or Mul(n, scale)
//     -> LayerNormalization(x, scale[, bias]){axis = rank - k, epsilon}
// where epsilon and the exponent 2 are compile-time constants (one element each)
// and scale and bias have x's normalised shape (x.shape[axis:]).
//
// A 16-bit export's Casts to f32 around the normalisation keep its chain unfused.
//
// Guarantees: y computes what it did up to rounding (LayerNormalization's kernels
// sum the moments in double). A chain is fused only when every
// value inside it is read by the chain alone (not by another node or a graph
// output) and all its values have x's float dtype. The LayerNormalization takes
// the name of the chain's last node, its output keeps the name of the chain's
// result. Returns true if it changed the graph.
#pragma once

#include "ir/graph.h"

namespace ds {

bool fuseLayerNorm(Graph& graph);

}  // namespace ds
