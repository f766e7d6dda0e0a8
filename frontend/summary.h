// The plan summary users read before they spend GPU hours: op counts, parameters,
// an activation estimate, and per-rank model-state memory under the chosen ZeRO
// stage by the ZeRO paper's accounting.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "frontend/compile.h"

namespace ds {

// Model-state bytes per rank by the ZeRO paper's accounting (Rajbhandari et al.
// 2020, section 5): for mixed-precision Adam 2Ψ fp16 parameters, 2Ψ fp16 gradients
// and K=12 Ψ fp32 optimizer state (master weights, momentum, variance); in fp32,
// 4Ψ + 4Ψ + KΨ with K=8 for Adam (moments), 4 for SGD with momentum, 0 without.
// Stage 1 partitions the optimizer state over N ranks, stage 2 also the
// gradients, stage 3 also the parameters.
struct ModelStateBytes {
  double params = 0, grads = 0, optimizer = 0;
  double total() const { return params + grads + optimizer; }
};
struct StatePrecision {
  double param_bytes = 2;       // per element, parameters and gradients
  double optimizer_bytes = 12;  // K
};
ModelStateBytes zeroModelStates(int64_t num_params, int stage, int64_t world_size,
                                StatePrecision precision = {});

struct GraphStats {
  std::map<std::string, int64_t> op_counts;
  int64_t num_nodes = 0;
  int64_t num_params = 0;  // trainable elements
  int64_t param_bytes = 0;
  int64_t num_buffer_elements = 0;
  int64_t activation_bytes = 0;  // every forward activation, as a training step keeps them
};
GraphStats graphStats(const Graph& graph);

std::string formatSummary(const Compilation& c, const std::string& model_path);

}  // namespace ds
