// fp16 loss scaling with DeepSpeed's semantics (deepspeed/runtime/fp16/loss_scaler.py
// and its config keys): the loss is multiplied by the scale before backward; an inf
// or NaN in any gradient on any rank skips the optimizer step on every rank (the
// plan checks the global gradient norm, which every rank shares) and updates the
// scale here, on the host, once per optimizer step.
//
// Dynamic (fp16.loss_scale 0, the default): the scale starts at
// 2^initial_scale_power. On an overflow it is divided by 2 — once `hysteresis`
// overflows have used up the hysteresis (the first hysteresis-1 overflows only
// count down) — but not below min_loss_scale; an overflow at min_loss_scale is an
// error, as in DeepSpeed. After loss_scale_window steps without an overflow (counted
// from the last one) it doubles, and the hysteresis is restored (at every clean
// step with consecutive_hysteresis). Static (loss_scale > 0): the scale never
// changes and, as in DeepSpeed, gradients are not checked.
//
// Lamb trains under DeepSpeed's FP16_UnfusedOptimizer, whose scaler has no
// hysteresis, doubles the scale one step later (after loss_scale_window clean steps
// *after* the one following an overflow) and keeps halving down to min_loss_scale,
// where it stays, without an error: `unfused`.
#pragma once

#include <cstdint>

#include <nlohmann/json.hpp>

namespace ds {

struct LossScalerOptions {
  double static_scale = 0;  // fp16.loss_scale; 0: dynamic
  int64_t initial_scale_power = 16;
  int64_t scale_window = 1000;  // loss_scale_window
  int64_t hysteresis = 2;
  bool consecutive_hysteresis = false;
  double min_scale = 1;  // min_loss_scale
  bool unfused = false;  // DeepSpeed's FP16_UnfusedOptimizer's scaler (Lamb's)
};

// The fp16 section of an effective DeepSpeed config (plan.config_json), defaults
// filled in; errors name the key.
LossScalerOptions lossScalerOptions(const nlohmann::json& config);

struct LossScalerState {
  double scale = 1;
  int64_t iteration = 0;        // DeepSpeed's cur_iter: optimizer steps seen
  int64_t last_overflow = -1;   // the iteration of the last overflow
  int64_t hysteresis_left = 1;  // DeepSpeed's cur_hysteresis
};

class LossScaler {
 public:
  explicit LossScaler(const LossScalerOptions& options);
  double scale() const { return state_.scale; }
  bool dynamic() const { return options_.static_scale == 0; }
  // Records the outcome of the step that used scale(); throws ds::Error when an
  // overflow happens at the minimum scale.
  void update(bool overflow);

  const LossScalerState& state() const { return state_; }
  void restore(const LossScalerState& state) { state_ = state; }
  nlohmann::json toJson() const;
  static LossScalerState stateFromJson(const nlohmann::json& j);

 private:
  void updateUnfused(bool overflow);
  LossScalerOptions options_;
  LossScalerState state_;
};

}  // namespace ds
