#include "kernels/cuda/epilogues.h"

#include "kernels/cpu/fusion.h"
#include "kernels/cuda/kernel.h"

namespace ds::cuda {

size_t fuseEpilogues(const planpb::Plan& plan, std::vector<cpu::PlannedStep>& steps) {
  // Only arena tensors that are neither fed nor read after the run may vanish.
  cpu::fuseEpilogues(steps, runIntermediates(plan), [](const std::string& op) {
    return CudaKernelRegistry::instance().epilogueRule(op);
  });
  size_t absorbed = 0;
  for (const cpu::PlannedStep& step : steps) absorbed += step.absorbed ? 1 : 0;
  return absorbed;
}

}  // namespace ds::cuda
