#include "frontend/ds_config.h"

#include <cctype>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "frontend/ds_config_schema.h"
#include "ir/error.h"
#include "runtime/comm_log.h"
#include "runtime/flops_profile.h"
#include "runtime/lr_schedule.h"

namespace ds {
namespace {

using nlohmann::json;

// Reads an optional positive integer at `key`; DeepSpeed writes some sizes as 1e9.
std::optional<int64_t> positiveInt(const json& obj, const char* key, const std::string& path) {
  auto it = obj.find(key);
  if (it == obj.end() || (it->is_string() && *it == "auto")) return std::nullopt;
  DS_CHECK(it->is_number(), path, key, ": must be a number, is ", it->type_name());
  double v = it->get<double>();
  DS_CHECK(v >= 1 && v == static_cast<double>(static_cast<int64_t>(v)), path, key,
           ": must be a positive integer, is ", it->dump());
  return static_cast<int64_t>(v);
}

bool enabled(const json& obj, const char* section) {
  auto it = obj.find(section);
  if (it == obj.end()) return false;
  DS_CHECK(it->is_object(), section, ": must be an object");
  auto e = it->find("enabled");
  if (e == it->end()) return false;
  if (e->is_string() && *e == "auto") return false;  // no trainer to take it from: off
  DS_CHECK(e->is_boolean(), section, ".enabled: must be true or false, is ", e->dump());
  return e->get<bool>();
}

// nlohmann::json keeps the last of duplicate keys silently; DeepSpeed users expect
// an error, so the parser callback tracks the keys of each open object.
json parseRejectingDuplicates(const std::string& text) {
  std::vector<std::set<std::string>> seen;
  std::vector<std::string> path;
  auto callback = [&](int, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
        seen.emplace_back();
        path.emplace_back();
        break;
      case json::parse_event_t::object_end:
        seen.pop_back();
        path.pop_back();
        break;
      case json::parse_event_t::key: {
        std::string key = parsed.get<std::string>();
        path.back() = key;
        std::string where;
        for (const std::string& k : path) where += (where.empty() ? "" : ".") + k;
        DS_CHECK(seen.back().insert(key).second, where, ": duplicate key");
        break;
      }
      default:
        break;
    }
    return true;
  };
  return json::parse(text, callback, /*allow_exceptions=*/true, /*ignore_comments=*/true);
}

std::string lowered(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// DeepSpeed matches optimizer and scheduler types case-insensitively for optimizers.
void readTypes(const json& root, DsConfig& c) {
  if (auto opt = root.find("optimizer"); opt != root.end()) {
    DS_CHECK(opt->contains("type"), "optimizer.type: missing");
    std::string type = (*opt)["type"].get<std::string>();
    const std::map<std::string, std::string> known = {{"adam", "Adam"},       {"adamw", "AdamW"},
                                                      {"sgd", "SGD"},         {"lion", "Lion"},
                                                      {"adagrad", "Adagrad"}, {"lamb", "Lamb"}};
    auto it = known.find(lowered(type));
    DS_CHECK(it != known.end(), "optimizer.type: '", type,
             "' is not supported by dscompile (supported: Adam, AdamW, SGD, Lion, Adagrad, Lamb)");
    c.optimizer = it->second;
  }
  if (auto sch = root.find("scheduler"); sch != root.end()) {
    DS_CHECK(sch->contains("type"), "scheduler.type: missing");
    std::string type = (*sch)["type"].get<std::string>();
    DS_CHECK(supportsScheduler(type), "scheduler.type: '", type,
             "' is not supported by dscompile (supported: ", supportedSchedulers(), ")");
    c.scheduler = type;
  }
}

// The schema accepts the union of the optimizers' params; one that the configured
// optimizer's class does not take (Lion's eps, Adam's momentum) would fail its
// constructor in DeepSpeed and changes nothing here: a warning.
void warnForeignParams(DsConfig& c) {
  if (!c.raw.contains("optimizer")) return;
  const std::set<std::string> adam = {"lr",          "betas",           "eps",     "weight_decay",
                                      "adam_w_mode", "bias_correction", "amsgrad", "torch_adam",
                                      "fused",       "foreach"};
  const std::map<std::string, std::set<std::string>> takes = {
      {"Adam", adam},
      {"AdamW", adam},
      {"SGD", {"lr", "momentum", "dampening", "nesterov", "weight_decay", "foreach", "fused"}},
      {"Lion", {"lr", "betas", "weight_decay"}},
      {"Lamb",
       {"lr", "bias_correction", "betas", "eps", "eps_inside_sqrt", "weight_decay", "max_grad_norm",
        "max_coeff", "min_coeff", "amsgrad"}},
      {"Adagrad",
       {"lr", "eps", "weight_decay", "lr_decay", "initial_accumulator_value", "amsgrad",
        "foreach"}}};
  const json params = c.raw["optimizer"].value("params", json::object());
  for (const auto& [key, value] : params.items())
    if (!takes.at(c.optimizer).count(key))
      c.warnings.push_back("optimizer.params." + key + ": " + c.optimizer +
                           " has no such parameter; ignored");
}

// DeepSpeed's OneCycle cycles momentum only for optimizers with betas (Adam, AdamW,
// Lion); for SGD and Adagrad it disables cycle_momentum with a warning, and so does
// dscompile.
void warnUncycledMomentum(DsConfig& c) {
  if (c.scheduler != "OneCycle" || (c.optimizer != "SGD" && c.optimizer != "Adagrad")) return;
  const json params = c.raw["scheduler"].value("params", json::object());
  if (params.value("cycle_momentum", true) == true)
    c.warnings.push_back("scheduler.params.cycle_momentum: " + c.optimizer +
                         " has no betas, so OneCycle does not cycle its momentum (as in "
                         "DeepSpeed); ignored");
}

// zero_optimization.<key>.device: whether what it names goes to host memory ("cpu",
// or "nvme", which dscompile serves from host memory, with a warning that
// `what_moves` there instead).
bool readOffload(const json& zero, const std::string& key, const std::string& what_moves,
                 DsConfig& c) {
  auto off = zero.find(key);
  if (off == zero.end()) return false;
  const std::string path = "zero_optimization." + key;
  DS_CHECK(off->is_object(), path, ": must be an object");
  auto device = off->value("device", std::string("none"));
  DS_CHECK(device == "none" || device == "cpu" || device == "nvme", path,
           ".device: must be none, cpu or nvme, is ", device);
  if (device == "nvme")
    c.warnings.push_back(path + ".device: nvme is not implemented by dscompile; " + what_moves +
                         " offloaded to host memory instead");
  return device != "none";
}

// data_types.grad_accum_dtype in DeepSpeed's spellings (its DtypeEnum), as "fp32",
// "fp16" or "bf16". Gradients accumulate in the model's dtype or in fp32, as
// DeepSpeed allows.
void readGradAccumDtype(const json& root, DsConfig& c) {
  auto types = root.find("data_types");
  if (types == root.end() || !types->contains("grad_accum_dtype")) return;
  const std::string key = "data_types.grad_accum_dtype";
  const json& value = (*types)["grad_accum_dtype"];
  if (value.is_null()) return;  // DeepSpeed's default
  DS_CHECK(value.is_string(), key, ": must be a string, is ", value.dump());
  static const std::map<std::string, std::string> spellings = {
      {"fp32", "fp32"}, {"float32", "fp32"},  {"float", "fp32"},         {"torch.float32", "fp32"},
      {"fp16", "fp16"}, {"float16", "fp16"},  {"half", "fp16"},          {"torch.float16", "fp16"},
      {"bf16", "bf16"}, {"bfloat16", "bf16"}, {"torch.bfloat16", "bf16"}};
  auto it = spellings.find(value.get<std::string>());
  DS_CHECK(it != spellings.end(), key, ": must be fp32, fp16 or bf16, is ", value.dump());
  const std::string model = c.fp16 ? "fp16" : c.bf16 ? "bf16" : "fp32";
  DS_CHECK(it->second == "fp32" || it->second == model, key, ": ", it->second,
           " accumulation needs ", it->second, ".enabled; the model is ", model,
           ", whose gradients accumulate in ", model == "fp32" ? "fp32" : model + " or fp32");
  c.grad_accum_dtype = it->second;
}

// communication_data_type: the dtype gradients are reduced in, "fp32", "fp16" or
// "bf16" as DeepSpeed spells it; null, the gradients' own.
void readCommunicationDtype(const json& root, DsConfig& c) {
  auto it = root.find("communication_data_type");
  if (it == root.end() || it->is_null()) return;
  const std::string key = "communication_data_type";
  std::string value = it->is_string() ? it->get<std::string>() : "";
  for (char& ch : value) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  DS_CHECK(value == "fp32" || value == "fp16" || value == "bf16", key,
           ": must be fp32, fp16, bf16 or null, is ", it->dump());
  const std::string model = c.fp16 ? "fp16" : c.bf16 ? "bf16" : "fp32";
  c.communicate_in_fp32 = value == "fp32";
  if (value != "fp32" && value != model)
    c.warnings.push_back(key + ": reducing " + model + " gradients in " + value +
                         " is not implemented by dscompile; they are reduced in " + model);
}

void readZero(const json& root, DsConfig& c) {
  auto z = root.find("zero_optimization");
  if (z == root.end()) return;
  DS_CHECK(z->is_object(), "zero_optimization: must be an object");
  if (auto s = z->find("stage"); s != z->end()) {
    DS_CHECK(s->is_number_integer() && *s >= 0 && *s <= 3,
             "zero_optimization.stage: must be 0, 1, 2 or 3, is ", s->dump());
    c.zero_stage = s->get<int>();
  }
  c.offload_optimizer = readOffload(*z, "offload_optimizer", "the optimizer state is", c);
  c.offload_param = readOffload(*z, "offload_param", "the parameters are", c);
  // DeepSpeed's older spellings of offload_optimizer and offload_param {"device": "cpu"}.
  if (auto old = z->find("cpu_offload"); old != z->end() && *old == true)
    c.offload_optimizer = true;
  if (auto old = z->find("cpu_offload_param"); old != z->end() && *old == true)
    c.offload_param = true;
}

}  // namespace

DsConfig parseDsConfig(const std::string& text, const std::string& origin) {
  DsConfig c;
  try {
    try {
      c.raw = parseRejectingDuplicates(text);
    } catch (const json::parse_error& e) {
      throw makeError("not valid JSON: ", e.what());
    }
    DS_CHECK(c.raw.is_object(), "the top level must be an object");
    c.warnings = validateConfigKeys(c.raw);
    c.train_batch_size = positiveInt(c.raw, "train_batch_size", "");
    c.micro_batch = positiveInt(c.raw, "train_micro_batch_size_per_gpu", "");
    c.gradient_accumulation_steps = positiveInt(c.raw, "gradient_accumulation_steps", "");
    c.fp16 = enabled(c.raw, "fp16");
    c.bf16 = enabled(c.raw, "bf16");
    DS_CHECK(!(c.fp16 && c.bf16), "fp16.enabled and bf16.enabled: only one may be true");
    readZero(c.raw, c);
    readGradAccumDtype(c.raw, c);
    readCommunicationDtype(c.raw, c);
    if (auto f = c.raw.find("gradient_predivide_factor"); f != c.raw.end())
      DS_CHECK(f->is_number() && f->get<double>() > 0,
               "gradient_predivide_factor: must be a number > 0, is ", f->dump());
    readTypes(c.raw, c);
    // dsrun reads these; their values are checked now, not after a run's first steps.
    flopsProfilerOptions(c.raw);
    commLogOptions(c.raw);
    warnForeignParams(c);
    warnUncycledMomentum(c);
  } catch (const Error& e) {
    throw makeError(origin, ": ", e.what());
  }
  return c;
}

DsConfig loadDsConfig(const std::string& path) {
  std::ifstream in(path);
  DS_CHECK(in.good(), path, ": cannot open config file");
  std::stringstream ss;
  ss << in.rdbuf();
  return parseDsConfig(ss.str(), path);
}

void resolveBatch(DsConfig& c, int64_t world) {
  auto& tb = c.train_batch_size;
  auto& mb = c.micro_batch;
  auto& ga = c.gradient_accumulation_steps;
  if (tb && mb && !ga) {
    DS_CHECK(*tb % (*mb * world) == 0, "train_batch_size ", *tb,
             " is not divisible by train_micro_batch_size_per_gpu ", *mb, " x world size ", world);
    ga = *tb / (*mb * world);
  } else if (tb && ga && !mb) {
    DS_CHECK(*tb % (*ga * world) == 0, "train_batch_size ", *tb,
             " is not divisible by gradient_accumulation_steps ", *ga, " x world size ", world);
    mb = *tb / (*ga * world);
  } else if (tb && !mb && !ga) {
    ga = 1;
    DS_CHECK(*tb % world == 0, "train_batch_size ", *tb, " is not divisible by world size ", world);
    mb = *tb / world;
  } else if (!tb && mb) {
    if (!ga) ga = 1;
    tb = *mb * *ga * world;
  } else if (!tb) {
    return;  // nothing given: the micro-batch must come from the command line
  }
  DS_CHECK(*tb == *mb * *ga * world, "train_batch_size ", *tb,
           " != train_micro_batch_size_per_gpu ", *mb, " x gradient_accumulation_steps ", *ga,
           " x world size ", world, " (= ", *mb * *ga * world, ")");
}

}  // namespace ds
