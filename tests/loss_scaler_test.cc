// DeepSpeed's dynamic loss scaling rules over scripted overflow sequences; each
// expected scale is worked out by hand from deepspeed/runtime/fp16/loss_scaler.py
// (and unfused_optimizer.py for Lamb's).
#include <gtest/gtest.h>

#include <vector>

#include "ir/error.h"
#include "runtime/loss_scaler.h"

namespace ds {
namespace {

// The scale after each step of `overflows`.
std::vector<double> scales(LossScaler& s, const std::vector<bool>& overflows) {
  std::vector<double> out;
  for (bool overflow : overflows) {
    s.update(overflow);
    out.push_back(s.scale());
  }
  return out;
}

TEST(LossScaler, HysteresisDelaysTheDecreaseAndTheWindowDoublesAfterCleanSteps) {
  LossScaler s({.initial_scale_power = 4, .scale_window = 3, .hysteresis = 2});
  EXPECT_EQ(s.scale(), 16);
  // 0: overflow uses up the hysteresis; 1: overflow halves; 2, 3: clean; 4: third
  // clean step since the overflow at 1 doubles and restores the hysteresis; 5 clean;
  // 6: overflow counts down again; 7 clean (not a window); 8: overflow halves.
  EXPECT_EQ(scales(s, {true, true, false, false, false, false, true, false, true}),
            (std::vector<double>{16, 8, 8, 8, 16, 16, 16, 16, 8}));
  EXPECT_EQ(s.state().iteration, 9);
  EXPECT_EQ(s.state().last_overflow, 8);
}

TEST(LossScaler, WithoutHysteresisEveryOverflowHalvesAndCleanWindowsDouble) {
  LossScaler s({.initial_scale_power = 3, .scale_window = 2, .hysteresis = 1});
  // The first window counts from iteration -1: steps 1, 3, 5 ... double while clean.
  EXPECT_EQ(scales(s, {false, false, true, false, false, false}),
            (std::vector<double>{8, 16, 8, 8, 16, 16}));
}

TEST(LossScaler, ConsecutiveHysteresisIsRestoredByEveryCleanStep) {
  LossScaler s({.initial_scale_power = 5,
                .scale_window = 100,
                .hysteresis = 2,
                .consecutive_hysteresis = true});
  // Overflows separated by clean steps never exhaust a hysteresis of 2 ...
  EXPECT_EQ(scales(s, {true, false, true, false, true}), (std::vector<double>{32, 32, 32, 32, 32}));
  // ... two in a row do.
  EXPECT_EQ(scales(s, {true}), (std::vector<double>{16}));
}

TEST(LossScaler, OverflowAtTheMinimumScaleIsAnError) {
  LossScaler s({.initial_scale_power = 2, .scale_window = 1000, .hysteresis = 1, .min_scale = 2});
  s.update(true);
  EXPECT_EQ(s.scale(), 2);
  EXPECT_THROW(s.update(true), Error);
}

// Lamb's scaler (DeepSpeed's FP16_UnfusedOptimizer, unfused_optimizer.py): no
// hysteresis, a window that counts from the step after the last overflow, and no
// error at the minimum scale.
TEST(LossScaler, UnfusedScalerHalvesAtOnceAndDoublesAStepLater) {
  LossScaler s({.initial_scale_power = 3, .scale_window = 2, .hysteresis = 2, .unfused = true});
  // 0, 1 clean; 2: two clean steps after iteration 0 double; 3: overflow halves at
  // once (hysteresis 2 notwithstanding); 6: two clean steps after 4 double.
  EXPECT_EQ(scales(s, {false, false, false, true, false, false, false}),
            (std::vector<double>{8, 8, 16, 8, 8, 8, 16}));
  LossScaler at_minimum({.initial_scale_power = 1, .min_scale = 2, .unfused = true});
  EXPECT_EQ(scales(at_minimum, {true, true}), (std::vector<double>{2, 2}));
  EXPECT_TRUE(lossScalerOptions({{"optimizer", {{"type", "LAMB"}}}}).unfused);
  EXPECT_FALSE(lossScalerOptions({{"optimizer", {{"type", "AdamW"}}}}).unfused);
}

TEST(LossScaler, StaticScaleNeverChanges) {
  LossScaler s({.static_scale = 128});
  EXPECT_FALSE(s.dynamic());
  EXPECT_EQ(scales(s, {true, true, false}), (std::vector<double>{128, 128, 128}));
}

TEST(LossScaler, ConfigKeysAndStateRoundTrip) {
  nlohmann::json config = {{"fp16",
                            {{"enabled", true},
                             {"initial_scale_power", 12},
                             {"loss_scale_window", 50},
                             {"hysteresis", 3},
                             {"min_loss_scale", 4}}}};
  LossScalerOptions o = lossScalerOptions(config);
  EXPECT_EQ(o.initial_scale_power, 12);
  EXPECT_EQ(o.scale_window, 50);
  EXPECT_EQ(o.hysteresis, 3);
  EXPECT_EQ(o.min_scale, 4);
  LossScaler a(o);
  a.update(true);
  LossScaler b(o);
  b.restore(LossScaler::stateFromJson(a.toJson()));
  EXPECT_EQ(b.toJson(), a.toJson());
  config["fp16"]["hysteresis"] = 0;
  try {
    lossScalerOptions(config);
    ADD_FAILURE() << "hysteresis 0 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("fp16.hysteresis"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ds
