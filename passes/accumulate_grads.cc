#include "passes/accumulate_grads.h"

#include "ir/error.h"

namespace ds {

Value* scaleLoss(Graph& g, Value* loss, int64_t divisor) {
  DS_CHECK(divisor >= 1, "gradient_accumulation_steps x world size: must be at least 1, is ",
           divisor);
  Tensor value = Tensor::fromDoubles(loss->dtype(), {}, {static_cast<double>(divisor)});
  Value* divisor_value = g.addConstant("loss/accumulation_steps", std::move(value));
  return g
      .addNode("Div", {loss, divisor_value}, {}, {"loss/accumulation_scaled"}, "loss/accumulation")
      ->output(0);
}

std::vector<ParamGrad> accumulateGradients(Graph& g, const std::vector<ParamGrad>& grads,
                                           bool in_f32) {
  std::vector<ParamGrad> out;
  for (const ParamGrad& pg : grads) {
    Value* grad = pg.grad;
    Value* acc = nullptr;
    if (in_f32 && grad->dtype() != DType::F32 && isFloat(grad->dtype())) {
      grad = g.addNode("Cast", {grad}, {{"to", std::string("f32")}},
                       {g.uniqueName(grad->name() + "/f32")})
                 ->output(0);
      grad->setRole(Role::Gradient);
      acc = g.addSource(pg.param->name() + ".grad_acc", {DType::F32, pg.param->shape()},
                        Role::OptimizerState);
    } else {
      acc = addStateLike(g, pg.param, "grad_acc", Role::OptimizerState);
    }
    const std::string& name = acc->name();
    Value* sum = g.addNode("Add", {acc, grad}, {}, {name + "/sum"}, name + "/add")->output(0);
    sum->setRole(Role::Gradient);
    g.addStateUpdate(acc, sum);
    out.push_back({pg.param, sum});
  }
  return out;
}

std::map<Value*, Value*> accumulateGradients(Graph& g, const std::map<Value*, Value*>& grads) {
  std::map<Value*, Value*> out;
  for (const ParamGrad& pg : accumulateGradients(g, inDeclarationOrder(g, grads)))
    out[pg.param] = pg.grad;
  return out;
}

void resetAccumulators(Graph& g, const std::vector<ParamGrad>& accumulated) {
  Graph::PhaseScope optimizer_step(g, Phase::OptimizerStep);
  for (const ParamGrad& pg : accumulated) {
    Value* sum = pg.grad;
    Value* acc = sum->producer()->input(0);
    Node* zero = g.addNode("ZerosLike", {sum}, {}, {acc->name() + "/zero"}, acc->name() + "/reset");
    zero->output(0)->setRole(Role::Gradient);
    g.addStateUpdate(acc, zero->output(0));
  }
}

void resetAccumulators(Graph& g, const std::map<Value*, Value*>& accumulated) {
  resetAccumulators(g, inDeclarationOrder(g, accumulated));
}

}  // namespace ds
