#include "frontend/compile.h"

#include <filesystem>
#include <utility>

#include "frontend/onnx_export.h"
#include "frontend/onnx_import.h"
#include "ir/error.h"
#include "ir/verifier.h"
#include "passes/accumulate_grads.h"
#include "passes/add_loss.h"
#include "passes/add_optimizer.h"
#include "passes/autodiff.h"
#include "passes/dead_code.h"
#include "passes/lower_to_plan.h"
#include "passes/mixed_precision.h"
#include "passes/offload_optimizer.h"
#include "passes/offload_params.h"
#include "passes/pipeline.h"
#include "passes/recompute.h"
#include "passes/seed_dropout.h"
#include "passes/zero_partition.h"
#include "runtime/config_number.h"
#include "runtime/loss_scaler.h"
#include "runtime/lr_schedule.h"

namespace ds {

namespace {

// DeepSpeed steps an offloaded Adagrad with its CPU Adagrad, which divides the
// gradient without the weight decay by the root of the sum; dscompile steps
// torch.optim.Adagrad (DeepSpeed's without offload) either way.
void warnOffloadedAdagradDecay(DsConfig& c) {
  if (c.optimizer != "Adagrad" || !c.offload_optimizer || !c.raw.contains("optimizer")) return;
  const nlohmann::json decay =
      c.raw["optimizer"].value("params", nlohmann::json::object()).value("weight_decay", 0.0);
  if (decay.is_number() && decay.get<double>() != 0.0)
    c.warnings.push_back(
        "optimizer.params.weight_decay: DeepSpeed's offloaded (CPU) Adagrad divides the "
        "gradient without weight decay by the root of its sum; dscompile steps "
        "torch.optim.Adagrad, as DeepSpeed does without offload");
}

// Where DeepSpeed's Lamb under 16 bits differs from what it asks: fp16 runs its
// unfused optimizer, whose loss scaler has no hysteresis (dscompile's has none for
// Lamb either, runtime/loss_scaler.h); bf16 runs its BF16_Optimizer, which hands
// Lamb one flat group, so one trust ratio spans every parameter, where dscompile
// keeps one per parameter.
void warnLambPrecisionDifferences(DsConfig& c) {
  if (c.optimizer != "Lamb") return;
  const nlohmann::json fp16 =
      c.raw.is_object() ? c.raw.value("fp16", nlohmann::json::object()) : nlohmann::json::object();
  for (const char* key : {"hysteresis", "consecutive_hysteresis"})
    if (c.fp16 && fp16.contains(key))
      c.warnings.push_back(std::string("fp16.") + key +
                           ": DeepSpeed's fp16 optimizer for Lamb (unfused) has no hysteresis, "
                           "and neither has dscompile's; ignored");
  if (c.bf16)
    c.warnings.push_back(
        "bf16.enabled: DeepSpeed's bf16 optimizer gives Lamb one flat group, so one trust "
        "ratio spans every parameter; dscompile keeps Lamb's trust ratio per parameter");
}

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
  // Without ZeRO, DeepSpeed accumulates bf16 gradients in fp32 (its BF16_Optimizer)
  // and fp16 ones in fp16 (its FP16_Optimizer), and refuses the other mixes.
  if (c.grad_accum_dtype && c.zero_stage == 0) {
    DS_CHECK(!(c.bf16 && *c.grad_accum_dtype == "bf16"),
             "data_types.grad_accum_dtype: bf16 accumulation needs ZeRO (stage 1-3); without it "
             "bf16 gradients accumulate in fp32, as in DeepSpeed");
    DS_CHECK(!(c.fp16 && *c.grad_accum_dtype == "fp32"),
             "data_types.grad_accum_dtype: fp32 accumulation of fp16 gradients needs ZeRO (stage "
             "1-3), as in DeepSpeed");
  }
  if (c.offload_param && c.zero_stage != 3) {  // DeepSpeed reads it at stage 3 only
    c.warnings.push_back(
        "zero_optimization.offload_param: offloads stage 3's parameter shards; "
        "ignored at ZeRO stage " +
        std::to_string(c.zero_stage));
    c.offload_param = false;
  }
  warnOffloadedAdagradDecay(c);
  warnLambPrecisionDifferences(c);
  // FusedLamb's trust ratio is per parameter; ZeRO hands an optimizer flat shards, so
  // DeepSpeed refuses Lamb there unless told to run it untested (on shards).
  DS_CHECK(c.optimizer != "Lamb" || c.zero_stage == 0,
           "optimizer.type: Lamb takes each parameter's norm, which ZeRO's shards split; "
           "it runs at zero_optimization.stage 0, not ",
           c.zero_stage);
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
    return it == params.end() ? fallback
                              : configNumber(*it, std::string("optimizer.params.") + key);
  };
  if (auto betas = params.find("betas"); betas != params.end()) {
    if (!betas->is_array()) configNumber(*betas, "optimizer.params.betas");  // "auto"
    DS_CHECK(betas->is_array() && betas->size() == 2,
             "optimizer.params.betas: must be [beta1, beta2], is ", betas->dump());
    o.beta1 = configNumber((*betas)[0], "optimizer.params.betas[0]");
    o.beta2 = configNumber((*betas)[1], "optimizer.params.betas[1]");
  }
  o.eps = number("eps", o.type == "Adagrad" ? 1e-10 : 1e-8);  // the classes' defaults
  o.weight_decay = number("weight_decay", 0.0);
  o.momentum = number("momentum", 0.0);
  o.dampening = number("dampening", 0.0);
  o.nesterov = params.value("nesterov", false);
  o.lr_decay = number("lr_decay", 0.0);
  o.initial_accumulator_value = number("initial_accumulator_value", 0.0);
  o.eps_inside_sqrt = params.value("eps_inside_sqrt", false);
  DS_CHECK(o.type != "Lamb" || !params.value("amsgrad", false),
           "optimizer.params.amsgrad: Lamb has no AMSGrad variant (DeepSpeed's FusedLamb refuses "
           "it)");
  o.max_coeff = number("max_coeff", 10.0);
  o.min_coeff = number("min_coeff", 0.01);
  o.adam_w_mode = params.value("adam_w_mode", true);
  o.bias_correction = params.value("bias_correction", true);
  if (auto clip = c.raw.find("gradient_clipping"); clip != c.raw.end()) {
    o.gradient_clipping = configNumber(*clip, "gradient_clipping");
    DS_CHECK(o.gradient_clipping >= 0, "gradient_clipping: must be >= 0, is ", clip->dump());
  }
  // OneCycle cycles beta1 per step and fixes beta2 at 0.99 (DeepSpeed's OneCycle).
  o.cycle_momentum = cyclesMomentum(c.raw);
  if (o.cycle_momentum) o.beta2 = kOneCycleBeta2;
  return o;
}

