#include "passes/accumulate_grads.h"

#include "ir/error.h"

namespace ds {

Value* scaleLoss(Graph& g, Value* loss, int64_t steps) {
  DS_CHECK(steps >= 1, "gradient_accumulation_steps: must be at least 1, is ", steps);
  Tensor divisor = Tensor::fromDoubles(loss->dtype(), {}, {static_cast<double>(steps)});
  Value* divisor_value = g.addConstant("loss/accumulation_steps", std::move(divisor));
  return g
      .addNode("Div", {loss, divisor_value}, {}, {"loss/accumulation_scaled"}, "loss/accumulation")
      ->output(0);
}

std::map<Value*, Value*> accumulateGradients(Graph& g, const std::map<Value*, Value*>& grads) {
  std::map<Value*, Value*> out;
  // Parameters in declaration order, so plans are deterministic.
  for (Value* param : g.sourcesWithRole(Role::Parameter)) {
    auto found = grads.find(param);
    if (found == grads.end()) continue;
    std::string name = param->name() + ".grad_acc";
    Value* acc = g.addSource(name, found->second->type(), Role::OptimizerState);
    Value* sum =
        g.addNode("Add", {acc, found->second}, {}, {name + "/sum"}, name + "/add")->output(0);
    sum->setRole(Role::Gradient);
    g.addStateUpdate(acc, sum);
    out[param] = sum;
  }
  return out;
}

void resetAccumulators(Graph& g, const std::map<Value*, Value*>& accumulated) {
  Graph::PhaseScope optimizer_step(g, Phase::OptimizerStep);
  for (Value* param : g.sourcesWithRole(Role::Parameter)) {
    auto found = accumulated.find(param);
    if (found == accumulated.end()) continue;
    Value* sum = found->second;
    Value* acc = sum->producer()->input(0);
    Node* zero = g.addNode("ZerosLike", {sum}, {}, {acc->name() + "/zero"}, acc->name() + "/reset");
    zero->output(0)->setRole(Role::Gradient);
    g.addStateUpdate(acc, zero->output(0));
  }
}

}  // namespace ds
