#include "frontend/compile.h"

#include "frontend/onnx_import.h"
#include "ir/error.h"
#include "passes/lower_to_plan.h"
#include "passes/pipeline.h"

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

  // Stage 3: static memory plan for the arena.
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