// The optimizer section as the plan applies it: type and every parameter, defaults
// filled in.
nlohmann::json optimizerJson(const DsConfig& c) {
  OptimizerOptions o = optimizerOptions(c);
  nlohmann::json p = {{"lr", baseLearningRate(c.raw)}, {"weight_decay", o.weight_decay}};
  if (o.type == "SGD") {
    p.update({{"momentum", o.momentum}, {"dampening", o.dampening}, {"nesterov", o.nesterov}});
  } else if (o.type == "Lion") {
    p.update({{"betas", {o.beta1, o.beta2}}});
  } else if (o.type == "Lamb") {
    p.update({{"betas", {o.beta1, o.beta2}},
              {"eps", o.eps},
              {"eps_inside_sqrt", o.eps_inside_sqrt},
              {"bias_correction", o.bias_correction},
              {"max_coeff", o.max_coeff},
              {"min_coeff", o.min_coeff}});
  } else if (o.type == "Adagrad") {
    p.update({{"eps", o.eps},
              {"lr_decay", o.lr_decay},
              {"initial_accumulator_value", o.initial_accumulator_value}});
  } else {
    p.update({{"betas", {o.beta1, o.beta2}},
              {"eps", o.eps},
              {"adam_w_mode", o.adam_w_mode},
              {"bias_correction", o.bias_correction}});
  }
  return {{"type", o.type}, {"params", p}};
}

