// DeepSpeed's monitor events and its csv_monitor (deepspeed/monitor/csv_monitor.py),
// written by rank 0 after each optimizer step. The events are the ones DeepSpeed's
// engine writes, each at a count of samples trained, for optimizer step s of a
// global batch of B samples:
//   Train/Samples/train_loss  the step's loss, at (s − 1)·B: the engine writes it in
//                             backward, before the step counts its samples. It is
//                             the global batch's mean (DeepSpeed's is rank 0's).
//   Train/Samples/lr          the learning rate after the step's scheduler step,
//                             i.e. the next step's (unchanged after a skipped fp16
//                             step), at s·B.
//   Train/Samples/loss_scale  fp16: the loss scale after the step's update, at s·B.
// The CSV monitor keeps one file per event under <output_path>/<job_name>/, named
// by the event with '/' and ' ' as '_', a "step,<last part of the name>" header
// and one "samples,value" row per step; a resumed run appends to the files.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/trainer.h"

namespace ds {

struct MonitorEvent {
  std::string name;  // "Train/Samples/lr"
  double value;
  int64_t samples;  // DeepSpeed's global_samples: the event's x axis
};

// The events of optimizer step `m` of a plan trained with `config` (the plan's
// effective DeepSpeed config).
std::vector<MonitorEvent> stepEvents(const StepMetrics& m, const nlohmann::json& config);

class CsvMonitor {
 public:
  // The monitor csv_monitor asks for; nullopt when it is absent or not enabled.
  // Creates its directory; an unwritable one is an error naming the key.
  static std::optional<CsvMonitor> fromConfig(const nlohmann::json& config);

  void write(const std::vector<MonitorEvent>& events);
  const std::string& directory() const { return directory_; }

 private:
  explicit CsvMonitor(std::string directory) : directory_(std::move(directory)) {}
  std::string directory_;
};

}  // namespace ds
