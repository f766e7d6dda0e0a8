// Executes one rank of a plan on the CPU: one allocation per storage (arena,
// persistent, and the host ones of offload) made at load (initial data
// copied in), one kernel per step built at
// load, and a run() that only executes kernels. The CPU backend is the oracle for
// every other backend, so it runs exactly what the plan says.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "ir/plan.h"
#include "kernels/cpu/kernel.h"
#include "kernels/cpu/planned_step.h"
#include "runtime/executor.h"

namespace ds {

class CpuExecutor : public Executor {
 public:
  explicit CpuExecutor(const PlanFile& plan, ExecutorOptions options = {});
  ~CpuExecutor() override;

  void setFeed(const std::string& name, const Tensor& value) override;
  void run(bool optimizer_step = true) override;
  Tensor output(size_t i) const override;
  Tensor readTensor(int index) const override;
  void writeTensor(int index, const Tensor& value) override;
  StepTimes stepTimes() const override { return step_times_; }
  std::vector<double> lastRunSeconds() const override { return last_run_seconds_; }
  // How many steps an earlier step's kernel does as its epilogue (kernels/cpu/fusion.h).
  size_t fusedSteps() const { return fused_steps_; }

 private:
  struct Step;
  void* address(int tensor) const;
  void buildSteps();
  // Sets the channels-last flags of every step's views (kernels/cpu/layout.h).
  void chooseLayouts(const std::vector<cpu::PlannedStep>& planned,
                     const std::vector<bool>& intermediate);
  void poisonAfter(size_t step);

  Regions regions_;
  std::vector<Step> steps_;
  std::vector<std::vector<int>> dies_after_;  // arena tensors whose last use is step i
  std::vector<bool> channels_last_;           // per plan tensor: stored [N, H, W, C] in the arena
  std::vector<float> scratch_;
  StepTimes step_times_;  // ExecutorOptions::profile
  std::vector<double> last_run_seconds_;
  size_t fused_steps_ = 0;  // f32 copies for 16-bit steps
                            // (kernels/cpu/promote16.h)
};

}  // namespace ds
