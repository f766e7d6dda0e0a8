#include "kernels/cuda/layout.h"

#include "kernels/cpu/layout.h"
#include "kernels/cuda/kernel.h"
#include "kernels/cuda/launch.h"

namespace ds::cuda {

size_t chooseChannelsLast(const planpb::Plan& plan, std::vector<cpu::PlannedStep>& steps) {
  cpu::LayoutPolicy policy;
  policy.rule_of = [](const std::string& op) {
    return CudaKernelRegistry::instance().channelsLastRule(op);
  };
  policy.matters = [](const cpu::TensorView& v) {
    return cpu::hasSpatialLayout(v) && isSixteenBitFloat(v.dtype());
  };
  const std::vector<bool> chosen = cpu::chooseChannelsLast(steps, runIntermediates(plan), policy);
  for (cpu::PlannedStep& step : steps) {
    for (size_t i = 0; i < step.inputs.size(); ++i)
      if (step.inputs[i] >= 0) step.ctx->inputs[i].channels_last = chosen[step.inputs[i]];
    for (size_t i = 0; i < step.outputs.size(); ++i)
      if (step.outputs[i] >= 0) step.ctx->outputs[i].channels_last = chosen[step.outputs[i]];
  }
  size_t count = 0;
  for (bool c : chosen) count += c ? 1 : 0;
  return count;
}

std::vector<int64_t> physicalStrides(const cpu::TensorView& v) {
  const Shape& s = v.shape();
  std::vector<int64_t> strides(s.size(), 1);
  if (v.channels_last && s.size() == 4) {
    const int64_t c = s[1], w = s[3];
    return {s[2] * w * c, 1, w * c, c};
  }
  for (size_t d = s.size(); d-- > 1;) strides[d - 1] = strides[d] * s[d];
  return strides;
}

}  // namespace ds::cuda
