#include "runtime/lr_schedule.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <numbers>

#include "ir/error.h"
#include "runtime/config_number.h"

namespace ds {
namespace {

using nlohmann::json;

constexpr const char* kTotalStepsKey = "total_num_steps";

json optimizerParams(const json& config) {
  return config.contains("optimizer") ? config["optimizer"].value("params", json::object())
                                      : json::object();
}

// The optimizer's type, lower-cased as DeepSpeed matches it; AdamW when absent.
std::string optimizerType(const json& config) {
  std::string type = config.contains("optimizer")
                         ? config["optimizer"].value("type", std::string("AdamW"))
                         : std::string("AdamW");
  for (char& c : type) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return type;
}

double baseLr(const json& config) {  // optimizer.params.lr
  auto p = optimizerParams(config);
  auto it = p.find("lr");
  // The optimizer classes' defaults: torch.optim.Adagrad's 1e-2, DeepSpeed's 1e-3.
  if (it == p.end()) return optimizerType(config) == "adagrad" ? 1e-2 : 1e-3;
  return configNumber(*it, "optimizer.params.lr");
}

// DeepSpeed's constructor defaults per scheduler type; null marks a required key.
const std::map<std::string, json>& schedulerDefaults() {
  static const std::map<std::string, json> defaults = {
      {"WarmupLR",
       {{"warmup_min_lr", 0.0},
        {"warmup_max_lr", 0.001},
        {"warmup_num_steps", 1000},
        {"warmup_type", "log"}}},
      {"WarmupDecayLR",
       {{"total_num_steps", nullptr},
        {"warmup_min_lr", 0.0},
        {"warmup_max_lr", 0.001},
        {"warmup_num_steps", 1000},
        {"warmup_type", "log"}}},
      {"WarmupCosineLR",
       {{"total_num_steps", nullptr},
        {"warmup_min_ratio", 0.0},
        {"warmup_num_steps", 1000},
        {"cos_min_ratio", 0.0001},
        {"warmup_type", "log"}}},
      {"OneCycle",
       {{"cycle_min_lr", nullptr},
        {"cycle_max_lr", nullptr},
        {"decay_lr_rate", 0.0},
        {"cycle_first_step_size", 2000},
        {"cycle_second_step_size", nullptr},  // default: cycle_first_step_size
        {"cycle_first_stair_count", 0},
        {"cycle_second_stair_count", nullptr},  // default: cycle_first_stair_count
        {"decay_step_size", 0},
        {"cycle_momentum", true},
        {"cycle_min_mom", 0.8},
        {"cycle_max_mom", 0.9},
        {"decay_mom_rate", 0.0}}},
      {"LRRangeTest",
       {{"lr_range_test_min_lr", 0.001},
        {"lr_range_test_step_size", 2000},
        {"lr_range_test_step_rate", 1.0},
        {"lr_range_test_staircase", false}}},
  };
  return defaults;
}

// "auto" in scheduler params, as the Hugging Face integration fills them from the
// trainer: warmup_max_lr is the optimizer's lr, warmup_min_lr 0, warmup_num_steps
// DeepSpeed's default; total_num_steps stays "auto" for dsrun, the trainer, to fill
// from --steps (withTotalSteps).
json resolveAuto(const std::string& key, const json& config) {
  if (key == "warmup_max_lr") return baseLr(config);
  if (key == "warmup_min_lr") return 0.0;
  if (key == "warmup_num_steps") return 1000;
  if (key == kTotalStepsKey) return "auto";
  return configNumber(json("auto"), "scheduler.params." + key);  // says which key
}

json fillDefaults(const std::string& type, const json& given, const json& config) {
  const json& defaults = schedulerDefaults().at(type);
  json p = json::object();
  for (const auto& [key, value] : defaults.items()) {
    auto it = given.find(key);
    if (it != given.end() && it->is_string() && *it == "auto")
      p[key] = resolveAuto(key, config);
    else if (it != given.end())
      p[key] = *it;
    else
      p[key] = value;
  }
  if (type == "OneCycle") {
    if (p["cycle_second_step_size"].is_null())
      p["cycle_second_step_size"] = p["cycle_first_step_size"];
    if (p["cycle_second_stair_count"].is_null())
      p["cycle_second_stair_count"] = p["cycle_first_stair_count"];
  }
  for (const auto& [key, value] : p.items())
    DS_CHECK(!value.is_null(), "scheduler.params.", key, ": required by ", type);
  if (p.contains("lr_range_test_step_size"))  // DeepSpeed divides by it
    DS_CHECK(p["lr_range_test_step_size"].is_number() && p["lr_range_test_step_size"] > 0,
             "scheduler.params.lr_range_test_step_size: must be > 0, is ",
             p["lr_range_test_step_size"].dump());
  if (p.contains("warmup_type"))
    DS_CHECK(p["warmup_type"] == "log" || p["warmup_type"] == "linear",
             "scheduler.params.warmup_type: must be \"log\" or \"linear\", is ",
             p["warmup_type"].dump());
  for (const auto& [key, value] : given.items())
    DS_CHECK(defaults.contains(key) || key == "last_batch_iteration", "scheduler.params.", key,
             ": not a parameter of ", type);
  auto last = given.find("last_batch_iteration");
  DS_CHECK(last == given.end() || *last == -1,
           "scheduler.params.last_batch_iteration: only -1 (start from the beginning) is "
           "supported; continue a run with dsrun --resume");
  return p;
}

double num(const json& p, const char* key) {
  const json& value = p.at(key);
  DS_CHECK(value.is_number(), "scheduler.params.", key, ": ", value.dump(),
           " where a number is needed (\"auto\" total_num_steps is dsrun's --steps)");
  return value.get<double>();
}

// WarmupLR's gamma at iteration `it` < warmup steps: a log or linear ramp.
double warmupGamma(const json& p, double it, double steps) {
  if (p.at("warmup_type") == "linear") return it / steps;
  return std::log(it + 1) / std::log(steps);
}

double warmupLr(const json& p, int64_t it, bool decay) {
  double lo = num(p, "warmup_min_lr"), hi = num(p, "warmup_max_lr");
  double steps = std::max(2.0, num(p, "warmup_num_steps"));
  if (it < 0) return lo;
  auto t = static_cast<double>(it);
  if (t < steps) return lo + (hi - lo) * warmupGamma(p, t, steps);
  if (!decay) return hi;
  double total = num(p, "total_num_steps");
  return lo + (hi - lo) * std::max(0.0, (total - t) / std::max(1.0, total - steps));
}

// WarmupCosineLR: the optimizer's lr times a ratio that warms up from
// warmup_min_ratio to 1, then follows a half cosine down to cos_min_ratio.
double warmupCosineLr(const json& p, double base, int64_t it) {
  if (it < 0) return 0.0;
  auto t = static_cast<double>(it);
  double steps = std::max(2.0, num(p, "warmup_num_steps"));
  if (t < steps) {
    double lo = num(p, "warmup_min_ratio");
    return base * (lo + warmupGamma(p, t, steps) * (1.0 - lo));
  }
  double last = t - steps + 1, total = num(p, "total_num_steps") - steps;
  double cos_min = num(p, "cos_min_ratio");
  double ratio = (1 + std::cos(std::numbers::pi * last / total)) / 2;
  return base * std::max(0.0, cos_min + (1.0 - cos_min) * ratio);
}

// OneCycle's position in the cycle at iteration `it`: 0 at the ends, 1 at the peak.
double oneCycleScale(const json& p, int64_t it) {
  double first = num(p, "cycle_first_step_size"), second = num(p, "cycle_second_step_size");
  double total = first + second, ratio = first / total;
  double batch = static_cast<double>(it + 1);
  double cycle = std::floor(1 + batch / total);
  double x = 1. + batch / total - cycle;
  return x <= ratio ? x / ratio : (x - 1) / (ratio - 1);
}

bool oneCycleDone(const json& p, int64_t it) {
  return static_cast<double>(it) >=
         num(p, "cycle_first_step_size") + num(p, "cycle_second_step_size");
}

// Iterations after the cycle, over decay_step_size.
double oneCycleDecayInterval(const json& p, int64_t it) {
  double total = num(p, "cycle_first_step_size") + num(p, "cycle_second_step_size");
  return (static_cast<double>(it) - total + 1) / num(p, "decay_step_size");
}

// DeepSpeed tests math.isclose(v, 0), which with its default tolerances is v == 0.
bool isZero(double v) {
  return v == 0.0;
}

// LRRangeTest: min_lr x (1 + step_rate x interval), the interval (it + 1) / step_size,
// floored when staircase; the constructor's min_lr at it = -1 is the same formula.
double lrRangeTestLr(const json& p, int64_t it) {
  double interval = static_cast<double>(it + 1) / num(p, "lr_range_test_step_size");
  if (p.at("lr_range_test_staircase").get<bool>()) interval = std::floor(interval);
  return num(p, "lr_range_test_min_lr") * (1 + num(p, "lr_range_test_step_rate") * interval);
}

double oneCycleLr(const json& p, int64_t it) {
  double lo = num(p, "cycle_min_lr"), hi = num(p, "cycle_max_lr");
  if (it < 0) return lo;
  if (!oneCycleDone(p, it)) return lo + (hi - lo) * oneCycleScale(p, it);
  double rate = num(p, "decay_lr_rate");
  if (isZero(num(p, "decay_step_size")) || isZero(rate)) return lo;
  return lo / (1 + rate * oneCycleDecayInterval(p, it));
}

double oneCycleMomentum(const json& p, int64_t it) {
  double lo = num(p, "cycle_min_mom"), hi = num(p, "cycle_max_mom");
  if (it < 0) return lo;
  if (!oneCycleDone(p, it)) return hi - (hi - lo) * oneCycleScale(p, it);
  double rate = num(p, "decay_mom_rate");
  if (isZero(num(p, "decay_step_size")) || isZero(rate)) return hi;
  return hi * (1 + rate * oneCycleDecayInterval(p, it));
}

// Whether the optimizer has betas (Adam, AdamW, Lion; not SGD or Adagrad), which
// OneCycle cycles.
bool hasBetas(const json& config) {
  const std::string type = optimizerType(config);
  return type != "sgd" && type != "adagrad";
}

std::string schedulerType(const json& config) {
  if (!config.contains("scheduler")) return "";
  std::string type = config["scheduler"].value("type", std::string());
  DS_CHECK(schedulerDefaults().count(type), "scheduler.type: '", type,
           "' is not supported by dscompile (supported: ", supportedSchedulers(), ")");
  return type;
}

}  // namespace

bool supportsScheduler(const std::string& type) {
  return schedulerDefaults().count(type) > 0;
}

std::string supportedSchedulers() {
  std::string out;
  for (const auto& [type, defaults] : schedulerDefaults()) out += (out.empty() ? "" : ", ") + type;
  return out;
}

json withTotalSteps(json config, int64_t total_steps) {
  auto scheduler = config.find("scheduler");
  if (scheduler == config.end() || !scheduler->is_object()) return config;
  auto params = scheduler->find("params");
  if (params != scheduler->end() && params->is_object() &&
      params->value(kTotalStepsKey, json()) == "auto")
    (*params)[kTotalStepsKey] = total_steps;
  return config;
}

double baseLearningRate(const json& config) {
  return baseLr(config);
}

json resolvedSchedulerParams(const json& config) {
  std::string type = schedulerType(config);
  if (type.empty()) return json::object();
  json p = fillDefaults(type, config["scheduler"].value("params", json::object()), config);
  if (type == "OneCycle" && !hasBetas(config)) p["cycle_momentum"] = false;
  return p;
}

double learningRate(const json& config, int64_t step) {
  std::string type = schedulerType(config);
  if (type.empty()) return baseLr(config);
  const json p = resolvedSchedulerParams(config);
  int64_t it = step - 2;
  if (type == "WarmupLR") return warmupLr(p, it, false);
  if (type == "WarmupDecayLR") return warmupLr(p, it, true);
  if (type == "WarmupCosineLR") return warmupCosineLr(p, baseLr(config), it);
  if (type == "LRRangeTest") return lrRangeTestLr(p, it);
  return oneCycleLr(p, it);
}

bool cyclesMomentum(const json& config) {
  return schedulerType(config) == "OneCycle" &&
         resolvedSchedulerParams(config).at("cycle_momentum").get<bool>();
}

std::optional<double> scheduledMomentum(const json& config, int64_t step) {
  if (!cyclesMomentum(config)) return std::nullopt;
  return oneCycleMomentum(resolvedSchedulerParams(config), step - 2);
}

}  // namespace ds
