// dscompile end to end: summary on a small model, and bad input of every kind
// gives one line on stderr and exit code 2.
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "frontend/ds_config.h"
#include "frontend/ds_config_schema.h"
#include "frontend/summary.h"
#include "ir/error.h"
#include "ir/plan.h"
#include "runtime/trainer.h"
#include "tests/test_util.h"
#include "tests/training_fixtures.h"

namespace ds {
namespace {

using test::contains;

std::string smallModel() {
  static const std::string path = test::writeModel(test::parseOnnxText(R"(
<ir_version: 8, opset_import: ["" : 17]>
mlp (float[batch, 4] input) => (float[batch, 2] logits)
<float[4, 2] w = {1, 2, 3, 4, 5, 6, 7, 8}, float[2] b = {0.5, -0.5}>
{
  h = MatMul(input, w)
  logits = Add(h, b)
}
)"),
                                                   test::scratchName("cli_mlp.onnx"));
  return path;
}

test::CommandResult dscompile(const std::string& args) {
  return test::runCommand(test::binary("dscompile") + " " + args);
}

using test::expectOneLineError;

TEST(DscompileCli, PrintsSummaryWithZeroAccounting) {
  auto r = dscompile(smallModel() + " --batch 4 --gpus 2 --zero 2 --dump summary");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "micro-batch 4 x accumulation 1 x 2 ranks = train batch 8"));
  EXPECT_TRUE(contains(r.output, "parameters    10 (40 B as stored)")) << r.output;
  EXPECT_TRUE(contains(r.output, "  > ZeRO-2 on 2 ranks")) << r.output;
  EXPECT_TRUE(contains(r.output, "MatMul 1")) << r.output;
}

TEST(DscompileCli, DumpsVerifiedIrAndWritesOutput) {
  std::string out = test::tempPath("cli_mlp.plan");
  auto r = dscompile(smallModel() + " --batch 3 --dump ir -o " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "input %input : f32[3,4]")) << r.output;
  EXPECT_TRUE(std::filesystem::file_size(out) > 0);
  EXPECT_EQ(readPlanFile(out).plan.tensors_size(), 5);  // input, w, b, h, logits
}

TEST(DscompileCli, BadInputIsOneLineAndExitCode2) {
  std::string cfg = test::tempPath("bad_stage.json");
  test::writeFile(cfg,
                  R"({"train_micro_batch_size_per_gpu": 4, "zero_optimization": {"stage": 7}})");
  expectOneLineError(dscompile(smallModel() + " --config " + cfg),
                     "zero_optimization.stage: must be 0, 1, 2 or 3, is 7");
  expectOneLineError(dscompile("/nonexistent.onnx --batch 2"),
                     "/nonexistent.onnx: cannot open file");
  expectOneLineError(dscompile(smallModel()), "symbolic batch dimension 'batch'");
  expectOneLineError(dscompile(smallModel() + " --batch 2 --zero 5"),
                     "--zero: must be 0, 1, 2 or 3");
  expectOneLineError(dscompile(smallModel() + " --batch 2 --dump everything"), "--dump");
  std::string bad_json = test::tempPath("bad.json");
  test::writeFile(bad_json, "{ \"train_batch_size\": 8, ");
  expectOneLineError(dscompile(smallModel() + " --config " + bad_json), "not valid JSON");
}

TEST(DscompileCli, HelpDocumentsEveryFlag) {
  auto r = dscompile("--help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* flag : {"--config", "--zero", "--gpus", "--world-size", "--batch", "--output",
                           "--dump", "--dump-after"})
    EXPECT_TRUE(contains(r.output, flag)) << flag;
}

TEST(DsConfig, ReferenceConfigLoadsAndResolvesTheBatch) {
  DsConfig c = loadDsConfig(std::string(DS_SOURCE_DIR) + "/configs/ds_config_resnet101_zero3.json");
  resolveBatch(c, 8);
  EXPECT_EQ(*c.micro_batch, 128);
  EXPECT_EQ(*c.train_batch_size, 1024);
  EXPECT_EQ(*c.gradient_accumulation_steps, 1);
  EXPECT_EQ(c.zero_stage, 3);
  EXPECT_TRUE(c.fp16);
  EXPECT_TRUE(c.offload_optimizer);
}

TEST(DsConfig, BatchArithmeticFollowsDeepSpeed) {
  DsConfig only_total =
      parseDsConfig(R"({"train_batch_size": 64, "gradient_accumulation_steps": 2})", "t");
  resolveBatch(only_total, 4);
  EXPECT_EQ(*only_total.micro_batch, 8);
  DsConfig inconsistent = parseDsConfig(
      R"({"train_batch_size": 64, "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2})",
      "t");
  try {
    resolveBatch(inconsistent, 4);
    FAIL() << "accepted 64 != 4 x 2 x 4";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "train_batch_size 64 != train_micro_batch_size_per_gpu 4"))
        << e.what();
  }
}

