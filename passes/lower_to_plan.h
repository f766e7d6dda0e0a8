// Lowering: a verified graph and its memory plan become a plan file.
//
// Guarantees: every node becomes one step, in graph order, on the compute stream,
// with all of its attributes (schema defaults filled in); every value becomes a
// plan tensor: node outputs in the arena at the memory plan's offsets, sources
// (weights, buffers, constants, feeds) in the persistent region with their initial
// data in the blob. Each rank gets its own step list (identical until the
// distributed passes land).
//
// Algorithm:
//  1. Number tensors: sources in declaration order, then node outputs in order.
//  2. Lay out the persistent region: aligned offsets, in the same order.
//  3. Emit one step per node for every rank.
#pragma once

#include <string>

#include "ir/graph.h"
#include "ir/plan.h"
#include "passes/memory_plan.h"

namespace ds {

struct LowerOptions {
  std::string model;  // for the header
  int64_t world_size = 1;
  std::string config_json;   // the effective DeepSpeed configuration
  int64_t accumulation = 1;  // gradient_accumulation_steps, for the per-step cost
  // zero_optimization.overlap_comm: collectives run on a "comm" stream, ordered
  // against compute by events, so they overlap the compute steps after them.
  bool overlap_comm = false;
  // Blob bytes the caller appends after lowering (dscompile: the embedded ONNX
  // model), reserved with the initial data so that appending copies nothing.
  size_t blob_reserve = 0;
};

PlanFile lowerToPlan(const Graph& graph, const MemoryPlan& memory, const LowerOptions& options);

}  // namespace ds
