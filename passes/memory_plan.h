// Memory planning: static arena offsets for every value computed by a node, from
// lifetimes in the graph's linear schedule (node order).
//
// Guarantees: two values whose lifetimes overlap never share bytes, except an
// output placed in place of an input its op may overwrite (OpSchema::inplace_input)
// when that input dies at the node and has the same type. Sources (inputs,
// parameters, buffers, constants) are persistent and not in the arena, nor are the
// new values of state updates, which lowering places in their state's memory, nor
// the values reshapes turn into those when nothing reads the state afterwards.
//
// Algorithm:
//  1. Number the nodes; a value lives from its producer's index to its last user's
//     index (graph outputs live to the end). A collective's inputs live on until
//     the first reader of its result, since it may run on the communication stream
//     while the compute steps before that reader run.
//  2. Merge in-place pairs into one buffer whose lifetime is the union.
//  3. Greedy by size (largest first): place each buffer at the lowest aligned offset
//     that does not overlap any placed buffer whose lifetime intersects its own.
//  4. The arena is the highest end offset; the peak is the largest sum of live
//     buffer sizes at any step, a lower bound on any arena.
#pragma once

#include <cstdint>
#include <unordered_map>

#include "ir/graph.h"

namespace ds {

inline constexpr int64_t kArenaAlignment = 256;  // cuBLAS/cuDNN-friendly, and cache lines

struct Allocation {
  int64_t offset = 0;
  int64_t bytes = 0;
  int64_t first_step = 0;  // producer's index
  int64_t last_step = 0;   // last user's index (inclusive)
  bool host = false;       // in the host arena (optimizer offload), not the device's
};

struct MemoryPlan {
  std::unordered_map<const Value*, Allocation> allocations;
  int64_t arena_bytes = 0;
  int64_t host_arena_bytes = 0;  // values of host nodes (passes/offload_optimizer.h)
  int64_t peak_live_bytes = 0;   // max over steps of the device bytes live at that step
  int64_t inplace_count = 0;
  // Values stored in a state's own memory, by that state: the new values of state
  // updates, and the inputs that relabelling steps turn into them (a parameter's
  // piece of an unpacked bucket: the unpacking writes the parameter directly).
  std::unordered_map<const Value*, const Value*> in_state;

  double ratio() const {
    return peak_live_bytes ? static_cast<double>(arena_bytes) / peak_live_bytes : 1.0;
  }
};

MemoryPlan planMemory(const Graph& graph);

// Throws ds::Error naming the first two values that are live at the same step and
// overlap in the arena without being an in-place pair. Tests run it on every plan.
void checkMemoryPlan(const Graph& graph, const MemoryPlan& plan);

}  // namespace ds