TEST(ZeroAccounting, MatchesThePaper) {
  // Psi = 7.5B on 64 ranks (ZeRO paper, Figure 1): 120 GB, 31.4 GB, 16.6 GB, 1.88 GB.
  const int64_t psi = 7'500'000'000;
  EXPECT_NEAR(zeroModelStates(psi, 0, 64).total() / 1e9, 120.0, 0.1);
  EXPECT_NEAR(zeroModelStates(psi, 1, 64).total() / 1e9, 31.4, 0.1);
  EXPECT_NEAR(zeroModelStates(psi, 2, 64).total() / 1e9, 16.6, 0.1);
  EXPECT_NEAR(zeroModelStates(psi, 3, 64).total() / 1e9, 1.88, 0.01);
}

}  // namespace
}  // namespace ds

namespace ds {
namespace {

std::string configError(const std::string& text) {
  try {
    parseDsConfig(text, "cfg.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(DsConfig, MisspeltKeysAreErrorsWithASuggestion) {
  EXPECT_EQ(configError(R"({"train_micro_batch_size_per_gpus": 4})"),
            "cfg.json: train_micro_batch_size_per_gpus: unknown DeepSpeed config key; did you mean "
            "'train_micro_batch_size_per_gpu'?");
  EXPECT_EQ(
      configError(R"({"zero_optimization": {"stgae": 2}})"),
      "cfg.json: zero_optimization.stgae: unknown DeepSpeed config key; did you mean 'stage'?");
  EXPECT_EQ(configError(R"({"zzz_not_a_key": 1})"),
            "cfg.json: zzz_not_a_key: unknown DeepSpeed config key");
}

TEST(DsConfig, WrongTypesDuplicatesAndUnsupportedTypesNameTheKeyPath) {
  EXPECT_EQ(configError(R"({"fp16": {"enabled": "yes"}})"),
            "cfg.json: fp16.enabled: must be true or false, is \"yes\"");
  EXPECT_EQ(configError(R"({"optimizer": {"type": "AdamW", "params": {"lr": "fast"}}})"),
            "cfg.json: optimizer.params.lr: must be a number, is \"fast\"");
  EXPECT_EQ(configError(R"({"gradient_clipping": 1.0, "gradient_clipping": 2.0})"),
            "cfg.json: gradient_clipping: duplicate key");
  EXPECT_EQ(configError(R"({"zero_optimization": {"stage": 1, "stage": 2}})"),
            "cfg.json: zero_optimization.stage: duplicate key");
  EXPECT_EQ(configError(R"({"optimizer": {"type": "OneBitAdam"}})"),
            "cfg.json: optimizer.type: 'OneBitAdam' is not supported by dscompile (supported: "
            "Adam, AdamW, SGD, Lion, Adagrad, Lamb)");
  EXPECT_EQ(configError(R"({"scheduler": {"type": "CyclicLR"}})"),
            "cfg.json: scheduler.type: 'CyclicLR' is not supported by dscompile (supported: "
            "LRRangeTest, OneCycle, WarmupCosineLR, WarmupDecayLR, WarmupLR)");
}

TEST(DsConfig, RealButUnimplementedKeysWarnAndAreIgnored) {
  DsConfig c = parseDsConfig(
      R"({"train_batch_size": 8, "memory_breakdown": true, "optimizer": {"type": "adamw"},
          "zero_optimization": {"stage": 3, "offload_param": {"device": "cpu"}}})",
      "cfg.json");
  EXPECT_EQ(c.optimizer, "AdamW");
  EXPECT_TRUE(c.offload_param);
  EXPECT_EQ(c.warnings,
            std::vector<std::string>{"memory_breakdown: not implemented by dscompile, ignored"});
  // DeepSpeed's checkpointing section configures an API; the warning says what to use.
  EXPECT_EQ(
      parseDsConfig(R"({"activation_checkpointing": {"partition_activations": true}})", "cfg.json")
          .warnings,
      std::vector<std::string>{
          "activation_checkpointing: not implemented by dscompile, ignored; it configures "
          "DeepSpeed's checkpoint() API, which an ONNX graph cannot call: dscompile "
          "--checkpoint-activations recomputes activations"});
}

// No warning where a key asks for what dscompile does anyway: DeepSpeed's default
// value (prescale_gradients false), a feature switched off ("enabled": false), or
// a choice among implementations of the same math (pin_memory, torch_adam); the
// same keys asking for something else still warn.
TEST(DsConfig, KeysAskingForWhatDscompileDoesDoNotWarn) {
  DsConfig quiet = parseDsConfig(
      R"({"train_batch_size": 8, "prescale_gradients": false, "gradient_predivide_factor": 1.0,
          "wall_clock_breakdown": false, "communication_data_type": null,
          "zero_allow_untested_optimizer": true, "tensorboard": {"enabled": false},
          "flops_profiler": {"enabled": false, "profile_step": 1},
          "optimizer": {"type": "Adam", "params": {"torch_adam": true, "amsgrad": false}},
          "fp16": {"enabled": true, "auto_cast": false},
          "zero_optimization": {"stage": 2, "round_robin_gradients": true,
                                "allgather_partitions": true,
                                "offload_optimizer": {"device": "cpu", "pin_memory": true},
                                "offload_param": {"device": "none", "pin_memory": true}}})",
      "cfg.json");
  EXPECT_TRUE(quiet.warnings.empty()) << ::testing::PrintToString(quiet.warnings);
  EXPECT_TRUE(quiet.offload_optimizer);
  EXPECT_FALSE(quiet.offload_param);
  DsConfig loud = parseDsConfig(
      R"({"train_batch_size": 8, "wandb": {"enabled": true},
          "optimizer": {"type": "Adam", "params": {"amsgrad": true}},
          "zero_optimization": {"stage": 2, "allgather_partitions": false}})",
      "cfg.json");
  EXPECT_EQ(loud.warnings,
            (std::vector<std::string>{
                "optimizer.params.amsgrad: not implemented by dscompile, ignored",
                "wandb: not implemented by dscompile, ignored; csv_monitor and tensorboard write "
                "the same events (loss, lr, loss scale)",
                "zero_optimization.allgather_partitions: not implemented by dscompile, ignored"}));
  // Where the division by the world size happens changes only the rounding: dscompile
  // divides the loss before backward, which every choice amounts to.
  EXPECT_TRUE(
      parseDsConfig(R"({"prescale_gradients": true, "gradient_predivide_factor": 4})", "cfg.json")
          .warnings.empty());
  // fp16.auto_cast casts float inputs to fp16, as mixed precision's input Cast does.
  EXPECT_TRUE(parseDsConfig(R"({"fp16": {"enabled": true, "auto_cast": true}})", "cfg.json")
                  .warnings.empty());
}

