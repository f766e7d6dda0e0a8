// The compiler driver: one straight-line function of named stages from an ONNX
// file and a DeepSpeed config to a verified graph. Later stages (loss, autodiff,
// optimizer, ZeRO, precision, lowering to a plan) are appended here as they land.
#pragma once

#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "frontend/ds_config.h"
#include "ir/graph.h"
#include "ir/plan.h"
#include "passes/memory_plan.h"

namespace ds {

struct CompileOptions {
  std::string model_path;
  std::optional<std::string> config_path;
  std::optional<int> zero_stage;        // --zero, overrides the config
  int64_t world_size = 1;               // --gpus
  std::optional<int64_t> micro_batch;   // --batch, overrides the config
  std::vector<std::string> dump_after;  // pass names or "all"
  // Optimisation passes not to run (--disable-pass): to isolate a fusion's effect.
  std::vector<std::string> disabled_passes;
  // Training: a loss makes a training plan (loss, backward, optimizer step). Without
  // one, a config with an optimizer, or --loss-output, trains with a loss chosen from
  // the outputs (Compilation::notes says which).
  std::optional<std::string> loss;  // cross_entropy | mse | output
  std::string label = "label";      // name of the label input the loss adds
  std::string loss_output;          // --loss-output: the model's loss / the output to use
  bool freeze_bn = false;           // keep BatchNormalization in inference form
  // --checkpoint-activations: backward recomputes activations from checkpoints
  // (passes/recompute.h) instead of keeping them from forward
  bool checkpoint_activations = false;
  std::ostream* dump = nullptr;
};

struct Compilation {
  std::unique_ptr<Graph> graph;
  DsConfig config;  // resolved: batch arithmetic filled in, flags applied
  int64_t world_size = 1;
  int zero_stage = 0;
  int64_t micro_batch = 0;
  MemoryPlan memory;
  std::vector<std::string> notes;  // choices made for the user (dscompile prints them)
};

Compilation compile(const CompileOptions& options);

// The effective configuration: the file as read plus every resolved value.
nlohmann::json effectiveConfigJson(const Compilation& c);

// Lowers a compilation to a plan file's contents.
PlanFile buildPlan(const Compilation& c, const std::string& model_path);

}  // namespace ds
