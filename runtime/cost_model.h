// A roofline cost model of plan steps: what each step computes (FLOPs), moves
// (bytes of its input and output tensors) and how long it takes on a device
// (runtime/device_profile.h). Kernels take the launch overhead plus the longer of
// their arithmetic at the dtype's peak and their memory traffic at HBM bandwidth;
// collectives follow NCCL's ring algorithm over NVLink within a node and the
// network beyond it. Only shapes, dtypes and attributes are read, so a plan's
// cost is known before it runs; docs/cost_model.md lists every formula.
#pragma once

#include <cstdint>
#include <string>

#include "ir/dtype.h"
#include "ir/plan.h"
#include "ir/plan_verifier.h"  // isCollectiveOp
#include "runtime/device_profile.h"

namespace ds {

struct StepCost {
  double flops = 0;
  int64_t bytes = 0;       // every input and output tensor, each read or written once
  int64_t comm_bytes = 0;  // collectives: the full buffer (AllGather's output, else the input)
  int64_t world_size = 1;  // collectives: the ranks taking part
  double seconds = 0;      // predicted duration
};

// FLOPs of one step (multiply and add count as two); data movement counts zero.
double stepFlops(const PlanFile& plan, const planpb::Step& step);
// Bytes of the step's input and output tensors.
int64_t stepBytes(const PlanFile& plan, const planpb::Step& step);

// The arithmetic peak `op` reaches in `dtype`: tensor cores for fp16/bf16 Conv,
// Gemm and MatMul (and their gradients); CUDA cores otherwise.
double peakFlops(const std::string& op, DType dtype, const DeviceProfile& device);

// launch + max(flops / peak, bytes / HBM bandwidth).
double kernelSeconds(double flops, int64_t bytes, double peak_flops, const DeviceProfile& device);

// NCCL ring model for a collective over `world_size` ranks whose full buffer is
// `bytes` (AllGather's output, the others' input), with N = world_size:
//   AllReduce               2 (N-1)/N bytes / bw + 2 (N-1) latency
//   ReduceScatter, AllGather  (N-1)/N bytes / bw +   (N-1) latency
//   Broadcast                         bytes / bw + log2(N) latency
// bw and latency are NVLink's when N <= gpus_per_node, else the network's. One
// rank takes no time.
double collectiveSeconds(const std::string& op, int64_t bytes, int64_t world_size,
                         const DeviceProfile& device);

// Offload's steps: a Copy moves its input over PCIe (launch + bytes / PCIe
// bandwidth); a step on the "host" stream takes host_step_seconds + max(FLOPs /
// host FLOP/s, bytes / host memory bandwidth).
StepCost stepCost(const PlanFile& plan, const planpb::Step& step, const DeviceProfile& device);

}  // namespace ds
