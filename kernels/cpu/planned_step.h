// A plan step as the CPU executor's load-time choices see it: the channels-last
// layout (layout.h) and epilogue fusion (fusion.h) both edit its kernel context
// before the kernel is built.
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
};

}  // namespace ds::cpu
