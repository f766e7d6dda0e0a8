#include "frontend/compile.h"

#include "frontend/onnx_import.h"
#include "ir/error.h"
#include "ir/verifier.h"
#include "passes/add_loss.h"
#include "passes/add_optimizer.h"
#include "passes/autodiff.h"
#include "passes/dead_code.h"
#include "passes/lower_to_plan.h"
#include "passes/pipeline.h"
#include "runtime/lr_schedule.h"

namespace ds {

namespace {

// Command-line flags override the config; the batch arithmetic is then resolved.
DsConfig effectiveConfig(const CompileOptions& o) {
  DsConfig c = o.config_path ? loadDsConfig(*o.config_path) : DsConfig{};
  DS_CHECK(o.world_size >= 1, "--gpus: must be at least 1, is ", o.world_size);
  if (o.zero_stage) {
    DS_CHECK(*o.zero_stage >= 0 && *o.zero_stage <= 3, "--zero: must be 0, 1, 2 or 3, is ",
             *o.zero_stage);
    c.zero_stage = *o.zero_stage;
  }
  if (o.micro_batch) {
    DS_CHECK(*o.micro_batch >= 1, "--batch: must be at least 1, is ", *o.micro_batch);
    c.micro_batch = o.micro_batch;
    if (c.train_batch_size && c.gradient_accumulation_steps)
      c.train_batch_size.reset();
    else if (c.train_batch_size)
      c.gradient_accumulation_steps.reset();
  }
  resolveBatch(c, o.world_size);
  return c;
}

OptimizerOptions optimizerOptions(const DsConfig& c) {
  OptimizerOptions o;
  o.type = c.optimizer;
  const nlohmann::json params = c.raw.contains("optimizer")
                                    ? c.raw["optimizer"].value("params", nlohmann::json::object())
                                    : nlohmann::json::object();
  auto number = [&](const char* key, double fallback) {
    auto it = params.find(key);
    DS_CHECK(it == params.end() || it->is_number(), "optimizer.params.", key,
             ": 'auto' cannot be resolved without a trainer; give a number");
    return it == params.end() ? fallback : it->get<double>();
  };
  if (auto betas = params.find("betas"); betas != params.end()) {
    DS_CHECK(betas->is_array() && betas->size() == 2,
             "optimizer.params.betas: must be [beta1, beta2]");
    o.beta1 = (*betas)[0].get<double>();
    o.beta2 = (*betas)[1].get<double>();
  }
  o.eps = number("eps", 1e-8);
  o.weight_decay = number("weight_decay", 0.0);
  o.momentum = number("momentum", 0.0);
  o.dampening = number("dampening", 0.0);
  o.nesterov = params.value("nesterov", false);
  o.adam_w_mode = params.value("adam_w_mode", true);
  o.bias_correction = params.value("bias_correction", true);
  return o;
}

// --freeze-bn: BatchNormalization in inference form (running statistics, no updates).
void freezeBatchNorm(Graph& g) {
  std::vector<Node*> bns;
  for (const auto& n : g.nodes())
    if (n->op() == "BatchNormalization") bns.push_back(n.get());
  for (Node* n : bns) {
    AttributeMap attrs = n->attrs();
    attrs["training_mode"] = int64_t{0};
    Node* frozen =
        g.addNode("BatchNormalization", n->inputs(), attrs, {}, n->name() + "/frozen", n);
    g.replaceAllUsesWith(n->output(0), frozen->output(0));
    g.eraseNode(n);
  }
}

// Loss, reverse-mode gradients of every parameter, the optimizer step and the
// BatchNorm statistics updates, verified.
void addTraining(Graph& g, const CompileOptions& o, const DsConfig& config) {
  // Requests a training plan cannot honour yet fail loudly instead of training differently.
  DS_CHECK(!config.fp16 && !config.bf16,
           "fp16.enabled / bf16.enabled: mixed-precision training is not implemented yet; "
           "disable it to train in fp32");
  DS_CHECK(o.world_size == 1, "--gpus ", o.world_size,
           ": multi-rank training plans are not implemented yet; compile with --gpus 1");
  DS_CHECK(config.gradient_accumulation_steps.value_or(1) == 1,
           "gradient_accumulation_steps: accumulation is not implemented yet; use 1");
  auto clip = config.raw.find("gradient_clipping");
  DS_CHECK(clip == config.raw.end() || (clip->is_number() && clip->get<double>() == 0.0),
           "gradient_clipping: not implemented yet; remove it or set it to 0");
  learningRate(config.raw, 1);  // rejects unimplemented schedules now
  if (o.freeze_bn) freezeBatchNorm(g);
  Value* loss = addLoss(g, {.kind = *o.loss, .label = o.label, .output = o.loss_output});
  std::vector<Value*> params = g.sourcesWithRole(Role::Parameter);
  auto grads = buildGradients(g, loss, params);
  addOptimizer(g, grads, optimizerOptions(config));
  if (!o.freeze_bn) bindBatchNormStatistics(g);
  eliminateDeadCode(g);
  verifyGraph(g);
}

}  // namespace

Compilation compile(const CompileOptions& o) {
  Compilation out;
  out.config = effectiveConfig(o);
  out.world_size = o.world_size;
  out.zero_stage = out.config.zero_stage;

  // Stage 1: import, binding the batch axis and folding shape arithmetic.
  ImportOptions import;
  import.batch = out.config.micro_batch;
  out.graph = importOnnxFile(o.model_path, import);
  out.micro_batch = out.config.micro_batch.value_or(0);

  // Stage 2: clean-up passes, verified after each.
  runPasses(*out.graph, {"fold-constants", "dead-code"},
            {.verify_each = true, .dump_after = o.dump_after, .dump = o.dump});

  // Stage 3: training — loss, backward graph, optimizer step.
  if (o.loss) addTraining(*out.graph, o, out.config);

  // Stage 4: static memory plan for the arena.
  out.memory = planMemory(*out.graph);
  return out;
}

nlohmann::json effectiveConfigJson(const Compilation& c) {
  nlohmann::json j = c.config.raw.is_object() ? c.config.raw : nlohmann::json::object();
  j["train_micro_batch_size_per_gpu"] = c.micro_batch;
  j["gradient_accumulation_steps"] = c.config.gradient_accumulation_steps.value_or(1);
  j["train_batch_size"] = c.config.train_batch_size.value_or(c.micro_batch * c.world_size);
  j["zero_optimization"]["stage"] = c.zero_stage;
  j["world_size"] = c.world_size;
  return j;
}

PlanFile buildPlan(const Compilation& c, const std::string& model_path) {
  return lowerToPlan(*c.graph, c.memory,
                     {.model = model_path,
                      .world_size = c.world_size,
                      .config_json = effectiveConfigJson(c).dump()});
}

}  // namespace ds