// DeepSpeed's checkpoint section: tags and universal loading are what dsrun's
// checkpoints do anyway; node-local storage is not, and says so.
TEST(DsConfig, CheckpointSectionAsksForWhatDsrunDoesOrWarns) {
  EXPECT_TRUE(parseDsConfig(R"({"checkpoint": {"tag_validation": "Fail", "load_universal": true,
                                "use_node_local_storage": false,
                                "parallel_write": {"pipeline_stage": false}}})",
                            "cfg.json")
                  .warnings.empty());
  EXPECT_EQ(
      parseDsConfig(R"({"checkpoint": {"use_node_local_storage": true}})", "cfg.json").warnings,
      std::vector<std::string>{"checkpoint.use_node_local_storage: not implemented by dscompile, "
                               "ignored; dsrun --save writes every rank's file into one "
                               "directory"});
  EXPECT_THROW(parseDsConfig(R"({"checkpoint": {"tag_validaton": "Warn"}})", "cfg.json"), Error);
}

// communication_data_type: fp32 reductions, or the gradients' own dtype; another
// 16-bit dtype is a warning.
TEST(DsConfig, CommunicationDataTypeReducesInFp32OrTheGradientsDtype) {
  auto parse = [](const std::string& text) { return parseDsConfig(text, "cfg.json"); };
  EXPECT_TRUE(parse(R"({"bf16": {"enabled": true}, "communication_data_type": "fp32"})")
                  .communicate_in_fp32);
  const DsConfig own = parse(R"({"bf16": {"enabled": true}, "communication_data_type": "bf16"})");
  EXPECT_FALSE(own.communicate_in_fp32);
  EXPECT_TRUE(own.warnings.empty());
  EXPECT_EQ(parse(R"({"bf16": {"enabled": true}, "communication_data_type": "fp16"})").warnings,
            std::vector<std::string>{"communication_data_type: reducing bf16 gradients in fp16 "
                                     "is not implemented by dscompile; they are reduced in bf16"});
  EXPECT_TRUE(parse(R"({"communication_data_type": "FP32"})").communicate_in_fp32);
  EXPECT_EQ(configError(R"({"gradient_predivide_factor": 0})"),
            "cfg.json: gradient_predivide_factor: must be a number > 0, is 0");
  EXPECT_EQ(configError(R"({"communication_data_type": "float32"})"),
            "cfg.json: communication_data_type: must be fp32, fp16, bf16 or null, is "
            "\"float32\"");
}

