#include "passes/add_optimizer.h"

#include <string>
#include <utility>
#include <vector>

#include "ir/error.h"

namespace ds {
namespace {

// The global L2 norm of the gradients; shards sum their squares over the ranks.
Value* gradNorm(Graph& g, const std::vector<ParamGrad>& updates, int64_t shard_world_size,
                Value* loss_scale) {
  Value* total = nullptr;
  for (const ParamGrad& u : updates) {
    Value* sum = g.addNode("ReduceSumSquare", {u.grad}, {{"keepdims", int64_t{0}}})->output(0);
    if (sum->dtype() != DType::F32)
      sum = g.addNode("Cast", {sum}, {{"to", std::string("f32")}})->output(0);
    total = total ? g.addNode("Add", {total, sum})->output(0) : sum;
  }
  if (shard_world_size > 1)
    total = g.addNode("AllReduce", {total}, {{"world_size", shard_world_size}},
                      {"grad_norm/sum_sq"}, "grad_norm/all_reduce")
                ->output(0);
  if (!loss_scale) return g.addNode("Sqrt", {total}, {}, {"grad_norm"}, "grad_norm")->output(0);
  Value* scaled = g.addNode("Sqrt", {total}, {}, {"grad_norm/scaled"}, "grad_norm")->output(0);
  return g.addNode("Div", {scaled, loss_scale}, {}, {"grad_norm"}, "grad_norm/unscale")->output(0);
}

Value* zeroState(Graph& g, Value* param, const std::string& suffix) {
  return addStateLike(g, param, suffix, Role::OptimizerState);
}

// The scalars every update reads: lr, step, and optionally the clipping
// coefficient and the fed momentum.
struct StepScalars {
  Value* lr;
  Value* step;
  Value* grad_scale;                // nullptr: no clipping
  Value* momentum;                  // nullptr: the attribute's constant momentum
  Value* overflow_check = nullptr;  // non-finite: the step changes nothing
};

Value* addSgdStep(Graph& g, Value* param, Value* grad, const StepScalars& s,
                  const OptimizerOptions& o) {
  Value* velocity =
      o.momentum != 0.0 || s.momentum ? zeroState(g, param, "momentum_buffer") : nullptr;
  std::vector<Value*> ins = {param,    grad,         s.lr,       s.step,
                             velocity, s.grad_scale, s.momentum, s.overflow_check};
  while (!ins.back()) ins.pop_back();
  Node* n = g.addNodeN("SgdStep", ins,
                       {{"momentum", o.momentum},
                        {"dampening", o.dampening},
                        {"nesterov", int64_t{o.nesterov}},
                        {"weight_decay", o.weight_decay}},
                       velocity ? 2 : 1, param->name() + "/step");
  g.addStateUpdate(param, n->output(0));
  if (velocity) g.addStateUpdate(velocity, n->output(1));
  return n->output(0);
}

// A step op with required states, each named "<param>.<name>" from `states`, after
// the four common inputs (the layout of ir/optimizer_ops.h): Adam's and Lamb's two
// moments, Lion's exp_avg, Adagrad's sum.
Value* addStepWithStates(Graph& g, const std::string& op, const std::vector<std::string>& states,
                         Value* param, Value* grad, const StepScalars& s, AttributeMap attrs) {
  std::vector<Value*> state_values;
  for (const std::string& name : states) state_values.push_back(zeroState(g, param, name));
  std::vector<Value*> ins = {param, grad, s.lr, s.step};
  ins.insert(ins.end(), state_values.begin(), state_values.end());
  ins.insert(ins.end(), {s.grad_scale, s.momentum, s.overflow_check});
  while (!ins.back()) ins.pop_back();
  Node* n = g.addNodeN(op, ins, std::move(attrs), 1 + states.size(), param->name() + "/step");
  g.addStateUpdate(param, n->output(0));
  for (size_t i = 0; i < state_values.size(); ++i)
    g.addStateUpdate(state_values[i], n->output(i + 1));
  return n->output(0);
}

Value* addStep(Graph& g, Value* param, Value* grad, const StepScalars& s,
               const OptimizerOptions& o) {
  if (o.type == "SGD") return addSgdStep(g, param, grad, s, o);
  if (o.type == "Adam" || o.type == "AdamW")
    return addStepWithStates(g, "AdamStep", {"exp_avg", "exp_avg_sq"}, param, grad, s,
                             {{"beta1", o.beta1},
                              {"beta2", o.beta2},
                              {"eps", o.eps},
                              {"weight_decay", o.weight_decay},
                              {"adam_w_mode", int64_t{o.adam_w_mode}},
                              {"bias_correction", int64_t{o.bias_correction}}});
  if (o.type == "Lamb") {
    // The trust ratio takes the norm of one whole parameter, which a ZeRO shard is not.
    DS_CHECK(!param->shardLayout(),
             "optimizer.type: Lamb's trust ratio needs whole parameters, "
             "and '",
             param->name(), "' is a ZeRO shard; Lamb runs at zero_optimization.stage 0");
    return addStepWithStates(g, "LambStep", {"exp_avg", "exp_avg_sq"}, param, grad, s,
                             {{"beta1", o.beta1},
                              {"beta2", o.beta2},
                              {"eps", o.eps},
                              {"weight_decay", o.weight_decay},
                              {"bias_correction", int64_t{o.bias_correction}},
                              {"eps_inside_sqrt", int64_t{o.eps_inside_sqrt}},
                              {"max_coeff", o.max_coeff},
                              {"min_coeff", o.min_coeff}});
  }
  if (o.type == "Lion")
    return addStepWithStates(
        g, "LionStep", {"exp_avg"}, param, grad, s,
        {{"beta1", o.beta1}, {"beta2", o.beta2}, {"weight_decay", o.weight_decay}});
  DS_CHECK(o.type == "Adagrad", "optimizer.type: '", o.type, "' is not supported");
  DS_CHECK(!s.momentum, "optimizer: Adagrad has no momentum to cycle");
  return addStepWithStates(g, "AdagradStep", {"sum"}, param, grad, s,
                           {{"eps", o.eps},
                            {"weight_decay", o.weight_decay},
                            {"lr_decay", o.lr_decay},
                            {"initial_accumulator_value", o.initial_accumulator_value}});
}

}  // namespace

std::vector<ParamGrad> inDeclarationOrder(const Graph& g, const std::map<Value*, Value*>& grads) {
  std::vector<ParamGrad> out;
  for (Value* param : g.sourcesWithRole(Role::Parameter))
    if (auto it = grads.find(param); it != grads.end()) out.push_back({param, it->second});
  return out;
}

Value* addStateLike(Graph& g, Value* like, const std::string& suffix, Role role) {
  std::string name = like->name() + "." + suffix;
  const ShardLayout* layout = like->shardLayout();
  if (!layout) return g.addSource(name, like->type(), role);
  ShardLayout state = *layout;
  for (ShardPiece& piece : state.pieces) piece.name += "." + suffix;
  return g.addShardedSource(name, like->dtype(), role, std::move(state));
}

std::map<Value*, Value*> addOptimizer(Graph& g, const std::vector<ParamGrad>& updates,
                                      const OptimizerOptions& o, int64_t shard_world_size,
                                      const LossScaling& scaling) {
  DS_CHECK(!updates.empty(), "optimizer: the model has no trainable parameters");
  DS_CHECK(o.gradient_clipping >= 0.0, "gradient_clipping: must be >= 0, is ", o.gradient_clipping);
  Graph::PhaseScope optimizer_step(g, Phase::OptimizerStep);
  StepScalars s{g.addSource(kLrFeed, {DType::F32, {}}, Role::Input),
                g.addSource(kStepFeed, {DType::I64, {}}, Role::Input), nullptr, nullptr};
  if (o.cycle_momentum) s.momentum = g.addSource(kMomentumFeed, {DType::F32, {}}, Role::Input);
  Value* norm = gradNorm(g, updates, shard_world_size, scaling.scale);
  g.addOutput(norm);
  if (o.gradient_clipping > 0.0)
    s.grad_scale = g.addNode("ClipCoef", {norm}, {{"max_norm", o.gradient_clipping}}, {"clip_coef"},
                             "clip_coef")
                       ->output(0);
  if (scaling.scale) {  // the updates divide the loss scale out of the gradients
    Value* one = g.addConstant("loss_scale/one", Tensor::fromDoubles(DType::F32, {}, {1.0}));
    Value* inverse =
        g.addNode("Div", {one, scaling.scale}, {}, {"loss_scale/inverse"}, "loss_scale/inverse")
            ->output(0);
    s.grad_scale =
        s.grad_scale
            ? g.addNode("Mul", {s.grad_scale, inverse}, {}, {"grad_scale"}, "grad_scale")->output(0)
            : inverse;
  }
  if (scaling.check_overflow) s.overflow_check = norm;
  std::map<Value*, Value*> next;
  for (const ParamGrad& u : updates) next[u.param] = addStep(g, u.param, u.grad, s, o);
  return next;
}

void bindBatchNormStatistics(Graph& g) {
  std::vector<Node*> norms;
  for (const auto& n : g.nodes())
    if (n->op() == "BatchNormalization" && n->i("training_mode") != 0 && n->numOutputs() >= 3)
      norms.push_back(n.get());
  for (Node* n : norms) {
    Value* mean = n->input(3);
    Value* var = n->input(4);
    if (mean->role() == Role::Buffer) g.addStateUpdate(mean, n->output(1));
    if (var->role() != Role::Buffer) continue;
    // PyTorch's running variance, whose models these are: m·v + (1−m)·var·n/(n−1)
    // with the unbiased batch variance, where ONNX mixes in the biased one. The
    // kernel does it (one pass, no extra steps).
    const Shape& x = n->input(0)->shape();
    int64_t count = x[0];
    for (size_t d = 2; d < x.size(); ++d) count *= x[d];
    DS_CHECK(count > 1, n->describe(), ": training-mode BatchNormalization needs more than one ",
             "value per channel (input ", shapeToString(x), "), as in PyTorch");
    n->setAttr("unbiased_running_var", int64_t{1});
    g.addStateUpdate(var, n->output(2));
  }
}

}  // namespace ds
