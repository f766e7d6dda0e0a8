// DeepSpeed's schedules (deepspeed/runtime/lr_schedules.py) at key steps, each
// expected value derived by hand from DeepSpeed's formula in the comment. Step s
// runs at scheduler iteration it = s - 2 (the engine steps the scheduler after
// each optimizer step, starting from last_batch_iteration = -1).
#include <gtest/gtest.h>

#include "ir/error.h"
#include "runtime/lr_schedule.h"

namespace ds {
namespace {

using nlohmann::json;

json withScheduler(const std::string& type, json params, const std::string& optimizer = "AdamW") {
  return {{"optimizer", {{"type", optimizer}, {"params", {{"lr", 0.1}}}}},
          {"scheduler", {{"type", type}, {"params", std::move(params)}}}};
}

std::string errorOf(const json& config) {
  try {
    learningRate(config, 1);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(LrSchedule, WithoutSchedulerIsTheOptimizerLr) {
  EXPECT_DOUBLE_EQ(learningRate(json{{"optimizer", {{"params", {{"lr", 0.25}}}}}}, 7), 0.25);
  EXPECT_DOUBLE_EQ(learningRate(json::object(), 1), 1e-3);  // DeepSpeed/dscompile default
}

TEST(LrSchedule, WarmupDecayLrLinear) {
  // lr = min + (max - min) * gamma; warmup: gamma = it / warmup; then
  // gamma = max(0, (total - it) / max(1, total - warmup)).
  json c = withScheduler("WarmupDecayLR", {{"warmup_min_lr", 0.0},
                                           {"warmup_max_lr", 0.1},
                                           {"warmup_num_steps", 4},
                                           {"total_num_steps", 12},
                                           {"warmup_type", "linear"}});
  EXPECT_DOUBLE_EQ(learningRate(c, 1), 0.0);    // it -1: warmup_min_lr
  EXPECT_DOUBLE_EQ(learningRate(c, 4), 0.05);   // it 2: 2/4
  EXPECT_DOUBLE_EQ(learningRate(c, 6), 0.1);    // it 4: (12-4)/8
  EXPECT_DOUBLE_EQ(learningRate(c, 10), 0.05);  // it 8: (12-8)/8
  EXPECT_DOUBLE_EQ(learningRate(c, 20), 0.0);   // past total: 0
}

TEST(LrSchedule, LrRangeTest) {
  // lr = min_lr * (1 + step_rate * interval), interval = (it + 1) / step_size,
  // floored with staircase; the constructor sets min_lr (it -1: interval 0).
  json c = withScheduler("LRRangeTest", {{"lr_range_test_min_lr", 0.01},
                                         {"lr_range_test_step_size", 4},
                                         {"lr_range_test_step_rate", 2.0}});
  EXPECT_DOUBLE_EQ(learningRate(c, 1), 0.01);   // it -1
  EXPECT_DOUBLE_EQ(learningRate(c, 3), 0.02);   // it 1: 1 + 2 * 2/4
  EXPECT_DOUBLE_EQ(learningRate(c, 11), 0.06);  // it 9: 1 + 2 * 10/4
  c["scheduler"]["params"]["lr_range_test_staircase"] = true;
  EXPECT_DOUBLE_EQ(learningRate(c, 3), 0.01);   // floor(2/4) = 0
  EXPECT_DOUBLE_EQ(learningRate(c, 11), 0.05);  // floor(10/4) = 2
  // DeepSpeed's defaults: min_lr 1e-3, step_size 2000, step_rate 1.
  EXPECT_DOUBLE_EQ(learningRate(withScheduler("LRRangeTest", json::object()), 2001), 0.002);
  EXPECT_EQ(errorOf(withScheduler("LRRangeTest", {{"lr_range_test_step_size", 0}})),
            "scheduler.params.lr_range_test_step_size: must be > 0, is 0");
}

TEST(LrSchedule, WarmupCosineLr) {
  // ratio in warmup: min_ratio + gamma * (1 - min_ratio); after: with
  // last = it - warmup + 1, total' = total - warmup,
  // ratio = max(0, cos_min + (1 - cos_min) * (1 + cos(pi * last / total')) / 2); lr = lr0 * ratio.
  json p = {{"total_num_steps", 10},
            {"warmup_num_steps", 4},
            {"warmup_min_ratio", 0.1},
            {"cos_min_ratio", 0.01},
            {"warmup_type", "linear"}};
  json c = withScheduler("WarmupCosineLR", p);
  EXPECT_DOUBLE_EQ(learningRate(c, 1), 0.0);    // it -1: get_lr() before start is 0
  EXPECT_DOUBLE_EQ(learningRate(c, 2), 0.01);   // it 0: ratio 0.1
  EXPECT_DOUBLE_EQ(learningRate(c, 4), 0.055);  // it 2: 0.1 + 0.5 * 0.9
  // it 4: last 1 of 6: 0.1 * (0.01 + 0.99 * (1 + cos(pi/6)) / 2)
  EXPECT_NEAR(learningRate(c, 6), 0.09336825748732973, 1e-15);
  EXPECT_NEAR(learningRate(c, 11), 0.001, 1e-15);  // it 9: last 6 of 6: cos_min_ratio
  p["warmup_type"] = "log";                        // gamma = log(it + 1) / log(warmup)
  EXPECT_NEAR(learningRate(withScheduler("WarmupCosineLR", p), 3), 0.055, 1e-15);  // log 2 / log 4
  EXPECT_EQ(errorOf(withScheduler("WarmupCosineLR", {{"warmup_num_steps", 4}})),
            "scheduler.params.total_num_steps: required by WarmupCosineLR");
}

TEST(LrSchedule, OneCycleLrAndMomentum) {
  // total = 4 + 4, step_ratio 0.5; b = it + 1, x = 1 + b/total - floor(1 + b/total);
  // scale = x / ratio if x <= ratio else (x - 1) / (ratio - 1);
  // lr = min_lr + (max_lr - min_lr) * scale, mom = max_mom - (max_mom - min_mom) * scale.
  // After the cycle (it >= total): interval = (it - total + 1) / decay_step_size,
  // lr = min_lr / (1 + decay_lr_rate * interval), mom = max_mom * (1 + decay_mom_rate * interval).
  json c = withScheduler("OneCycle", {{"cycle_min_lr", 0.01},
                                      {"cycle_max_lr", 0.1},
                                      {"cycle_first_step_size", 4},
                                      {"decay_step_size", 2},
                                      {"decay_lr_rate", 0.5},
                                      {"cycle_min_mom", 0.85},
                                      {"cycle_max_mom", 0.95},
                                      {"decay_mom_rate", 0.1}});
  ASSERT_TRUE(cyclesMomentum(c));
  struct Expected {
    int64_t step;
    double lr, momentum;
  };
  for (const Expected& e : {Expected{1, 0.01, 0.85},       // it -1: the constructor's values
                            Expected{2, 0.0325, 0.925},    // b 1: x 0.125, scale 0.25
                            Expected{5, 0.1, 0.85},        // b 4: x 0.5, scale 1
                            Expected{7, 0.055, 0.9},       // b 6: x 0.75, scale 0.5
                            Expected{9, 0.01, 0.95},       // b 8: x 0, scale 0
                            Expected{10, 0.008, 0.9975},   // decay interval 0.5
                            Expected{13, 0.005, 1.14}}) {  // decay interval 2
    EXPECT_NEAR(learningRate(c, e.step), e.lr, 1e-15) << "step " << e.step;
    EXPECT_NEAR(*scheduledMomentum(c, e.step), e.momentum, 1e-15) << "step " << e.step;
  }
  // DeepSpeed disables momentum cycling for optimizers without betas (SGD).
  json sgd = withScheduler("OneCycle", {{"cycle_min_lr", 0.01}, {"cycle_max_lr", 0.1}}, "SGD");
  EXPECT_FALSE(cyclesMomentum(sgd));
  EXPECT_FALSE(scheduledMomentum(sgd, 3).has_value());
  EXPECT_EQ(errorOf(withScheduler("OneCycle", {{"cycle_max_lr", 0.1}})),
            "scheduler.params.cycle_min_lr: required by OneCycle");
}

TEST(LrSchedule, ResolvedParamsHoldDefaultsAndAuto) {
  json c = withScheduler("WarmupLR", {{"warmup_max_lr", "auto"}});
  json p = resolvedSchedulerParams(c);
  EXPECT_EQ(p["warmup_max_lr"], 0.1);  // "auto": the optimizer's lr
  EXPECT_EQ(p["warmup_min_lr"], 0.0);
  EXPECT_EQ(p["warmup_num_steps"], 1000);
  EXPECT_EQ(p["warmup_type"], "log");
  json one = resolvedSchedulerParams(
      withScheduler("OneCycle", {{"cycle_min_lr", 0.01}, {"cycle_max_lr", 0.1}}));
  EXPECT_EQ(one["cycle_second_step_size"], 2000);  // defaults to cycle_first_step_size
  EXPECT_EQ(one["cycle_momentum"], true);
  // DeepSpeed passes the params as keyword arguments: another type's key is an error.
  EXPECT_EQ(errorOf(withScheduler("WarmupLR", {{"cos_min_ratio", 0.1}})),
            "scheduler.params.cos_min_ratio: not a parameter of WarmupLR");
  EXPECT_EQ(errorOf(withScheduler("WarmupLR", {{"warmup_type", "cubic"}})),
            "scheduler.params.warmup_type: must be \"log\" or \"linear\", is \"cubic\"");
  EXPECT_EQ(errorOf(withScheduler("WarmupLR", {{"last_batch_iteration", 5}})),
            "scheduler.params.last_batch_iteration: only -1 (start from the beginning) is "
            "supported; continue a run with dsrun --resume");
  // total_num_steps "auto" stays for dsrun, which fills it with --steps.
  json decay = withScheduler("WarmupDecayLR", {{"total_num_steps", "auto"}});
  EXPECT_EQ(resolvedSchedulerParams(decay)["total_num_steps"], "auto");
  try {
    learningRate(decay, 2000);  // in the decay, which needs the number
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(),
                 "scheduler.params.total_num_steps: \"auto\" where a number is needed (\"auto\" "
                 "total_num_steps is dsrun's --steps)");
  }
  for (int64_t step : {1, 500, 1500, 3000})
    EXPECT_EQ(learningRate(withTotalSteps(decay, 3000), step),
              learningRate(withScheduler("WarmupDecayLR", {{"total_num_steps", 3000}}), step));
  EXPECT_EQ(withTotalSteps(withScheduler("WarmupLR", {}), 3000),
            withScheduler("WarmupLR", {}));  // nothing to fill
}

}  // namespace
}  // namespace ds
