// The DeepSpeed JSON configuration, read as DeepSpeed users write it (comments
// allowed) and resolved against the world size: the batch arithmetic
// train_batch_size = micro-batch × gradient_accumulation_steps × world size.
//
// Errors name the key's JSON path ("zero_optimization.stage: must be 0, 1, 2 or 3").
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ds {

struct DsConfig {
  nlohmann::json raw;  // the file as read (comments stripped)

  // Batch arithmetic, resolved by resolveBatch().
  std::optional<int64_t> train_batch_size;
  std::optional<int64_t> micro_batch;
  std::optional<int64_t> gradient_accumulation_steps;

  int zero_stage = 0;
  bool fp16 = false;
  bool bf16 = false;
  // zero_optimization.offload_optimizer.device cpu (or nvme, with a warning), or the
  // older cpu_offload: true
  bool offload_optimizer = false;
  // zero_optimization.offload_param.device cpu (or nvme, with a warning), or the older
  // cpu_offload_param: true: stage 3's parameter shards in host memory
  bool offload_param = false;
  // data_types.grad_accum_dtype (fp32, fp16 or bf16); unset: DeepSpeed's default
  std::optional<std::string> grad_accum_dtype;
  // communication_data_type "fp32": gradients are reduced in fp32; unset (or the
  // model's dtype): in the gradients' own dtype
  bool communicate_in_fp32 = false;
  std::string optimizer = "AdamW";
  std::string scheduler;  // empty: constant learning rate

  // Real DeepSpeed keys dscompile ignores, one line each, for the tools to print.
  std::vector<std::string> warnings;
};

// Parses a config file; throws ds::Error naming the file and key path on bad input.
DsConfig loadDsConfig(const std::string& path);
DsConfig parseDsConfig(const std::string& text, const std::string& origin);

// Fills in whichever of train_batch_size, micro-batch and accumulation steps is
// missing (DeepSpeed's rules) and checks that the three agree with world_size.
void resolveBatch(DsConfig& config, int64_t world_size);

}  // namespace ds
