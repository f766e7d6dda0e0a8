#include "runtime/memory_estimate.h"

#include <algorithm>
#include <cstdio>
#include <map>

#include <nlohmann/json.hpp>

#include "ir/graph.h"
#include "runtime/plan_views.h"  // formatBytes

namespace ds {
namespace {

// Bytes per parameter in DeepSpeed's accounting (see the header).
struct PerParam {
  double weights;    // 16-bit (or fp32) parameters; as many for their gradients
  double optimizer;  // fp32 gradient partition, master (mixed precision only), moments
};
PerParam perParam(bool mixed) {
  return mixed ? PerParam{2, 16} : PerParam{4, 12};
}

// DeepSpeed loads the fp32 model on every process of a node before partitioning it.
constexpr double kFp32LoadBytes = 4;

// Stages 0-2: DeepSpeed's stage-2 estimate, which counts whole 16-bit parameters
// and gradients (its reduction buffers hold the gradients), so stage 1 shares it;
// stage 0 partitions nothing (one "rank" of optimizer state).
MemoryEstimate stage012(const EstimateSetup& s, int stage, Offload offload) {
  const PerParam b = perParam(s.mixed_precision);
  const auto psi = static_cast<double>(s.model.params);
  const double n = stage == 0 ? 1.0 : static_cast<double>(s.world_size);
  const auto on_node = static_cast<double>(std::min(s.world_size, s.gpus_per_node));
  MemoryEstimate e{stage, offload, -1, 0, 0};
  if (offload == Offload::None) {
    e.gpu_bytes = 2 * b.weights * psi + b.optimizer * psi / n;
    e.host_bytes = psi * kFp32LoadBytes * on_node * s.buffer_factor;
  } else {
    e.gpu_bytes = b.weights * psi;
    e.host_bytes = psi * std::max(kFp32LoadBytes * static_cast<double>(s.world_size), b.optimizer) *
                   s.buffer_factor;
  }
  return e;
}

// Stage 3: the largest layer is gathered whole (parameters and gradients); the
// rest lives in 1/N shards on the GPU or in host memory, shared by a node's GPUs.
// Without zero_init every process first loads the whole fp32 model.
MemoryEstimate stage3(const EstimateSetup& s, Offload offload, bool zero_init) {
  const PerParam b = perParam(s.mixed_precision);
  const auto psi = static_cast<double>(s.model.params);
  const auto largest = static_cast<double>(s.model.largest_layer_params);
  const auto n = static_cast<double>(s.world_size);
  const auto on_node = static_cast<double>(std::min(s.world_size, s.gpus_per_node));
  const auto nodes = static_cast<double>((s.world_size + s.gpus_per_node - 1) / s.gpus_per_node);
  const double largest_layer = 2 * b.weights * largest;
  MemoryEstimate e{3, offload, zero_init ? 1 : 0, largest_layer, 0};
  double host_per_param = 0;  // model-state bytes per parameter in host memory, per node
  if (offload == Offload::None) {
    e.gpu_bytes += (b.weights + b.optimizer) * psi / n;
  } else if (offload == Offload::Optimizer) {
    e.gpu_bytes += b.weights * psi / n;
    host_per_param = b.optimizer / nodes;
  } else {
    host_per_param = (b.weights + b.optimizer) / nodes;
  }
  if (offload == Offload::None)
    e.host_bytes = (zero_init ? largest : psi) * kFp32LoadBytes * on_node * s.buffer_factor;
  else
    e.host_bytes =
        psi * (zero_init ? host_per_param : std::max(kFp32LoadBytes * on_node, host_per_param)) *
        s.buffer_factor;
  return e;
}

std::string millions(int64_t n) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2fM", static_cast<double>(n) / 1e6);
  return buf;
}

}  // namespace

const char* offloadName(Offload offload) {
  switch (offload) {
    case Offload::None:
      return "none";
    case Offload::Optimizer:
      return "optimizer";
    case Offload::OptimizerAndParams:
      return "optimizer+params";
  }
  return "?";
}

ModelSize modelSizeOf(const PlanFile& plan) {
  ModelSize size;
  std::map<std::string, int64_t> modules;
  auto add = [&](const std::string& name, const Shape& shape) {
    const int64_t n = numElements(shape);
    size.params += n;
    const size_t dot = name.rfind('.');
    modules[dot == std::string::npos ? name : name.substr(0, dot)] += n;
  };
  for (const planpb::TensorInfo& t : plan.plan.tensors()) {
    if (t.role() != static_cast<int>(Role::Parameter)) continue;
    if (t.shard().world_size() == 0) add(t.name(), Shape(t.shape().begin(), t.shape().end()));
    for (const planpb::ShardPiece& p : t.shard().pieces())
      add(p.name(), Shape(p.shape().begin(), p.shape().end()));
  }
  for (const auto& [module, n] : modules)
    size.largest_layer_params = std::max(size.largest_layer_params, n);
  return size;
}

std::vector<MemoryEstimate> estimateModelStateMemory(const EstimateSetup& setup) {
  std::vector<MemoryEstimate> out = {stage012(setup, 0, Offload::None)};
  for (int stage : {1, 2})
    for (Offload o : {Offload::None, Offload::Optimizer}) out.push_back(stage012(setup, stage, o));
  for (Offload o : {Offload::None, Offload::Optimizer, Offload::OptimizerAndParams})
    for (bool zero_init : {true, false}) out.push_back(stage3(setup, o, zero_init));
  return out;
}

std::string formatEstimates(const EstimateSetup& s) {
  const int64_t nodes = (s.world_size + s.gpus_per_node - 1) / s.gpus_per_node;
  std::string out = "estimate      model states by DeepSpeed's estimators (" +
                    std::string(s.mixed_precision ? "mixed-precision" : "fp32") +
                    " Adam): " + millions(s.model.params) + " params, largest layer " +
                    millions(s.model.largest_layer_params) + "; " + std::to_string(s.world_size) +
                    " GPUs, " + std::to_string(nodes) + " node(s) of " +
                    std::to_string(s.gpus_per_node) + "\n";
  char line[160];
  std::snprintf(line, sizeof(line), "  %-6s %-17s %-10s %12s %16s\n", "stage", "offload",
                "zero_init", "per GPU", "per node host");
  out += line;
  for (const MemoryEstimate& e : estimateModelStateMemory(s)) {
    std::snprintf(line, sizeof(line), "  %-6d %-17s %-10s %12s %16s\n", e.stage,
                  offloadName(e.offload),
                  e.zero_init < 0 ? "-"
                  : e.zero_init   ? "1"
                                  : "0",
                  formatBytes(e.gpu_bytes).c_str(), formatBytes(e.host_bytes).c_str());
    out += line;
  }
  return out;
}

bool planIsMixedPrecision(const PlanFile& plan) {
  const nlohmann::json config = plan.config();
  auto enabled = [&](const char* key) {
    const auto it = config.find(key);
    if (it == config.end() || !it->is_object()) return false;
    const auto on = it->find("enabled");
    return on != it->end() && on->is_boolean() && on->get<bool>();
  };
  return enabled("fp16") || enabled("bf16");
}

}  // namespace ds
