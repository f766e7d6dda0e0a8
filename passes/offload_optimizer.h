// Pass "offload-optimizer": DeepSpeed's ZeRO-Offload (zero_optimization.
// offload_optimizer.device = "cpu") on a training graph after the optimizer pass.
//
// Guarantees: optimizer state (role optstate: fp32 master shards, moments, gradient
// accumulators) lives in host memory, and every node that reads or updates it runs
// on the host (Node::onHost): the update, the accumulation of gradient shards, their
// reset, and the rounding of updated masters to 16 bits, and a widening Cast only
// host nodes read (so 16-bit gradients cross PCIe). A device value a host node
// reads arrives through a Copy{to = "host"} node (gradients down, once per value),
// a host value a device node reads, or a device state a host value updates, through
// a Copy{to = "device"} (parameters up). Collectives stay on the device. The
// arithmetic is unchanged, so an offloaded plan trains exactly as the same plan
// without offload; lowering places host values in host memory and runs host nodes
// and copies on their own streams.
#pragma once

#include "ir/graph.h"

namespace ds {

void offloadOptimizer(Graph& graph);

// Whether `v` lives in host memory: the output of a host node or of a Copy to the
// host, or a source that host nodes use (offloaded optimizer state) or that reaches
// the device only through copies (an offloaded parameter shard).
bool isHostValue(const Value* v);

}  // namespace ds