// The micro-batch, when no flag or config key gives it, is the model's static
// batch (axis 0 of its first input); the batch arithmetic is then completed.
void microBatchFromModel(DsConfig& c, const Graph& g, int64_t world_size) {
  if (c.micro_batch) return;
  for (const Value* v : g.feeds()) {
    if (v->rank() == 0) continue;
    c.micro_batch = v->shape()[0];
    break;
  }
  DS_CHECK(c.micro_batch,
           "train_micro_batch_size_per_gpu: not given and the model has no "
           "batched input; give --batch N");
  resolveBatch(c, world_size);
}

// zero_optimization's bucket and stage-3 limits; absent or "auto": DeepSpeed's defaults.
ZeroOptions zeroOptions(const DsConfig& c, int64_t world_size) {
  ZeroOptions z;
  z.stage = c.zero_stage;
  z.world_size = world_size;
  z.accumulation = c.gradient_accumulation_steps.value_or(1);
  // DeepSpeed accumulates in data_types.grad_accum_dtype; unset, in fp32 for bf16
  // without ZeRO (its BF16_Optimizer), else in the model's dtype.
  z.accumulate_in_f32 =
      c.grad_accum_dtype ? *c.grad_accum_dtype == "fp32" : c.bf16 && c.zero_stage == 0;
  z.communicate_in_f32 = c.communicate_in_fp32;
  z.whole_masters = c.optimizer == "Lamb";
  const nlohmann::json section = c.raw.is_object() && c.raw.contains("zero_optimization")
                                     ? c.raw["zero_optimization"]
                                     : nlohmann::json::object();
  auto count = [&](const char* key, int64_t* out) {
    auto it = section.find(key);
    if (it == section.end() || (it->is_string() && *it == "auto")) return;
    DS_CHECK(it->is_number() && it->get<double>() >= 0 && it->get<double>() < 9.2e18,
             "zero_optimization.", key, ": must be a non-negative number, is ", it->dump());
    *out = static_cast<int64_t>(it->get<double>());
  };
  count("reduce_bucket_size", &z.reduce_bucket_elements);
  count("stage3_prefetch_bucket_size", &z.prefetch_bucket_elements);
  count("stage3_param_persistence_threshold", &z.param_persistence_threshold);
  count("stage3_max_live_parameters", &z.max_live_parameters);
  count("stage3_max_reuse_distance", &z.max_reuse_distance);
  // Stage 3 steps the optimizer in sub-groups of at most sub_group_size elements per
  // rank (DeepSpeed's default 1e9); a stage-3 bucket is the unit dscompile steps
  // (one update per bucket shard), so the sub-group size caps its shard.
  int64_t sub_group = 1'000'000'000;
  count("sub_group_size", &sub_group);
  DS_CHECK(sub_group >= 1, "zero_optimization.sub_group_size: must be >= 1");
  if (z.stage == 3 && sub_group < z.prefetch_bucket_elements / z.world_size)
    z.prefetch_bucket_elements = sub_group * z.world_size;
  DS_CHECK(z.reduce_bucket_elements >= 1, "zero_optimization.reduce_bucket_size: must be >= 1");
  z.prefetch = z.prefetch_bucket_elements > 0;  // 0: no prefetching, as in DeepSpeed
  z.prefetch_bucket_elements = std::max<int64_t>(1, z.prefetch_bucket_elements);
  return z;
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

PassRunOptions passOptions(const CompileOptions& o) {
  return {.verify_each = true,
          .dump_after = o.dump_after,
          .disabled = o.disabled_passes,
          .dump = o.dump};
}

// Loss, reverse-mode gradients of every parameter, the optimizer step and the
// BatchNorm statistics updates, verified; `notes` gets the choices made for the user.
void addTraining(Graph& g, const CompileOptions& o, const DsConfig& config,
                 std::vector<std::string>* notes) {
  // Rejects bad schedules now, naming the key ("auto" total_num_steps is dsrun's --steps).
  learningRate(withTotalSteps(config.raw, 1), 1);
  if (o.freeze_bn) freezeBatchNorm(g);
  Value* loss = addLoss(g, {.kind = *o.loss, .label = o.label, .output = o.loss_output});
  std::vector<Value*> params = g.sourcesWithRole(Role::Parameter);
  // Backward from loss / (G x N): gradients summed over G micro-steps (accumulators
  // the optimizer step reads and resets) and N ranks are the global batch's mean.
  const ZeroOptions zero = zeroOptions(config, o.world_size);
  const int64_t divisor = zero.accumulation * zero.world_size;
  if (config.fp16 || config.bf16) {
    convertToMixedPrecision(g, config.fp16 ? DType::F16 : DType::BF16, loss);
    // Tensor-core rows: before autodiff, which differentiates the padding.
    runPasses(g, {"pad-products", "fuse-loss-padding"}, passOptions(o));
  }
  Value* seed = divisor > 1 ? scaleLoss(g, loss, divisor) : loss;
  LossScaling scaling;
  if (config.fp16) {  // backward from loss x scale; the optimizer divides it out
    scaling.scale = g.addSource(kLossScaleFeed, {DType::F32, {}}, Role::Input);
    scaling.check_overflow = lossScalerOptions(config.raw).static_scale == 0;
    seed = g.addNode("Mul", {seed, scaling.scale}, {}, {"loss/scaled"}, "loss/scale")->output(0);
  }
  const Node* last_forward = g.nodes().back().get();
  auto grads = buildGradients(g, seed, params);
  runPasses(g, {"fuse-relu-grad"}, passOptions(o));
  if (o.checkpoint_activations) {
    const RecomputeResult r = recomputeActivations(g, last_forward);
    notes->push_back(
        r.segments == 0
            ? std::string("--checkpoint-activations: no segment to recompute (the forward has "
                          "too few points where one activation alone is live); nothing changes")
            : "--checkpoint-activations: backward recomputes " + std::to_string(r.segments) +
                  " segments (" + std::to_string(r.copied_nodes) + " nodes)");
  }
  ZeroPartition partition = partitionForZero(g, grads, last_forward, zero);
  auto next = addOptimizer(g, partition.updates, optimizerOptions(config),
                           partition.shard_world_size, scaling);
  finishZeroStep(g, partition, next);
  // After the partition, which holds the gradient values fuse-bias-grad replaces;
  // fuse-optimizer-casts before offload moves the step.
  runPasses(g, {"fuse-bias-grad", "fuse-optimizer-casts"}, passOptions(o));
  seedDropout(g, g.value(kStepFeed));
  if (!o.freeze_bn) bindBatchNormStatistics(g);
  if (config.offload_optimizer) {
    DS_CHECK(zero.stage >= 1,
             "zero_optimization.offload_optimizer (or cpu_offload): needs ZeRO stage 1, 2 or 3 "
             "(the optimizer state it moves to the host is partitioned)");
    offloadOptimizer(g);
  }
  if (config.offload_param) offloadParams(g);
  eliminateDeadCode(g);
  verifyGraph(g);
}

// Whether `v` can be a loss as it is (LossOptions "output"): one float.
bool isScalarLoss(const Value* v) {
  return isFloat(v->dtype()) && v->type().numel() == 1;
}

// The loss to train with (kind and model output; "" for the first): --loss; else,
// when the DeepSpeed config has an optimizer (a training config, as the engine's
// backward and step use it) or --loss-output names an output, the model's own loss
// where that output (or, without --loss-output, any output) is one float, or
// cross-entropy over the output (a classifier's logits, the first by default), said
// in a note; else none (a forward plan).
std::optional<std::pair<std::string, std::string>> chooseLoss(const CompileOptions& o,
                                                              const DsConfig& config,
                                                              const Graph& g,
                                                              std::vector<std::string>* notes) {
  if (o.loss) return std::pair(*o.loss, o.loss_output);
  const bool optimizer = config.raw.is_object() && config.raw.contains("optimizer");
  if ((!optimizer && o.loss_output.empty()) || g.outputs().empty()) return std::nullopt;
  const Value* chosen = g.outputs()[0];
  if (!o.loss_output.empty()) {
    chosen = g.findValue(o.loss_output);
    DS_CHECK(chosen != nullptr, "--loss-output: the model has no output '", o.loss_output, "'");
  } else {
    for (const Value* v : g.outputs())
      if (isScalarLoss(v)) {
        chosen = v;
        break;
      }
  }
  const bool own = isScalarLoss(chosen);
  notes->push_back(std::string("no --loss: training with ") +
                   (own ? "the model's own loss, its output '" + chosen->name() + "'"
                        : "cross-entropy over output '" + chosen->name() +
                              "' (and a label input '" + o.label + "')") +
                   (optimizer ? ", as the config's optimizer asks for training"
                              : ", as --loss-output asks for training") +
                   "; --loss chooses another");
  return std::pair(std::string(own ? "output" : "cross_entropy"), chosen->name());
}

}  // namespace

