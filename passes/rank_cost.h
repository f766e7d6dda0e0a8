// What one rank of a compiled graph holds and sends per optimizer step: the
// figures the plan records (planpb::RankCost) and --dump summary prints, so users
// see ZeRO's memory savings and their communication price before running. Every
// rank runs the same graph, so one rank's figures are every rank's.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "ir/graph.h"

namespace ds {

struct CommVolume {
  int64_t calls_per_step = 0;
  int64_t bytes_per_step = 0;  // the collective's full buffer: AllGather's output,
                               // AllReduce's and ReduceScatter's input
};

struct RankCost {
  int64_t parameter_bytes = 0;             // persistent parameters (ZeRO-3: the rank's shards)
  int64_t gradient_bytes = 0;              // gradients the optimizer step reads (ZeRO-2/3: shards)
  int64_t optimizer_bytes = 0;             // optimizer moments and fp32 master shards
  int64_t buffer_bytes = 0;                // BatchNorm running statistics
  int64_t comm_buffer_bytes = 0;           // communication buffers live at once, at the peak
  std::map<std::string, CommVolume> comm;  // by collective op
  int64_t modelStateBytes() const { return parameter_bytes + gradient_bytes + optimizer_bytes; }
};

// `accumulation`: micro-steps per optimizer step (collectives of the micro-step
// phase run that many times).
RankCost rankCost(const Graph& graph, int64_t accumulation);

}  // namespace ds
