// A plan step as an executor's load-time choices see it: the channels-last
// layout (layout.h) and epilogue fusion (fusion.h, which the CUDA executor uses
// too) both edit its kernel context before the kernel is built.
#pragma once

#include <vector>

#include "kernels/cpu/kernel.h"

namespace ds::cpu {

struct PlannedStep {
  KernelContext* ctx = nullptr;
  // Plan tensors, -1 when absent; a fused producer's output 0 becomes the last
  // absorbed step's.
  std::vector<int> inputs, outputs;
  int phase = 0;          // steps of different phases never fuse
  bool promoted = false;  // run through kernels/cpu/promote16.h: plain, never fused
  bool absorbed = false;  // set by fuseEpilogues: an earlier step's epilogue does its work
  // The stream it runs on, and whether it waits for events first (the CPU runs
  // one stream and ignores events): a step on another stream, or one that waits,
  // is never absorbed, as its work would no longer be ordered as the plan says.
  int lane = 0;
  bool waits = false;
};

}  // namespace ds::cpu