Compilation compile(const CompileOptions& o) {
  checkDisabledPasses(o.disabled_passes);
  Compilation out;
  out.config = effectiveConfig(o);
  out.world_size = o.world_size;
  out.zero_stage = out.config.zero_stage;

  // Stage 1: import, binding the batch axis and folding shape arithmetic.
  ImportOptions import;
  import.batch = out.config.micro_batch;
  out.graph = importOnnxFile(o.model_path, import);
  microBatchFromModel(out.config, *out.graph, o.world_size);
  out.micro_batch = *out.config.micro_batch;

  // Stage 2: clean-up passes, verified after each.
  runPasses(*out.graph,
            {"fold-constants", "fold-transpose", "fold-scale", "fold-softmax-mask", "fuse-gelu",
             "fuse-layer-norm", "fuse-attention", "dead-code", "pack-attention"},
            passOptions(o));

  // Stage 3: training — loss, backward graph, optimizer step.
  if (auto loss = chooseLoss(o, out.config, *out.graph, &out.notes)) {
    CompileOptions training = o;
    training.loss = loss->first;
    training.loss_output = loss->second;
    addTraining(*out.graph, training, out.config, &out.notes);
  } else if (o.checkpoint_activations) {
    out.notes.push_back(
        "--checkpoint-activations: a forward plan has no backward to "
        "recompute for; ignored");
  }

  // Stage 4: static memory plan for the arena.
  out.memory = planMemory(*out.graph);
  return out;
}

