// Model-state memory before choosing a ZeRO stage, the way DeepSpeed's
// estimate_zero2_model_states_mem_needs and estimate_zero3_model_states_mem_needs
// (the "_all_cold" variants: from counts, no model needed) estimate it: bytes per
// GPU and per node's host memory for every stage and offload choice, from the
// parameter count, the largest layer, the world size and GPUs per node.
//
// DeepSpeed's formulas assume mixed-precision Adam: 2 bytes per parameter for the
// 16-bit parameters and as many for their gradients, 16 on the optimizer's side
// (fp32 gradient partition, fp32 master, two moments). For fp32 training the same
// formulas hold with 4 bytes for parameters and gradients and 12 on the
// optimizer's side (no separate master copy). docs/cost_model.md lists them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ir/plan.h"

namespace ds {

enum class Offload { None, Optimizer, OptimizerAndParams };
const char* offloadName(Offload offload);  // "none", "optimizer", "optimizer+params"

struct ModelSize {
  int64_t params = 0;                // trainable elements, whole (shards count their pieces)
  int64_t largest_layer_params = 0;  // the most elements of one module's own parameters
};

// The Parameter-role tensors of a plan, whole: a ZeRO-3 shard stands for its
// pieces. A module is a parameter name up to its last '.' ("layer1.0.conv1").
ModelSize modelSizeOf(const PlanFile& plan);

struct EstimateSetup {
  ModelSize model;
  int64_t world_size = 1;
  int64_t gpus_per_node = 8;
  bool mixed_precision = false;  // fp16/bf16 parameters with fp32 master weights
  double buffer_factor = 1.5;    // DeepSpeed's additional_buffer_factor, host memory only
};

struct MemoryEstimate {
  int stage = 0;
  Offload offload = Offload::None;
  int zero_init = -1;  // stage 3: whether the model is built partitioned (1) or not (0); else -1
  double gpu_bytes = 0;
  double host_bytes = 0;  // per node
};

// Every stage 0-3 with each offload it supports (optimizer from stage 1,
// parameters at stage 3), stage 3 with and without zero_init.
std::vector<MemoryEstimate> estimateModelStateMemory(const EstimateSetup& setup);

// A table of the estimates, for dsplan --estimate.
std::string formatEstimates(const EstimateSetup& setup);

// Whether a plan's config asks for fp16 or bf16.
bool planIsMixedPrecision(const PlanFile& plan);

}  // namespace ds
