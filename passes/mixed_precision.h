// Pass "mixed-precision": DeepSpeed's fp16 / bf16 training (fp16.enabled,
// bf16.enabled) on the forward graph, before autodiff.
//
// Guarantees: every floating-point value of the forward graph is `compute` (f16 or
// bf16) except around the precision-sensitive ops, which compute in f32: LogSoftmax
// and the loss, and the large reductions (ReduceSum, ReduceMean) read and write
// f32; BatchNormalization and LayerNormalization read X and write Y in 16 bits with
// f32 parameters and statistics (ONNX's mixed T/T1/T2 typing), which every backend
// computes as Cast -> f32 op -> Cast would, to the bit. Softmax reads and writes
// 16 bits too (f32 math inside; forward equal to Cast -> f32 Softmax -> Cast to the
// bit, its gradient reading the rounded probabilities, as Megatron-LM's fused
// softmax does). Parameters whose
// every use is a 16-bit op become 16-bit (their initial values rounded), as
// DeepSpeed's module.half() / bfloat16() makes them; the others (BatchNorm and
// LayerNorm scale and bias) stay f32, as do buffers. f32 feeds, constants and
// parameters are cast where 16-bit ops read them; the loss (graph output `loss`) is
// f32, the model's other outputs (logits) keep the compute dtype, as DeepSpeed's
// half-precision module returns them. Casts are Cast nodes, so autodiff mirrors them: gradients of
// 16-bit parameters are 16-bit. The fp32 master weights and the loss scale are added by the ZeRO
// and optimizer passes (passes/zero_partition.h, add_optimizer.h).
#pragma once

#include "ir/graph.h"

namespace ds {

void convertToMixedPrecision(Graph& graph, DType compute, const Value* loss);

// Whether `op` computes in f32 under mixed precision.
bool keepsF32(const std::string& op);

}  // namespace ds