nlohmann::json effectiveConfigJson(const Compilation& c) {
  nlohmann::json j = c.config.raw.is_object() ? c.config.raw : nlohmann::json::object();
  j["train_micro_batch_size_per_gpu"] = c.micro_batch;
  j["gradient_accumulation_steps"] = c.config.gradient_accumulation_steps.value_or(1);
  j["train_batch_size"] = c.config.train_batch_size.value_or(c.micro_batch * c.world_size);
  if (c.graph && c.graph->findValue(kLrFeed)) {  // a training plan: what its optimizer applies
    j["gradient_clipping"] = optimizerOptions(c.config).gradient_clipping;
    j["optimizer"] = optimizerJson(c.config);
    if (j.contains("scheduler")) j["scheduler"]["params"] = resolvedSchedulerParams(c.config.raw);
  }
  j["zero_optimization"]["stage"] = c.zero_stage;
  j["world_size"] = c.world_size;
  return j;
}

// zero_optimization.overlap_comm, with DeepSpeed's default: on at stage 3, off below.
static bool overlapComm(const Compilation& c) {
  const nlohmann::json& raw = c.config.raw;
  if (raw.is_object() && raw.contains("zero_optimization")) {
    auto it = raw["zero_optimization"].find("overlap_comm");
    if (it != raw["zero_optimization"].end() && it->is_boolean()) return it->get<bool>();
  }
  return c.zero_stage == 3;
}

PlanFile buildPlan(const Compilation& c, const std::string& model_path) {
  PlanFile plan = lowerToPlan(*c.graph, c.memory,
                              {.model = model_path,
                               .world_size = c.world_size,
                               .config_json = effectiveConfigJson(c).dump(),
                               .accumulation = c.config.gradient_accumulation_steps.value_or(1),
                               .overlap_comm = overlapComm(c),
                               // at most the model file's bytes (trained weights left out)
                               .blob_reserve = std::filesystem::file_size(model_path) +
                                               static_cast<size_t>(kPlanAlignment)});
  embedOnnxModel(model_path, &plan);  // for dsrun --export-onnx
  return plan;
}

}  // namespace ds
