#include "kernels/cuda/epilogues.h"

#include "kernels/cpu/fusion.h"
#include "kernels/cuda/kernel.h"

namespace ds::cuda {

size_t fuseEpilogues(const planpb::Plan& plan, std::vector<cpu::PlannedStep>& steps) {
  // Only arena tensors that are neither fed nor read after the run may vanish.
  std::vector<bool> intermediate(static_cast<size_t>(plan.tensors_size()));
  for (int t = 0; t < plan.tensors_size(); ++t)
    intermediate[static_cast<size_t>(t)] = plan.tensors(t).storage() == planpb::ARENA;
  for (const auto* outside : {&plan.feeds(), &plan.outputs()})
    for (int t : *outside) intermediate[static_cast<size_t>(t)] = false;
  cpu::fuseEpilogues(steps, intermediate, [](const std::string& op) {
    return CudaKernelRegistry::instance().epilogueRule(op);
  });
  size_t absorbed = 0;
  for (const cpu::PlannedStep& step : steps) absorbed += step.absorbed ? 1 : 0;
  return absorbed;
}

}  // namespace ds::cuda
