#include "passes/add_optimizer.h"

#include "ir/error.h"

namespace ds {
namespace {

Value* gradNorm(Graph& g, const std::map<Value*, Value*>& grads) {
  Value* total = nullptr;
  for (Value* param : g.sourcesWithRole(Role::Parameter)) {
    if (!grads.count(param)) continue;
    Value* grad = grads.at(param);
    Value* sq = g.addNode("Mul", {grad, grad})->output(0);
    Value* sum = g.addNode("ReduceSum", {sq}, {{"keepdims", int64_t{0}}})->output(0);
    if (sum->dtype() != DType::F32)
      sum = g.addNode("Cast", {sum}, {{"to", std::string("f32")}})->output(0);
    total = total ? g.addNode("Add", {total, sum})->output(0) : sum;
  }
  return g.addNode("Sqrt", {total}, {}, {"grad_norm"}, "grad_norm")->output(0);
}

Value* zeroState(Graph& g, Value* param, const std::string& suffix) {
  return g.addSource(param->name() + "." + suffix, param->type(), Role::OptimizerState);
}

}  // namespace

void addOptimizer(Graph& g, const std::map<Value*, Value*>& grads, const OptimizerOptions& o) {
  DS_CHECK(!grads.empty(), "optimizer: the model has no trainable parameters");
  Value* lr = g.addSource(kLrFeed, {DType::F32, {}}, Role::Input);
  Value* step = g.addSource(kStepFeed, {DType::I64, {}}, Role::Input);
  g.addOutput(gradNorm(g, grads));
  // Parameters in declaration order, so plans are deterministic.
  for (Value* param : g.sourcesWithRole(Role::Parameter)) {
    auto found = grads.find(param);
    if (found == grads.end()) continue;
    Value* grad = found->second;
    std::string name = param->name() + "/step";
    if (o.type == "SGD") {
      std::vector<Value*> ins = {param, grad, lr, step};
      if (o.momentum != 0.0) ins.push_back(zeroState(g, param, "momentum_buffer"));
      Node* n = g.addNodeN("SgdStep", ins,
                           {{"momentum", o.momentum},
                            {"dampening", o.dampening},
                            {"nesterov", int64_t{o.nesterov}},
                            {"weight_decay", o.weight_decay}},
                           ins.size() - 3, name);
      g.addStateUpdate(param, n->output(0));
      if (ins.size() == 5) g.addStateUpdate(ins[4], n->output(1));
    } else {
      DS_CHECK(o.type == "Adam" || o.type == "AdamW", "optimizer.type: '", o.type,
               "' is not supported");
      Value* m = zeroState(g, param, "exp_avg");
      Value* v = zeroState(g, param, "exp_avg_sq");
      Node* n = g.addNodeN("AdamStep", {param, grad, lr, step, m, v},
                           {{"beta1", o.beta1},
                            {"beta2", o.beta2},
                            {"eps", o.eps},
                            {"weight_decay", o.weight_decay},
                            {"adam_w_mode", int64_t{o.adam_w_mode}},
                            {"bias_correction", int64_t{o.bias_correction}}},
                           3, name);
      g.addStateUpdate(param, n->output(0));
      g.addStateUpdate(m, n->output(1));
      g.addStateUpdate(v, n->output(2));
    }
  }
}

void bindBatchNormStatistics(Graph& g) {
  for (const auto& n : g.nodes()) {
    if (n->op() != "BatchNormalization" || n->i("training_mode") == 0 || n->numOutputs() < 3)
      continue;
    for (size_t k = 1; k < 3; ++k) {
      Value* buffer = n->input(k + 2);
      if (buffer->role() == Role::Buffer) g.addStateUpdate(buffer, n->output(k));
    }
  }
}

}  // namespace ds
