// Pass "fuse-relu-grad" (on a training graph, after autodiff): where a Relu follows a
// BatchNormalization, backward computes ReluGrad(dY, R) into a tensor that only
// BatchNormalizationGrad reads; that BatchNormalizationGrad reads dY and R instead
// (its optional input 3) and applies the ReluGrad as it reads, so the masked
// gradient, the size of the activation, is never written nor read back.
//
// Guarantees: the fused BatchNormalizationGrad computes exactly what the two nodes
// did (ReluGrad is a select, so no rounding differs). A ReluGrad is fused only when
// its output is read by that BatchNormalizationGrad alone, as its dY, and is neither
// a graph output nor a state update, and dY and R have dY's type. The ReluGrad is
// left without readers for the dead-code pass. Returns true if it changed the graph.
#pragma once

#include "ir/graph.h"

namespace ds {

bool fuseReluIntoBatchNormGrad(Graph& graph);

}  // namespace ds
