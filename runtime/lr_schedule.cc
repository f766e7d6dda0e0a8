#include "runtime/lr_schedule.h"

#include <algorithm>
#include <cmath>

#include "ir/error.h"

namespace ds {
namespace {

using nlohmann::json;

double param(const json& p, const char* key, double fallback) {
  auto it = p.find(key);
  return it == p.end() ? fallback : it->get<double>();
}

// WarmupLR's gamma at iteration `it`: log or linear ramp over warmup_num_steps.
double warmupGamma(const json& p, int64_t it) {
  double steps = std::max(2.0, param(p, "warmup_num_steps", 1000));
  if (it >= steps) return 1.0;
  if (p.value("warmup_type", std::string("log")) == "linear")
    return static_cast<double>(it) / steps;
  return std::log(static_cast<double>(it) + 1) / std::log(steps);
}

double warmupLr(const json& p, int64_t it) {
  double lo = param(p, "warmup_min_lr", 0.0), hi = param(p, "warmup_max_lr", 0.001);
  if (it < 0) return lo;
  return lo + (hi - lo) * warmupGamma(p, it);
}

// WarmupDecayLR: WarmupLR, then linear decay to 0 at total_num_steps.
double warmupDecayLr(const json& p, int64_t it) {
  double lo = param(p, "warmup_min_lr", 0.0), hi = param(p, "warmup_max_lr", 0.001);
  double warm = std::max(2.0, param(p, "warmup_num_steps", 1000));
  DS_CHECK(p.contains("total_num_steps"),
           "scheduler.params.total_num_steps: required by WarmupDecayLR");
  double total = param(p, "total_num_steps", 0);
  if (it < 0) return lo;
  if (it < warm) return lo + (hi - lo) * warmupGamma(p, it);
  double gamma = std::max(0.0, (total - static_cast<double>(it)) / std::max(1.0, total - warm));
  return lo + (hi - lo) * gamma;
}

}  // namespace

double learningRate(const json& config, int64_t step) {
  double base = 1e-3;
  if (config.contains("optimizer"))
    base = param(config["optimizer"].value("params", json::object()), "lr", base);
  if (!config.contains("scheduler")) return base;
  const json& s = config["scheduler"];
  std::string type = s.value("type", std::string());
  const json p = s.value("params", json::object());
  int64_t it = step - 2;
  if (type == "WarmupLR") return warmupLr(p, it);
  if (type == "WarmupDecayLR") return warmupDecayLr(p, it);
  throw makeError("scheduler.type: '", type, "' is not implemented by dsrun yet");
}

}  // namespace ds