// DeepSpeed's older "cpu_offload": true offloads the optimizer, as offload_optimizer
// {"device": "cpu"} does, and "cpu_offload_param": true the parameters; NVMe offload
// goes to host memory, with a warning.
TEST(DsConfig, CpuOffloadAndNvmeOffloadTheOptimizerToTheHost) {
  DsConfig old = parseDsConfig(
      R"({"train_batch_size": 8, "zero_optimization": {"stage": 2, "cpu_offload": true}})",
      "cfg.json");
  EXPECT_TRUE(old.offload_optimizer);
  EXPECT_TRUE(old.warnings.empty()) << ::testing::PrintToString(old.warnings);
  DsConfig off = parseDsConfig(
      R"({"train_batch_size": 8, "zero_optimization": {"stage": 2, "cpu_offload": false}})",
      "cfg.json");
  EXPECT_FALSE(off.offload_optimizer);
  DsConfig old_param = parseDsConfig(
      R"({"train_batch_size": 8, "zero_optimization": {"stage": 3, "cpu_offload_param": true,
          "cpu_offload_use_pin_memory": true}})",
      "cfg.json");
  EXPECT_TRUE(old_param.offload_param);
  EXPECT_FALSE(old_param.offload_optimizer);
  EXPECT_TRUE(old_param.warnings.empty()) << ::testing::PrintToString(old_param.warnings);
  DsConfig nvme = parseDsConfig(
      R"({"train_batch_size": 8, "zero_optimization": {"stage": 3,
          "offload_optimizer": {"device": "nvme", "nvme_path": "/local_nvme"},
          "offload_param": {"device": "nvme", "nvme_path": "/local_nvme"}}})",
      "cfg.json");
  EXPECT_TRUE(nvme.offload_optimizer);
  EXPECT_TRUE(nvme.offload_param);
  EXPECT_EQ(nvme.warnings,
            (std::vector<std::string>{
                "zero_optimization.offload_optimizer.device: nvme is not implemented by "
                "dscompile; the optimizer state is offloaded to host memory instead",
                "zero_optimization.offload_param.device: nvme is not implemented by "
                "dscompile; the parameters are offloaded to host memory instead"}));
  EXPECT_TRUE(test::contains(
      configError(R"({"zero_optimization": {"stage": 3, "offload_param": {"device": "gpu"}}})"),
      "zero_optimization.offload_param.device: must be none, cpu or nvme, is gpu"));
}

// data_types.grad_accum_dtype in DeepSpeed's spellings; the model's dtype or fp32.
TEST(DsConfig, GradAccumDtypeTakesDeepSpeedsSpellings) {
  auto dtype = [](const std::string& precision, const std::string& value) {
    return parseDsConfig(R"({")" + precision + R"(": {"enabled": true},
        "data_types": {"grad_accum_dtype": ")" +
                             value + R"("}})",
                         "cfg.json")
        .grad_accum_dtype.value_or("unset");
  };
  EXPECT_EQ(dtype("bf16", "fp32"), "fp32");
  EXPECT_EQ(dtype("bf16", "torch.float32"), "fp32");
  EXPECT_EQ(dtype("bf16", "bfloat16"), "bf16");
  EXPECT_EQ(dtype("fp16", "half"), "fp16");
  EXPECT_FALSE(parseDsConfig(R"({"bf16": {"enabled": true}})", "cfg.json").grad_accum_dtype);
  EXPECT_FALSE(
      parseDsConfig(R"({"data_types": {"grad_accum_dtype": null}})", "cfg.json").grad_accum_dtype);
  EXPECT_EQ(configError(R"({"data_types": {"grad_accum_dtype": "fp8"}})"),
            "cfg.json: data_types.grad_accum_dtype: must be fp32, fp16 or bf16, is \"fp8\"");
  EXPECT_EQ(configError(R"({"data_types": {"grad_accum_dtype": "bf16"}})"),
            "cfg.json: data_types.grad_accum_dtype: bf16 accumulation needs bf16.enabled; the "
            "model is fp32, whose gradients accumulate in fp32");
  EXPECT_EQ(configError(R"({"fp16": {"enabled": true}, "data_types": {"grad_accum_dtype":
                           "bf16"}})"),
            "cfg.json: data_types.grad_accum_dtype: bf16 accumulation needs bf16.enabled; the "
            "model is fp16, whose gradients accumulate in fp16 or fp32");
}

TEST(DsConfig, ReferenceConfigLoadsWithoutWarnings) {
  // Every key the reference workload sets is honoured (sub_group_size caps the
  // stage-3 optimizer's units: docs/zero.md).
  DsConfig c = loadDsConfig(std::string(DS_SOURCE_DIR) + "/configs/ds_config_resnet101_zero3.json");
  EXPECT_TRUE(c.warnings.empty()) << c.warnings.front();
  EXPECT_EQ(c.scheduler, "WarmupLR");
}

