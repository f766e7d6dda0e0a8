#include "runtime/wall_clock.h"

#include "ir/error.h"
#include "ir/graph.h"

namespace ds {

PartTimes& PartTimes::operator+=(const PartTimes& other) {
  forward += other.forward;
  backward += other.backward;
  backward_reduce += other.backward_reduce;
  step += other.step;
  return *this;
}

std::vector<StepPart> stepParts(const PlanFile& plan, int rank) {
  auto hasRole = [&](const google::protobuf::RepeatedField<int32_t>& tensors, Role role) {
    for (int t : tensors)
      if (t >= 0 && plan.plan.tensors(t).role() == static_cast<int>(role)) return true;
    return false;
  };
  const planpb::RankPlan& steps = plan.plan.ranks(rank);
  std::vector<StepPart> parts;
  parts.reserve(static_cast<size_t>(steps.steps_size()));
  bool backward = false;
  for (const planpb::Step& step : steps.steps()) {
    // A gradient reduction makes a communication buffer (AllReduce) or a gradient
    // shard (ReduceScatter); the gradient norm's AllReduce, an optimizer step's,
    // makes a plain value.
    const bool reduction = step.op() == "AllReduce" || step.op() == "ReduceScatter";
    const bool gradient_reduction = reduction && (hasRole(step.outputs(), Role::CommBuffer) ||
                                                  hasRole(step.outputs(), Role::Gradient));
    backward = backward || gradient_reduction || hasRole(step.outputs(), Role::Gradient);
    if (gradient_reduction)
      parts.push_back(StepPart::BackwardReduce);
    else if (step.phase() == planpb::OPTIMIZER_STEP)
      parts.push_back(StepPart::OptimizerStep);
    else
      parts.push_back(backward ? StepPart::Backward : StepPart::Forward);
  }
  return parts;
}

PartTimes partTimes(const std::vector<StepPart>& parts, std::span<const double> seconds) {
  DS_CHECK(seconds.size() == parts.size(), "wall-clock breakdown: ", seconds.size(),
           " step times for a plan of ", parts.size(), " steps");
  PartTimes t;
  for (size_t s = 0; s < parts.size(); ++s) {
    switch (parts[s]) {
      case StepPart::Forward:
        t.forward += seconds[s];
        break;
      case StepPart::BackwardReduce:
        t.backward_reduce += seconds[s];
        t.backward += seconds[s];
        break;
      case StepPart::Backward:
        t.backward += seconds[s];
        break;
      case StepPart::OptimizerStep:
        t.step += seconds[s];
        break;
    }
  }
  return t;
}

std::array<NamedPart, 5> namedParts(const PartTimes& t) {
  return {{{"fwd", "forward", t.forward},
           {"bwd", "backward", t.backward},
           {"bwd_inner", "backward_inner", t.backwardInner()},
           {"bwd_allreduce", "backward_allreduce", t.backward_reduce},
           {"step", "step", t.step}}};
}

PartTimes sumOf(std::span<const PartTimes> micro_steps) {
  PartTimes sum;
  for (const PartTimes& t : micro_steps) sum += t;
  return sum;
}

bool timesSteps(const nlohmann::json& config) {
  auto breakdown = config.find("wall_clock_breakdown");
  auto profiler = config.find("flops_profiler");
  return (breakdown != config.end() && breakdown->is_boolean() && breakdown->get<bool>()) ||
         (profiler != config.end() && profiler->is_object() && profiler->value("enabled", false));
}

}  // namespace ds
