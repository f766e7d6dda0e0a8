// Plays one optimizer step of a rank's plan against the cost model
// (runtime/cost_model.h) to predict its time and how much communication hides
// behind computation, before the plan runs on a GPU.
//
// What it assumes, which is what the runtimes do:
//  1. The host issues steps in plan order: the EVERY_MICRO_STEP steps
//     gradient_accumulation_steps times (plan.config_json, default 1), then the
//     OPTIMIZER_STEP steps once, never waiting for the device.
//  2. A stream (Step.stream, an index into Plan.streams) runs its steps one at a
//     time in issue order.
//  3. A step starts when its stream is free and every event in Step.wait_events
//     has completed. An event completes when the step that last recorded it
//     (Step.record_event) before the waiting step's issue ends; waiting on an
//     event not yet recorded does not wait, as in CUDA.
//  4. Durations are the cost model's; streams do not slow each other down.
// Data dependencies between streams are the plan's events: a plan that needs one
// and lacks it is a race the simulator does not see.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "ir/plan.h"
#include "runtime/cost_model.h"
#include "runtime/device_profile.h"

namespace ds {

struct SimulatedStep {
  int step = 0;        // index into the rank's steps
  int micro_step = 0;  // 0..accumulation-1; OPTIMIZER_STEP steps: accumulation
  double start = 0;    // seconds from the start of the optimizer step
  double end = 0;
};

struct Simulation {
  int rank = 0;
  int64_t accumulation = 1;
  bool training = false;                    // the plan has OPTIMIZER_STEP steps
  double step_seconds = 0;                  // the optimizer step: last end
  std::vector<double> stream_busy_seconds;  // per Plan.streams entry: summed durations
  double compute_seconds = 0;               // measure of the time some non-collective step runs
  double collective_seconds = 0;            // measure of the time some collective runs
  // Exposed communication: the measure of the time during which a collective runs
  // and no other step does, i.e. the communication no computation hides. With every
  // step on one stream it is all collective time; with perfect overlap it is 0.
  double exposed_comm_seconds = 0;
  std::vector<StepCost> costs;          // per step of the rank, one execution
  std::vector<SimulatedStep> timeline;  // every execution, in issue order
  double overlappedCommSeconds() const {
    return std::max(0.0, collective_seconds - exposed_comm_seconds);
  }
};

// gradient_accumulation_steps of the plan's config; 1 when absent.
int64_t accumulationSteps(const PlanFile& plan);

Simulation simulate(const PlanFile& plan, int rank, const DeviceProfile& device);

}  // namespace ds
