// Pass "fuse-gelu": the GELU that exporters write out as elementwise ops (PyTorch
// below opset 20, `dsmodel gpt`) becomes the registry's single Gelu op, so the
// forward makes one pass over memory instead of five and training uses Gelu's
// gradient rule. ONNX Runtime makes the same fusion.
//
// Recognised, with constants whose every element equals the expected value within
// 1e-4 relative or rounded to the constant's type (f16, bf16), in any operand
// order of Add and Mul:
//   erf form   ½·x·(1 + erf(x / √2)), x/√2 as Div(x, √2) or Mul(x, 1/√2)
//              -> Gelu(x) {approximate = "none"}
//   tanh form  ½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), x³ as Pow(x, 3),
//              Mul(x, Mul(x, x)) or Mul(Mul(x, x), x) -> Gelu(x) {approximate = "tanh"}
// where ½·x·t is Mul(Mul(x, t), ½), Mul(Mul(x, ½), t), Mul(x, Mul(t, ½)), ...
//
// Guarantees: a chain is fused only when every value inside it is read by the
// chain alone (not by another node, a graph output or a state update), its
// constants are compile-time constants (Role::Constant with data; trainable
// parameters never match) and its result has x's dtype (a float) and shape. The
// Gelu takes the name of the chain's last node and its output keeps the name of
// the chain's result, so diagnostics, profiles and output names are unchanged.
// Constants left without users are for the dead-code pass. Returns true if it
// changed the graph.
//
// Algorithm:
//   1. Walk the nodes in order; each Mul is a candidate last node of a chain.
//   2. Split its product into three factors through one single-use inner Mul; one
//      factor must be the constant ½, the other two x and t.
//   3. Match t = 1 + erf(x/√2) or 1 + tanh(...) backwards from t, checking the
//      constants, that the same x feeds the chain, and that each value is read only
//      by its consumer in the chain.
//   4. Park the result's users on a placeholder, erase the chain (consumers first),
//      add the Gelu in the last node's place under its names, and rewire the users.
#pragma once

#include "ir/graph.h"

namespace ds {

bool fuseGelu(Graph& graph);

}  // namespace ds
