#include "frontend/ds_config_schema.h"

#include <algorithm>

#include "ir/error.h"

namespace ds {
namespace {

using nlohmann::json;

enum class Type { Int, Number, Bool, String, Object, List, Any };
enum Auto : bool { kNoAuto = false, kAuto = true };
// kUsed: dscompile reads the key. kInherent: what any value asks for, dscompile
// always does, or the values choose among implementations of the same math (offload
// buffers are always pinned; torch_adam). kIgnored: not implemented, a warning,
// unless the value asks for what dscompile does anyway (Key::same_as) or, for a
// feature's object, has "enabled": false.
enum class Impl { kIgnored, kUsed, kInherent };
using enum Impl;

struct Key {
  const char* name;
  Type type;
  Impl implemented;
  Auto allows_auto = kNoAuto;
  std::vector<Key> children = {};  // for objects; empty = any keys (unchecked)
  // kIgnored: the value (JSON text; DeepSpeed's default, mostly) that asks for
  // dscompile's behaviour, so needs no warning; nullptr: none.
  const char* same_as = nullptr;
  // kIgnored: what dscompile offers instead, appended to the warning; nullptr: none.
  const char* instead = nullptr;
};

// An ignored key whose value asks for nothing dscompile lacks.
bool asksNothingMissing(const Key& k, const json& value) {
  if (k.same_as && value == json::parse(k.same_as)) return true;
  if (!value.is_object()) return false;
  // A feature switched off: "enabled": false, or an offload to "device": "none".
  return (value.contains("enabled") && value["enabled"] == false) ||
         (value.contains("device") && value["device"] == "none");
}

const char* typeName(Type t) {
  switch (t) {
    case Type::Int:
      return "an integer";
    case Type::Number:
      return "a number";
    case Type::Bool:
      return "true or false";
    case Type::String:
      return "a string";
    case Type::Object:
      return "an object";
    case Type::List:
      return "a list";
    case Type::Any:
      return "anything";
  }
  return "?";
}

// Optimizer and scheduler params are checked against the union of the params of
// the types dscompile implements; the type itself is checked in ds_config.cc.
const std::vector<Key>& optimizerParams() {
  static const std::vector<Key> keys = {
      {"lr", Type::Number, kUsed, kAuto},
      {"betas", Type::List, kUsed, kAuto},
      {"eps", Type::Number, kUsed, kAuto},
      {"weight_decay", Type::Number, kUsed, kAuto},
      {"adam_w_mode", Type::Bool, kUsed},
      {"bias_correction", Type::Bool, kUsed},
      {"torch_adam", Type::Bool, kInherent},
      {"amsgrad", Type::Bool, kIgnored, kNoAuto, {}, "false"},
      {"momentum", Type::Number, kUsed},
      {"nesterov", Type::Bool, kUsed},
      {"dampening", Type::Number, kUsed},
      {"fused", Type::Bool, kInherent},
      {"lr_decay", Type::Number, kUsed},
      {"initial_accumulator_value", Type::Number, kUsed},
      {"foreach", Type::Bool, kInherent},  // torch.optim's loop choice: the same math
      {"eps_inside_sqrt", Type::Bool, kUsed},
      {"max_coeff", Type::Number, kUsed},
      {"min_coeff", Type::Number, kUsed},
      // FusedLamb's own clipping by a norm its caller passes, which DeepSpeed's engine
      // does not (gradient_clipping is the engine's).
      {"max_grad_norm", Type::Number, kIgnored, kNoAuto, {}, "0"},
  };
  return keys;
}

const std::vector<Key>& schedulerParams() {
  static const std::vector<Key> keys = {
      {"warmup_min_lr", Type::Number, kUsed, kAuto},
      {"warmup_max_lr", Type::Number, kUsed, kAuto},
      {"warmup_num_steps", Type::Int, kUsed, kAuto},
      {"warmup_type", Type::String, kUsed},
      {"total_num_steps", Type::Int, kUsed, kAuto},
      {"warmup_min_ratio", Type::Number, kUsed},
      {"cos_min_ratio", Type::Number, kUsed},
      {"cycle_min_lr", Type::Number, kUsed},
      {"cycle_max_lr", Type::Number, kUsed},
      {"decay_lr_rate", Type::Number, kUsed},
      {"cycle_first_step_size", Type::Int, kUsed},
      {"cycle_second_step_size", Type::Int, kUsed},
      {"cycle_first_stair_count", Type::Int, kUsed},
      {"cycle_second_stair_count", Type::Int, kUsed},
      {"decay_step_size", Type::Int, kUsed},
      {"cycle_momentum", Type::Bool, kUsed},
      {"cycle_min_mom", Type::Number, kUsed},
      {"cycle_max_mom", Type::Number, kUsed},
      {"decay_mom_rate", Type::Number, kUsed},
      {"last_batch_iteration", Type::Int, kUsed},
      {"lr_range_test_min_lr", Type::Number, kUsed},
      {"lr_range_test_step_size", Type::Int, kUsed},
      {"lr_range_test_step_rate", Type::Number, kUsed},
      {"lr_range_test_staircase", Type::Bool, kUsed},
  };
  return keys;
}

const std::vector<Key>& offloadKeys() {
  static const std::vector<Key> keys = {
      // NVMe offload's own keys mean nothing to a CPU offload, and "device": "nvme"
      // warns once itself (ds_config.cc).
      {"device", Type::String, kUsed},        {"pin_memory", Type::Bool, kInherent},
      {"buffer_count", Type::Int, kInherent}, {"buffer_size", Type::Number, kInherent},
      {"fast_init", Type::Bool, kInherent},   {"ratio", Type::Number, kIgnored, kNoAuto, {}, "1.0"},
      {"nvme_path", Type::String, kInherent}, {"max_in_cpu", Type::Number, kInherent},
  };
  return keys;
}

const std::vector<Key>& zeroKeys() {
  static const std::vector<Key> keys = {
      {"stage", Type::Int, kUsed},
      {"allgather_partitions", Type::Bool, kIgnored, kNoAuto, {}, "true"},
      {"allgather_bucket_size", Type::Number, kUsed},
      {"overlap_comm", Type::Bool, kUsed},
      {"reduce_scatter", Type::Bool, kUsed},
      {"reduce_bucket_size", Type::Number, kUsed, kAuto},
      {"contiguous_gradients", Type::Bool, kUsed},
      {"offload_optimizer", Type::Object, kUsed, kNoAuto, offloadKeys()},
      {"offload_param", Type::Object, kUsed, kNoAuto, offloadKeys()},
      {"sub_group_size", Type::Number, kUsed},
      {"stage3_prefetch_bucket_size", Type::Number, kUsed, kAuto},
      {"stage3_param_persistence_threshold", Type::Number, kUsed, kAuto},
      {"stage3_max_live_parameters", Type::Number, kUsed},
      {"stage3_max_reuse_distance", Type::Number, kUsed},
      {"stage3_gather_16bit_weights_on_model_save", Type::Bool, kUsed},
      {"stage3_gather_fp16_weights_on_model_save", Type::Bool, kUsed},
      {"round_robin_gradients", Type::Bool, kInherent},
      {"ignore_unused_parameters", Type::Bool, kIgnored, kNoAuto, {}, "true"},
      {"elastic_checkpoint", Type::Bool, kIgnored, kNoAuto, {}, "false"},
      {"load_from_fp32_weights", Type::Bool, kIgnored, kNoAuto, {}, "true"},
      {"cpu_offload", Type::Bool, kUsed},
      {"cpu_offload_param", Type::Bool, kUsed},
      {"cpu_offload_use_pin_memory", Type::Bool, kInherent},
      {"zero_hpz_partition_size", Type::Int, kIgnored, kNoAuto, {}, "1"},
      {"zero_quantized_weights", Type::Bool, kIgnored, kNoAuto, {}, "false"},
      {"zero_quantized_gradients", Type::Bool, kIgnored, kNoAuto, {}, "false"},
      {"mics_shard_size", Type::Int, kIgnored, kNoAuto, {}, "-1"},
  };
  return keys;
}

// The keys of the monitors dscompile implements (csv_monitor, tensorboard).
const std::vector<Key>& monitorKeys() {
  static const std::vector<Key> keys = {{"enabled", Type::Bool, kUsed},
                                        {"output_path", Type::String, kUsed},
                                        {"job_name", Type::String, kUsed}};
  return keys;
}

// flops_profiler (runtime/flops_profile.h). recompute_fwd_factor tunes DeepSpeed's
// estimate of backward's FLOPs, which dscompile counts from the plan instead.
const std::vector<Key>& flopsProfilerKeys() {
  static constexpr const char* kPerOp = "the profile's table is per op, not per module";
  static const std::vector<Key> keys = {
      {"enabled", Type::Bool, kUsed},
      {"recompute_fwd_factor", Type::Number, kInherent},
      {"profile_step", Type::Int, kUsed},
      {"module_depth", Type::Int, kIgnored, kNoAuto, {}, "-1", kPerOp},
      {"top_modules", Type::Int, kIgnored, kNoAuto, {}, "1", kPerOp},
      {"detailed", Type::Bool, kInherent},  // it gates DeepSpeed's module tree
      {"output_file", Type::Any, kUsed}};
  return keys;
}

// comms_logger (runtime/comm_log.h). debug adds the calling Python function to
// each record's name, which a plan has no notion of.
const std::vector<Key>& commsLoggerKeys() {
  static const std::vector<Key> keys = {{"enabled", Type::Bool, kUsed},
                                        {"verbose", Type::Bool, kUsed},
                                        {"prof_all", Type::Bool, kUsed},
                                        {"prof_ops", Type::List, kUsed},
                                        {"debug", Type::Bool, kIgnored, kNoAuto, {}, "false"}};
  return keys;
}

// checkpoint: how DeepSpeed's engine saves and loads. dsrun names its checkpoints
// itself (step-N, one tag for all ranks) and restores any of them at another world
// size or ZeRO stage (docs/checkpoints.md), which universal checkpoints are for.
const std::vector<Key>& checkpointKeys() {
  static const std::vector<Key> keys = {
      {"tag_validation", Type::String, kInherent},
      {"load_universal", Type::Bool, kInherent},
      {"checkpoint_serialization", Type::Bool, kInherent},
      {"use_node_local_storage",
       Type::Bool,
       kIgnored,
       kNoAuto,
       {},
       "false",
       "dsrun --save writes every rank's file into one directory"},
      {"parallel_write", Type::Object, kIgnored, kNoAuto, {}, R"({"pipeline_stage": false})"},
      {"writer", Type::Object, kIgnored}};
  return keys;
}

// What the monitors dscompile lacks point to.
constexpr const char* kUseOtherMonitors =
    "csv_monitor and tensorboard write the same events (loss, lr, loss scale)";

const std::vector<Key>& topKeys() {
  static const std::vector<Key> keys = {
      {"train_batch_size", Type::Int, kUsed, kAuto},
      {"train_micro_batch_size_per_gpu", Type::Int, kUsed, kAuto},
      {"gradient_accumulation_steps", Type::Int, kUsed, kAuto},
      {"optimizer",
       Type::Object,
       kUsed,
       kNoAuto,
       {{"type", Type::String, kUsed},
        {"params", Type::Object, kUsed, kNoAuto, optimizerParams()}}},
      {"scheduler",
       Type::Object,
       kUsed,
       kNoAuto,
       {{"type", Type::String, kUsed},
        {"params", Type::Object, kUsed, kNoAuto, schedulerParams()}}},
      {"fp16",
       Type::Object,
       kUsed,
       kNoAuto,
       {{"enabled", Type::Bool, kUsed, kAuto},
        // true: float inputs are cast to fp16; false: the user feeds fp16. Either
        // way the model computes on fp16 inputs, which mixed precision's input Cast
        // gives it.
        {"auto_cast", Type::Bool, kInherent},
        {"loss_scale", Type::Number, kUsed},
        {"initial_scale_power", Type::Int, kUsed},
        {"loss_scale_window", Type::Int, kUsed},
        {"hysteresis", Type::Int, kUsed},
        {"consecutive_hysteresis", Type::Bool, kUsed},
        {"min_loss_scale", Type::Number, kUsed},
        {"fp16_master_weights_and_grads", Type::Bool, kIgnored, kNoAuto, {}, "false"}}},
      {"bf16", Type::Object, kUsed, kNoAuto, {{"enabled", Type::Bool, kUsed, kAuto}}},
      {"gradient_clipping", Type::Number, kUsed, kAuto},
      {"zero_optimization", Type::Object, kUsed, kNoAuto, zeroKeys()},
      {"steps_per_print", Type::Int, kUsed},
      {"wall_clock_breakdown", Type::Bool, kUsed},
      {"dump_state", Type::Bool, kIgnored, kNoAuto, {}, "false"},
      // Where the division by the world size happens (before the reduction, after it,
      // or split by the factor): dscompile divides the loss before backward; every
      // choice gives the mean gradient, up to rounding.
      {"prescale_gradients", Type::Bool, kInherent},
      {"gradient_predivide_factor", Type::Number, kInherent},
      {"sparse_gradients", Type::Bool, kIgnored, kNoAuto, {}, "false"},
      {"communication_data_type", Type::Any, kUsed},
      {"seed", Type::Int, kUsed},
      {"zero_allow_untested_optimizer", Type::Bool, kInherent},
      {"zero_force_ds_cpu_optimizer", Type::Bool, kInherent},
      {"memory_breakdown", Type::Bool, kIgnored, kNoAuto, {}, "false"},
      {"amp", Type::Object, kIgnored},
      {"activation_checkpointing",
       Type::Object,
       kIgnored,
       kNoAuto,
       {},
       nullptr,
       "it configures DeepSpeed's checkpoint() API, which an ONNX graph cannot call: "
       "dscompile --checkpoint-activations recomputes activations"},
      {"flops_profiler", Type::Object, kUsed, kNoAuto, flopsProfilerKeys()},
      {"tensorboard", Type::Object, kUsed, kNoAuto, monitorKeys()},
      {"wandb", Type::Object, kIgnored, kNoAuto, {}, nullptr, kUseOtherMonitors},
      {"csv_monitor", Type::Object, kUsed, kNoAuto, monitorKeys()},
      {"comet", Type::Object, kIgnored, kNoAuto, {}, nullptr, kUseOtherMonitors},
      {"comms_logger", Type::Object, kUsed, kNoAuto, commsLoggerKeys()},
      {"checkpoint", Type::Object, kUsed, kNoAuto, checkpointKeys()},
      {"data_types", Type::Object, kUsed, kNoAuto, {{"grad_accum_dtype", Type::Any, kUsed}}},
      {"elasticity", Type::Object, kIgnored},
      {"aio", Type::Object, kIgnored},
      {"autotuning", Type::Object, kIgnored},
      {"compression_training", Type::Object, kIgnored},
      {"data_efficiency", Type::Object, kIgnored},
      {"pipeline", Type::Object, kIgnored},
  };
  return keys;
}

bool hasType(const json& v, Type t) {
  switch (t) {
    case Type::Int:
      return v.is_number_integer() ||
             (v.is_number_float() &&
              v.get<double>() == static_cast<double>(static_cast<int64_t>(v.get<double>())));
    case Type::Number:
      return v.is_number();
    case Type::Bool:
      return v.is_boolean();
    case Type::String:
      return v.is_string();
    case Type::Object:
      return v.is_object();
    case Type::List:
      return v.is_array();
    case Type::Any:
      return true;
  }
  return false;
}

std::string suggestion(const std::string& key, const std::vector<Key>& keys) {
  const Key* best = nullptr;
  size_t best_distance = key.size();
  for (const Key& k : keys) {
    size_t d = editDistance(key, k.name);
    if (d < best_distance) {
      best_distance = d;
      best = &k;
    }
  }
  bool close = best && best_distance <= std::max<size_t>(2, key.size() / 3);
  return close ? std::string("; did you mean '") + best->name + "'?" : "";
}

void validate(const json& obj, const std::vector<Key>& keys, const std::string& path,
              std::vector<std::string>& warnings) {
  for (const auto& [name, value] : obj.items()) {
    std::string here = path + name;
    auto it = std::find_if(keys.begin(), keys.end(), [&](const Key& k) { return name == k.name; });
    DS_CHECK(it != keys.end(), here, ": unknown DeepSpeed config key", suggestion(name, keys));
    if (it->implemented == kIgnored) {
      if (!asksNothingMissing(*it, value))
        warnings.push_back(here + ": not implemented by dscompile, ignored" +
                           (it->instead ? std::string("; ") + it->instead : ""));
      continue;
    }
    if (it->allows_auto && value.is_string() && value == "auto") continue;
    DS_CHECK(hasType(value, it->type), here, ": must be ", typeName(it->type), ", is ",
             value.dump());
    if (it->type == Type::Object && !it->children.empty())
      validate(value, it->children, here + ".", warnings);
  }
}

}  // namespace

size_t editDistance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

std::vector<std::string> validateConfigKeys(const json& config) {
  std::vector<std::string> warnings;
  validate(config, topKeys(), "", warnings);
  return warnings;
}

}  // namespace ds
