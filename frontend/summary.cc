#include "frontend/summary.h"

#include <algorithm>
#include <cstdio>
#include <sstream>
#include <vector>

#include "passes/add_optimizer.h"
#include "passes/memory_plan.h"
#include "passes/offload_optimizer.h"
#include "passes/rank_cost.h"

namespace ds {

ModelStateBytes zeroModelStates(int64_t num_params, int stage, int64_t world_size,
                                StatePrecision precision) {
  const auto psi = static_cast<double>(num_params);
  const auto n = static_cast<double>(world_size);
  ModelStateBytes b{precision.param_bytes * psi, precision.param_bytes * psi,
                    precision.optimizer_bytes * psi};
  if (stage >= 1) b.optimizer /= n;
  if (stage >= 2) b.grads /= n;
  if (stage >= 3) b.params /= n;
  return b;
}

// What the plan keeps in host memory (the offload passes' doing, not the config's
// asking: a forward plan has no optimizer, a stage-3 plan may keep every parameter
// whole).
struct HostResidence {
  bool optimizer_state = false;
  bool parameter_shards = false;
};

HostResidence hostResidence(const Graph& g) {
  HostResidence r;
  for (const Value* v : g.sources()) {
    if (!isHostValue(v)) continue;
    r.optimizer_state |= v->role() == Role::OptimizerState;
    r.parameter_shards |= v->role() == Role::Parameter && v->shardLayout() != nullptr;
  }
  return r;
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
      // A ZeRO-3 shard stands for the whole parameters it packs.
      int64_t numel = v->type().numel();
      if (const ShardLayout* layout = v->shardLayout()) {
        numel = 0;
        for (const ShardPiece& p : layout->pieces) numel += numElements(p.shape);
      }
      s.num_params += numel;
      s.param_bytes += numel * static_cast<int64_t>(dtypeSize(v->dtype()));
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

// The training plan's own figures (passes/rank_cost.h), as the plan records them.
std::string planCostLines(const Compilation& c) {
  const RankCost cost = rankCost(*c.graph, c.config.gradient_accumulation_steps.value_or(1));
  const HostResidence host = hostResidence(*c.graph);
  std::ostringstream os;
  os << "this plan     per rank (ZeRO-" << c.zero_stage << " on " << c.world_size
     << " ranks): params " << bytesString(double(cost.parameter_bytes))
     << (host.parameter_shards ? " (shards on the host)" : "") << ", grads "
     << bytesString(double(cost.gradient_bytes)) << ", optimizer "
     << bytesString(double(cost.optimizer_bytes)) << (host.optimizer_state ? " (on the host)" : "")
     << ", model states " << bytesString(double(cost.modelStateBytes())) << "; buffers "
     << bytesString(double(cost.buffer_bytes)) << "; comm buffers in flight "
     << bytesString(double(cost.comm_buffer_bytes)) << "\n";
  os << "comm          per rank per optimizer step:";
  if (cost.comm.empty()) os << " none";
  for (const auto& [op, v] : cost.comm)
    os << " " << op << " " << v.calls_per_step << " calls, "
       << bytesString(double(v.bytes_per_step)) << ";";
  os << "\n";
  return os.str();
}

// Bytes of optimizer state per parameter in the ZeRO paper's accounting (its K): the
// f32 moments — Adam's and Lamb's two, Lion's and Adagrad's one, SGD's momentum buffer when it
// has momentum — and, in mixed precision, the f32 master weights.
double optimizerBytesPerParameter(const DsConfig& cfg) {
  int moments = 1;
  if (cfg.optimizer == "Adam" || cfg.optimizer == "AdamW" || cfg.optimizer == "Lamb") moments = 2;
  if (cfg.optimizer == "SGD") {
    const nlohmann::json params =
        cfg.raw.is_object() && cfg.raw.contains("optimizer")
            ? cfg.raw["optimizer"].value("params", nlohmann::json::object())
            : nlohmann::json::object();
    const nlohmann::json momentum = params.value("momentum", nlohmann::json(0.0));
    moments = momentum.is_number() && momentum.get<double>() != 0.0 ? 1 : 0;
  }
  return 4.0 * moments + (cfg.fp16 || cfg.bf16 ? 4.0 : 0.0);
}

}  // namespace

std::string formatSummary(const Compilation& c, const std::string& model_path) {
  GraphStats s = graphStats(*c.graph);
  const DsConfig& cfg = c.config;
  const HostResidence host = hostResidence(*c.graph);
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
     << ", optimizer " << cfg.optimizer << (host.optimizer_state ? " (offloaded to CPU)" : "")
     << (host.parameter_shards ? ", parameters offloaded to CPU" : "") << "\n";
  os << effectiveConfigLines(c);
  os << "ops           " << s.num_nodes << " nodes: " << opCounts(s) << "\n";
  os << "parameters    " << withCommas(s.num_params) << " (" << bytesString(double(s.param_bytes))
     << " as stored); buffers " << withCommas(s.num_buffer_elements) << " elements\n";
  os << "activations   " << bytesString(double(s.activation_bytes)) << " per rank at micro-batch "
     << c.micro_batch << " (every forward activation, as stored)\n";
  const MemoryPlan& arena = c.memory;
  char ratio[16];
  std::snprintf(ratio, sizeof(ratio), "%.3f", arena.ratio());
  os << "forward arena " << bytesString(double(arena.arena_bytes)) << " (peak live "
     << bytesString(double(arena.peak_live_bytes)) << ", ratio " << ratio << ", "
     << arena.inplace_count << " ops in place)\n";
  const bool mixed = cfg.fp16 || cfg.bf16;
  const StatePrecision precision{mixed ? 2.0 : 4.0, optimizerBytesPerParameter(cfg)};
  os << "model states  per rank, ZeRO paper's figures for "
     << (mixed ? "mixed-precision " : "fp32 ") << cfg.optimizer << " (" << precision.param_bytes
     << " psi params + " << precision.param_bytes << " psi grads + " << precision.optimizer_bytes
     << " psi optimizer):\n";
  for (int stage = 0; stage <= 3; ++stage) {
    ModelStateBytes b = zeroModelStates(s.num_params, stage, c.world_size, precision);
    os << (stage == c.zero_stage ? "  > " : "    ") << "ZeRO-" << stage << " on " << c.world_size
       << " ranks: params " << bytesString(b.params) << ", grads " << bytesString(b.grads)
       << ", optimizer " << bytesString(b.optimizer) << ", total " << bytesString(b.total())
       << "\n";
  }
  if (c.graph->findValue(kLrFeed)) os << planCostLines(c);
  if (host.optimizer_state)
    os << "host          optimizer offload: optimizer state and its update on the host; host "
          "staging arena "
       << bytesString(double(c.memory.host_arena_bytes)) << " per rank\n";
  if (host.parameter_shards)
    os << "host          parameter offload: stage 3's parameter shards in host memory, copied up "
          "before each gather\n";
  return os.str();
}

}  // namespace ds
