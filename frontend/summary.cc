#include "frontend/summary.h"

#include <algorithm>
#include <cstdio>
#include <sstream>
#include <vector>

#include "passes/memory_plan.h"

namespace ds {

ModelStateBytes zeroModelStates(int64_t num_params, int stage, int64_t world_size) {
  const auto psi = static_cast<double>(num_params);
  const auto n = static_cast<double>(world_size);
  ModelStateBytes b{2 * psi, 2 * psi, 12 * psi};
  if (stage >= 1) b.optimizer /= n;
  if (stage >= 2) b.grads /= n;
  if (stage >= 3) b.params /= n;
  return b;
}

GraphStats graphStats(const Graph& g) {
  GraphStats s;
  for (const auto& n : g.nodes()) {
    s.op_counts[n->op()]++;
    s.num_nodes++;
    for (const Value* v : n->outputs())
      if (v->role() == Role::Activation)
        s.activation_bytes += static_cast<int64_t>(v->type().bytes());
  }
  for (const Value* v : g.sources()) {
    if (v->role() == Role::Parameter) {
      s.num_params += v->type().numel();
      s.param_bytes += static_cast<int64_t>(v->type().bytes());
    } else if (v->role() == Role::Buffer) {
      s.num_buffer_elements += v->type().numel();
    }
  }
  return s;
}

namespace {

std::string withCommas(int64_t v) {
  std::string digits = std::to_string(v), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string bytesString(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.2f %s", bytes, units[u]);
  return buf;
}

std::string opCounts(const GraphStats& s) {
  std::vector<std::pair<std::string, int64_t>> ops(s.op_counts.begin(), s.op_counts.end());
  std::stable_sort(ops.begin(), ops.end(), [](auto& a, auto& b) { return a.second > b.second; });
  std::string out;
  for (const auto& [op, count] : ops)
    out += (out.empty() ? "" : ", ") + op + " " + std::to_string(count);
  return out;
}

// The effective configuration, one top-level key per line: every resolved value
// (batch arithmetic, "auto" values, optimizer and scheduler parameters with their
// defaults), exactly what the plan stores in config_json.
std::string effectiveConfigLines(const Compilation& c) {
  std::string out;
  const nlohmann::json config = effectiveConfigJson(c);
  for (const auto& [key, value] : config.items())
    out += std::string(out.empty() ? "config        " : "              ") + key + ": " +
           value.dump() + "\n";
  return out;
}

}  // namespace

std::string formatSummary(const Compilation& c, const std::string& model_path) {
  GraphStats s = graphStats(*c.graph);
  const DsConfig& cfg = c.config;
  std::ostringstream os;
  os << "model         " << model_path << " (graph '" << c.graph->name() << "')\n";
  os << "batch         micro-batch " << c.micro_batch << " x accumulation "
     << cfg.gradient_accumulation_steps.value_or(1) << " x " << c.world_size
     << " ranks = train batch " << cfg.train_batch_size.value_or(c.micro_batch * c.world_size)
     << "\n";
  os << "precision     "
     << (cfg.fp16   ? "fp16"
         : cfg.bf16 ? "bf16"
                    : "fp32")
     << ", optimizer " << cfg.optimizer << (cfg.offload_optimizer ? " (offloaded to CPU)" : "")
     << "\n";
  os << effectiveConfigLines(c);
  os << "ops           " << s.num_nodes << " nodes: " << opCounts(s) << "\n";
  os << "parameters    " << withCommas(s.num_params) << " (" << bytesString(double(s.param_bytes))
     << " in fp32); buffers " << withCommas(s.num_buffer_elements) << " elements\n";
  os << "activations   " << bytesString(double(s.activation_bytes)) << " per rank at micro-batch "
     << c.micro_batch << " (every forward activation, fp32)\n";
  const MemoryPlan& arena = c.memory;
  char ratio[16];
  std::snprintf(ratio, sizeof(ratio), "%.3f", arena.ratio());
  os << "forward arena " << bytesString(double(arena.arena_bytes)) << " (peak live "
     << bytesString(double(arena.peak_live_bytes)) << ", ratio " << ratio << ", "
     << arena.inplace_count << " ops in place)\n";
  os << "model states  per rank, mixed-precision Adam (2 psi fp16 params + 2 psi fp16 grads + "
        "12 psi fp32 optimizer; ZeRO paper):\n";
  for (int stage = 0; stage <= 3; ++stage) {
    ModelStateBytes b = zeroModelStates(s.num_params, stage, c.world_size);
    os << (stage == c.zero_stage ? "  > " : "    ") << "ZeRO-" << stage << " on " << c.world_size
       << " ranks: params " << bytesString(b.params) << ", grads " << bytesString(b.grads)
       << ", optimizer " << bytesString(b.optimizer) << ", total " << bytesString(b.total())
       << "\n";
  }
  return os.str();
}

}  // namespace ds