TEST(DsConfig, EditDistance) {
  EXPECT_EQ(editDistance("stage", "stgae"), 2u);
  EXPECT_EQ(editDistance("", "abc"), 3u);
  EXPECT_EQ(editDistance("kitten", "sitting"), 3u);
}

}  // namespace
}  // namespace ds

namespace ds {
namespace {

TEST(DscompileCli, BadTrainingRequestsAreOneLineErrors) {
  std::string fp16 = test::tempPath("fp16.json");
  test::writeFile(fp16, R"({"train_micro_batch_size_per_gpu": 4,
                            "fp16": {"enabled": true, "hysteresis": 0}})");
  expectOneLineError(dscompile(smallModel() + " --config " + fp16 + " --loss mse"),
                     "fp16.hysteresis: must be at least 1, is 0");
  std::string buckets = test::tempPath("buckets.json");
  test::writeFile(buckets, R"({"zero_optimization": {"stage": 2, "reduce_bucket_size": 0}})");
  expectOneLineError(
      dscompile(smallModel() + " --batch 4 --gpus 2 --config " + buckets + " --loss mse"),
      "zero_optimization.reduce_bucket_size: must be >= 1");
  expectOneLineError(dscompile(smallModel() + " --batch 4 --loss hinge"), "--loss");
  std::string cycle = test::tempPath("cycle.json");
  test::writeFile(cycle, R"({"train_micro_batch_size_per_gpu": 4,
                             "scheduler": {"type": "OneCycle", "params": {"cycle_max_lr": 1}}})");
  expectOneLineError(dscompile(smallModel() + " --config " + cycle + " --loss mse"),
                     "scheduler.params.cycle_min_lr: required by OneCycle");
}

// A DeepSpeed config's optimizer asks for training: without --loss, dscompile
// trains a classifier's logits with cross-entropy (or a model's scalar output as
// its loss) and says so; without an optimizer the plan is forward-only, and dsrun
// refuses training data for it.
TEST(DscompileCli, ConfigWithAnOptimizerTrainsWithoutLossFlag) {
  std::string cfg = test::tempPath("no_loss.json"), plan = test::tempPath("no_loss.plan");
  test::writeFile(cfg, R"({"train_micro_batch_size_per_gpu": 4,
                           "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}}})");
  auto r = dscompile(smallModel() + " --config " + cfg + " -o " + plan);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output,
                       "dscompile: note: no --loss: training with cross-entropy over "
                       "output 'logits' (and a label input 'label')"))
      << r.output;
  PlanFile trained = readPlanFile(plan);
  EXPECT_TRUE(isTrainingPlan(trained));
  // The same plan as --loss cross_entropy gives, which says nothing.
  const std::string explicit_plan = test::tempPath("loss_flag.plan");
  r = dscompile(smallModel() + " --config " + cfg + " --loss cross_entropy -o " + explicit_plan);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FALSE(contains(r.output, "note")) << r.output;
  EXPECT_EQ(printPlan(trained), printPlan(readPlanFile(explicit_plan)));

  std::string forward = test::tempPath("forward.plan");
  r = dscompile(smallModel() + " --batch 4 -o " + forward);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FALSE(isTrainingPlan(readPlanFile(forward)));
  expectOneLineError(
      test::runCommand(test::binary("dsrun") + " " + forward + " --data synthetic --steps 2"),
      "--data: " + forward + " is a forward-only plan (compiled without a loss or an optimizer)");
}

// A model that computes its own loss (an output of one float, wherever it is among the
// outputs) trains on it; --loss-output names the output, and asks for training.
TEST(DscompileCli, ScalarOutputIsTheDefaultLoss) {
  const std::string model = test::writeModel(test::parseOnnxText(R"(
<ir_version: 8, opset_import: ["" : 17]>
regress (float[batch, 4] input, float[batch, 2] target) => (float[batch, 2] y, float[1] loss)
<float[4, 2] w = {1, 2, 3, 4, 5, 6, 7, 8}, int64[1] axes = {0}>
{
  y = MatMul(input, w)
  d = Sub(y, target)
  sq = Mul(d, d)
  mean = ReduceMean<keepdims = 0>(sq)
  loss = Unsqueeze(mean, axes)
}
)"),
                                             test::scratchName("cli_own_loss.onnx"));
  std::string cfg = test::tempPath("own_loss.json"), plan = test::tempPath("own_loss.plan");
  test::writeFile(cfg, R"({"train_micro_batch_size_per_gpu": 4,
                           "optimizer": {"type": "SGD", "params": {"lr": 0.1}}})");
  // dscompile with `flags` makes a training plan, and its note ends with `why`.
  auto expectTrainsOwnLoss = [&](const std::string& flags, const std::string& why) {
    auto r = dscompile(model + " " + flags + " -o " + plan);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_TRUE(contains(r.output,
                         "no --loss: training with the model's own loss, its output "
                         "'loss', " +
                             why))
        << r.output;
    EXPECT_TRUE(isTrainingPlan(readPlanFile(plan)));
  };
  expectTrainsOwnLoss("--config " + cfg, "as the config's optimizer asks for training");
  // Without a config, --loss-output asks for training.
  expectTrainsOwnLoss("--batch 4 --loss-output loss", "as --loss-output asks for training");
  // Naming the logits asks for cross-entropy over them, which would be a second 'loss'.
  expectOneLineError(dscompile(model + " --batch 4 --loss-output y -o " + plan),
                     "--loss cross_entropy: the model already has a value named 'loss'");
  expectOneLineError(dscompile(model + " --batch 4 --loss-output nope -o " + plan),
                     "--loss-output: the model has no output 'nope'");
}

