#include "runtime/loss_scaler.h"

#include <algorithm>
#include <cmath>

#include "ir/error.h"

namespace ds {

LossScalerOptions lossScalerOptions(const nlohmann::json& config) {
  LossScalerOptions o;
  const nlohmann::json fp16 = config.value("fp16", nlohmann::json::object());
  auto number = [&](const char* key, double fallback) {
    auto it = fp16.find(key);
    if (it == fp16.end()) return fallback;
    DS_CHECK(it->is_number(), "fp16.", key, ": must be a number, is ", it->dump());
    return it->get<double>();
  };
  o.static_scale = number("loss_scale", 0);
  o.initial_scale_power = static_cast<int64_t>(number("initial_scale_power", 16));
  o.scale_window = static_cast<int64_t>(number("loss_scale_window", 1000));
  o.hysteresis = static_cast<int64_t>(number("hysteresis", 2));
  o.consecutive_hysteresis = fp16.value("consecutive_hysteresis", false);
  o.min_scale = number("min_loss_scale", 1);
  std::string optimizer = config.contains("optimizer")
                              ? config["optimizer"].value("type", std::string())
                              : std::string();
  for (char& c : optimizer) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  o.unfused = optimizer == "lamb";
  DS_CHECK(o.static_scale >= 0, "fp16.loss_scale: must be >= 0 (0: dynamic), is ", o.static_scale);
  DS_CHECK(o.initial_scale_power >= 0 && o.initial_scale_power < 128,
           "fp16.initial_scale_power: must be in [0, 128), is ", o.initial_scale_power);
  DS_CHECK(o.scale_window >= 1, "fp16.loss_scale_window: must be at least 1, is ", o.scale_window);
  DS_CHECK(o.hysteresis >= 1, "fp16.hysteresis: must be at least 1, is ", o.hysteresis);
  DS_CHECK(o.min_scale > 0, "fp16.min_loss_scale: must be > 0, is ", o.min_scale);
  return o;
}

LossScaler::LossScaler(const LossScalerOptions& options) : options_(options) {
  state_.scale = dynamic() ? std::ldexp(1.0, static_cast<int>(options.initial_scale_power))
                           : options.static_scale;
  state_.hysteresis_left = options.hysteresis;
}

void LossScaler::update(bool overflow) {
  if (!dynamic()) return;
  if (options_.unfused) return updateUnfused(overflow);
  LossScalerState& s = state_;
  if (overflow) {
    if (options_.hysteresis == 1 || s.hysteresis_left == 1) {
      DS_CHECK(s.scale != options_.min_scale, "fp16: gradients overflow at the minimum loss scale ",
               options_.min_scale, " (fp16.min_loss_scale); the run cannot continue in fp16");
      s.scale = std::max(s.scale / 2, options_.min_scale);
    } else {
      --s.hysteresis_left;
    }
    s.last_overflow = s.iteration;
  } else {
    if (options_.consecutive_hysteresis) s.hysteresis_left = options_.hysteresis;
    if ((s.iteration - s.last_overflow) % options_.scale_window == 0) {
      if (!options_.consecutive_hysteresis) s.hysteresis_left = options_.hysteresis;
      s.scale *= 2;
    }
  }
  ++s.iteration;
}

void LossScaler::updateUnfused(bool overflow) {
  LossScalerState& s = state_;
  if (overflow) {
    s.scale = std::max(s.scale / 2, options_.min_scale);
    s.last_overflow = s.iteration;
  } else if (const int64_t stable = s.iteration - s.last_overflow - 1;
             stable > 0 && stable % options_.scale_window == 0) {
    s.scale *= 2;
  }
  ++s.iteration;
}

nlohmann::json LossScaler::toJson() const {
  return {{"scale", state_.scale},
          {"iteration", state_.iteration},
          {"last_overflow", state_.last_overflow},
          {"hysteresis_left", state_.hysteresis_left}};
}

LossScalerState LossScaler::stateFromJson(const nlohmann::json& j) {
  LossScalerState s;
  s.scale = j.at("scale").get<double>();
  s.iteration = j.at("iteration").get<int64_t>();
  s.last_overflow = j.at("last_overflow").get<int64_t>();
  s.hysteresis_left = j.at("hysteresis_left").get<int64_t>();
  return s;
}

}  // namespace ds
