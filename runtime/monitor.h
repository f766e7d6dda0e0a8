// DeepSpeed's monitor events and its monitors (deepspeed/monitor/): csv_monitor and
// tensorboard, written by rank 0 after each optimizer step. The events are the ones DeepSpeed's
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
// and one "samples,value" row per step; a resumed run appends to the files. The
// TensorBoard monitor writes the events as scalars at step = samples, into a new
// event file per run (runtime/tensorboard_writer.h).
#pragma once

#include <cstdint>
#include <memory>
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

// The shortest text that reads back as `v` exactly, as Python's repr writes it
// (DeepSpeed's CSV monitor and its log lines): fixed notation from 1e-4 to 1e16,
// with ".0" on whole numbers, scientific outside.
std::string pythonRepr(double v);

// The events of optimizer step `m` of a plan trained with `config` (the plan's
// effective DeepSpeed config). With DeepSpeed's step timers (timesSteps:
// wall_clock_breakdown or flops_profiler) and step times in `m`, also
// Train/Samples/elapsed_time_ms_{forward, backward, backward_inner,
// backward_allreduce, step}: the step's times by part (runtime/wall_clock.h) in
// milliseconds, summed over its micro-steps, at s·B.
std::vector<MonitorEvent> stepEvents(const StepMetrics& m, const nlohmann::json& config);

// A monitor of the config's: csv_monitor, tensorboard.
class MonitorWriter {
 public:
  virtual ~MonitorWriter() = default;
  virtual void write(const std::vector<MonitorEvent>& events) = 0;
};

// The monitors the config enables (csv_monitor, tensorboard: "enabled": true), each
// writing into <output_path>/<job_name>/ (DeepSpeed's defaults: the working
// directory, "DeepSpeedJobName"), which it creates; an unwritable one is an error
// naming the section.
std::vector<std::unique_ptr<MonitorWriter>> monitorsFromConfig(const nlohmann::json& config);

}  // namespace ds