// Impossible batch arithmetic is one line naming the keys, exit code 2.
TEST(DscompileCli, BadBatchArithmeticIsOneLineNamingTheKeys) {
  auto withConfig = [](const std::string& json, const std::string& flags = "") {
    std::string path = test::tempPath("batch.json");
    test::writeFile(path, json);
    return dscompile(smallModel() + " --config " + path + " --loss mse " + flags);
  };
  expectOneLineError(withConfig(R"({"train_batch_size": 32, "train_micro_batch_size_per_gpu": 4,
                                    "gradient_accumulation_steps": 2})"),
                     "train_batch_size 32 != train_micro_batch_size_per_gpu 4 x "
                     "gradient_accumulation_steps 2 x world size 1 (= 8)");
  expectOneLineError(withConfig(R"({"train_batch_size": 30, "gradient_accumulation_steps": 4})"),
                     "train_batch_size 30 is not divisible by gradient_accumulation_steps 4");
  expectOneLineError(withConfig(R"({"train_batch_size": 30, "train_micro_batch_size_per_gpu": 4})"),
                     "train_batch_size 30 is not divisible by train_micro_batch_size_per_gpu 4");
  expectOneLineError(withConfig(R"({"gradient_accumulation_steps": 0})", "--batch 4"),
                     "gradient_accumulation_steps: must be a positive integer, is 0");
  expectOneLineError(withConfig(R"({"gradient_clipping": -1})", "--batch 4"),
                     "gradient_clipping: must be >= 0, is -1");
}

// A Hugging Face config's "auto" values that only its trainer's arguments can fill
// (learning rate, betas, clipping) are one line naming the key; its "auto"
// total_num_steps is dsrun's --steps, so that config compiles (tests/train_log_test.cc).
TEST(DscompileCli, HuggingFaceAutoValuesWithoutASourceNameTheKey) {
  auto withConfig = [](const std::string& json) {
    std::string path = test::tempPath("hf_auto.json");
    test::writeFile(path, json);
    return dscompile(smallModel() + " --config " + path + " --batch 4 --loss mse");
  };
  const std::string why =
      ": \"auto\" (which the Hugging Face trainer fills in from its arguments) has nothing to "
      "be filled from here; give a number";
  expectOneLineError(withConfig(R"({"optimizer": {"type": "AdamW", "params": {"lr": "auto"}}})"),
                     "optimizer.params.lr" + why);
  expectOneLineError(
      withConfig(R"({"optimizer": {"type": "AdamW", "params": {"lr": 1, "betas": "auto"}}})"),
      "optimizer.params.betas" + why);
  expectOneLineError(withConfig(R"({"optimizer": {"type": "AdamW", "params": {"lr": 1,
                                   "weight_decay": "auto"}}})"),
                     "optimizer.params.weight_decay" + why);
  expectOneLineError(withConfig(R"({"gradient_clipping": "auto"})"), "gradient_clipping" + why);
  auto r = withConfig(R"({"optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
                          "scheduler": {"type": "WarmupDecayLR", "params": {"total_num_steps":
                          "auto", "warmup_max_lr": "auto", "warmup_num_steps": "auto"}}})");
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

// "auto" and absent values resolve by the documented rules; the plan stores them.
TEST(DscompileCli, AutoBatchValuesResolveAndThePlanStoresThem) {
  std::string path = test::tempPath("auto.json");
  test::writeFile(path, R"({"train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
                            "gradient_accumulation_steps": 2, "gradient_clipping": 1.0,
                            "optimizer": {"type": "SGD", "params": {"lr": 0.1}},
                            "scheduler": {"type": "WarmupCosineLR",
                                          "params": {"total_num_steps": 10}}})");
  std::string out = test::tempPath("auto.plan");
  auto r = dscompile(smallModel() + " --config " + path + " --batch 4 --loss mse -o " + out +
                     " --dump summary");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "micro-batch 4 x accumulation 2 x 1 ranks = train batch 8"))
      << r.output;
  auto config = nlohmann::json::parse(readPlanFile(out).plan.config_json());
  EXPECT_EQ(config["train_batch_size"], 8);
  EXPECT_EQ(config["train_micro_batch_size_per_gpu"], 4);
  EXPECT_EQ(config["gradient_accumulation_steps"], 2);
  EXPECT_EQ(config["gradient_clipping"], 1.0);
  EXPECT_EQ(config["optimizer"]["params"]["momentum"], 0.0);  // defaults filled in
  EXPECT_EQ(config["scheduler"]["params"]["cos_min_ratio"], 0.0001);
  EXPECT_TRUE(contains(r.output, "\"cos_min_ratio\":0.0001")) << r.output;  // summary prints it
}

