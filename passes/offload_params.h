// Pass "offload-params": DeepSpeed's ZeRO-Infinity parameter offload
// (zero_optimization.offload_param.device = "cpu") on a stage-3 training graph,
// after the optimizer pass and offload-optimizer.
//
// Guarantees: every stage-3 parameter shard (a sharded Parameter source,
// "zero/bucketI.params") lives in host memory. Each device node that reads one (the
// AllGathers of forward and, unless kept, of backward) reads it through a Copy{to =
// "device"} of its own, placed right before it, so the shard's device copy lives
// only until the gather has read it. A shard's update arrives on the host: the
// host step's rounded value itself under optimizer offload, else a Copy{to = "host"}
// of the device step's, made right after it. Parameters kept whole (of at most
// stage3_param_persistence_threshold elements) stay on the device, as in DeepSpeed.
// The arithmetic is unchanged, so a plan with parameter offload trains exactly as
// the same plan without it.
#pragma once

#include "ir/graph.h"

namespace ds {

void offloadParams(Graph& graph);

}  // namespace ds