// DeepSpeed's Lion, Adagrad (its ZeRO-supported optimizers beside Adam and SGD) and
// Lamb: any case of the name, the classes' defaults in the plan, one step op per
// parameter.
TEST(DscompileCli, LionAdagradAndLambTakeTheirClassesDefaults) {
  struct Expected {
    std::string type, op;
    double lr;
    nlohmann::json params;
  };
  for (const Expected& e :
       {Expected{"lion", "LionStep(", 1e-3, {{"betas", {0.9, 0.999}}, {"weight_decay", 0.0}}},
        Expected{"ADAGRAD",
                 "AdagradStep(",
                 1e-2,
                 {{"eps", 1e-10}, {"lr_decay", 0.0}, {"initial_accumulator_value", 0.0}}},
        Expected{"Lamb",
                 "LambStep(",
                 1e-3,
                 {{"betas", {0.9, 0.999}},
                  {"eps", 1e-8},
                  {"eps_inside_sqrt", false},
                  {"max_coeff", 10.0},
                  {"min_coeff", 0.01}}}}) {
    SCOPED_TRACE(e.type);
    std::string path = test::tempPath(e.type + ".json");
    test::writeFile(path, R"({"optimizer": {"type": ")" + e.type + R"("}})");
    std::string out = test::tempPath(e.type + ".plan");
    auto r = dscompile(smallModel() + " --config " + path + " --batch 4 --loss mse -o " + out +
                       " --dump plan");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_TRUE(contains(r.output, e.op)) << r.output;
    auto optimizer = nlohmann::json::parse(readPlanFile(out).plan.config_json())["optimizer"];
    EXPECT_EQ(optimizer["params"]["lr"], e.lr);
    for (const auto& [key, value] : e.params.items()) EXPECT_EQ(optimizer["params"][key], value);
  }
}

// The schema takes the union of the optimizers' params; DeepSpeed's constructors
// would refuse another optimizer's.
TEST(DsConfig, AnotherOptimizersParamsWarn) {
  EXPECT_EQ(parseDsConfig(R"({"optimizer": {"type": "Lion", "params": {"lr": 1e-4, "eps": 1e-8}}})",
                          "cfg.json")
                .warnings,
            std::vector<std::string>{"optimizer.params.eps: Lion has no such parameter; ignored"});
  EXPECT_EQ(
      parseDsConfig(R"({"optimizer": {"type": "adam", "params": {"momentum": 0.9}}})", "cfg.json")
          .warnings,
      std::vector<std::string>{"optimizer.params.momentum: Adam has no such parameter; ignored"});
  EXPECT_TRUE(parseDsConfig(R"({"optimizer": {"type": "Adagrad", "params": {"lr": 0.1,
                "eps": 1e-10, "weight_decay": 0.1, "lr_decay": 0.01,
                "initial_accumulator_value": 0.1}}})",
                            "cfg.json")
                  .warnings.empty());
}

// What DeepSpeed refuses of Lamb is a one-line error: ZeRO (its trust ratio takes
// whole parameters) and AMSGrad (FusedLamb has none).
TEST(DscompileCli, LambUnderZeroOrWithAmsgradIsAOneLineError) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"optimizer": {"type": "Lamb"}, "zero_optimization": {"stage": 2}})",
       "optimizer.type: Lamb takes each parameter's norm, which ZeRO's shards split; it runs at "
       "zero_optimization.stage 0, not 2"},
      {R"({"optimizer": {"type": "Lamb", "params": {"amsgrad": true}}})",
       "optimizer.params.amsgrad: Lamb has no AMSGrad variant (DeepSpeed's FusedLamb refuses "
       "it)"}};
  for (const auto& [config, error] : cases) {
    SCOPED_TRACE(config);
    std::string path = test::tempPath("lamb_refused.json");
    test::writeFile(path, config);
    expectOneLineError(dscompile(smallModel() + " --config " + path + " --batch 4 --loss mse -o " +
                                 test::tempPath("lamb_refused.plan")),
                       error);
  }
}

// DeepSpeed's offloaded (CPU) Adagrad leaves weight decay out of the update's
// numerator; dscompile steps torch.optim.Adagrad and says so.
TEST(DscompileCli, OffloadedAdagradWithWeightDecayWarns) {
  std::string path = test::tempPath("adagrad_offload.json");
  test::writeFile(path, R"({"optimizer": {"type": "Adagrad", "params": {"weight_decay": 0.01}},
                            "zero_optimization": {"stage": 1,
                                                  "offload_optimizer": {"device": "cpu"}}})");
  auto r = dscompile(smallModel() + " --config " + path + " --batch 4 --loss mse -o " +
                     test::tempPath("adagrad_offload.plan"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output,
                       "optimizer.params.weight_decay: DeepSpeed's offloaded (CPU) "
                       "Adagrad divides the gradient without weight decay"))
      << r.output;
}

TEST(DsConfig, OneCycleCyclesNoMomentumForAdagrad) {
  DsConfig c = parseDsConfig(R"({"optimizer": {"type": "Adagrad"},
                                 "scheduler": {"type": "OneCycle",
                                               "params": {"cycle_min_lr": 0.01,
                                                          "cycle_max_lr": 0.1}}})",
                             "cfg.json");
  EXPECT_EQ(c.optimizer, "Adagrad");
  EXPECT_EQ(c.warnings, std::vector<std::string>{
                            "scheduler.params.cycle_momentum: Adagrad has no betas, so OneCycle "
                            "does not cycle its momentum (as in DeepSpeed); ignored"});
}

// Without --batch or a micro-batch key, the micro-batch is the model's static batch.
TEST(DscompileCli, MicroBatchComesFromTheModelsStaticBatch) {
  std::string model = test::writeModel(test::parseOnnxText(R"(
<ir_version: 8, opset_import: ["" : 17]>
mlp (float[4, 4] input) => (float[4, 2] logits)
<float[4, 2] w = {1, 2, 3, 4, 5, 6, 7, 8}>
{
  logits = MatMul(input, w)
}
)"),
                                       "cli_static_mlp.onnx");
  std::string path = test::tempPath("static.json");
  test::writeFile(path, R"({"gradient_accumulation_steps": 3, "train_batch_size": "auto"})");
  auto r = dscompile(model + " --config " + path + " --loss mse --dump summary");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "micro-batch 4 x accumulation 3 x 1 ranks = train batch 12"))
      << r.output;
  expectOneLineError(dscompile(smallModel() + " --loss mse"),
                     "give --batch N or train_micro_batch_size_per_gpu in the config");
}

// With accumulation, forward and backward run every micro-step; the norm, the
// clipping coefficient, the updates and the accumulator resets once per step.
TEST(DscompileCli, AccumulationPlanSplitsStepsByPhase) {
  std::string path = test::tempPath("accumulate.json");
  test::writeFile(path, R"({"train_batch_size": 8, "gradient_accumulation_steps": 2,
                            "gradient_clipping": 1.0})");
  std::string out = test::tempPath("accumulate.plan");
  auto r = dscompile(smallModel() + " --config " + path + " --loss mse -o " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  PlanFile plan = readPlanFile(out);
  std::map<std::string, planpb::Phase> phase;  // by op, and by node name
  for (const planpb::Step& s : plan.plan.ranks(0).steps())
    phase[s.op()] = phase[s.node()] = s.phase();
  EXPECT_EQ(phase["MatMul"], planpb::EVERY_MICRO_STEP);
  EXPECT_EQ(phase["w.grad_acc/add"], planpb::EVERY_MICRO_STEP);
  for (const char* op : {"Sqrt", "ClipCoef", "AdamStep", "ZerosLike"})
    EXPECT_EQ(phase[op], planpb::OPTIMIZER_STEP) << op;
}

TEST(DscompileCli, TrainingPlanHasOptimizerStepsAndStateUpdates) {
  std::string out = test::tempPath("train.plan");
  auto r = dscompile(smallModel() + " --batch 4 --loss mse -o " + out + " --dump plan");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(test::contains(r.output, "AdamStep(")) << r.output;
  // The updated weight lives in the weight's own memory.
  PlanFile plan = readPlanFile(out);
  int w = -1, w_next = -1;
  for (int i = 0; i < plan.plan.tensors_size(); ++i) {
    if (plan.plan.tensors(i).name() == "w") w = i;
    if (plan.plan.tensors(i).name().rfind("w/step", 0) == 0 && w_next < 0) w_next = i;
  }
  ASSERT_GE(w, 0);
  ASSERT_GE(w_next, 0);
  EXPECT_EQ(plan.plan.tensors(w).offset(), plan.plan.tensors(w_next).offset());
  EXPECT_EQ(plan.plan.tensors(w_next).storage(), planpb::PERSISTENT);
}

}  // namespace
}  // namespace ds
