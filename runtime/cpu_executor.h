// Executes one rank of a plan on the CPU: one arena allocation and one persistent
// allocation made at load (initial data copied in), one kernel per step built at
// load, and a run() that only executes kernels. The CPU backend is the oracle for
// every other backend, so it runs exactly what the plan says.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "ir/plan.h"
#include "kernels/cpu/kernel.h"

namespace ds {

struct ExecutorOptions {
  int rank = 0;
  // Fill each arena tensor with 0xFF (NaN for floats) right after its last use, so a
  // memory plan that lets two live tensors overlap corrupts results visibly.
  bool poison_freed = false;
};

class CpuExecutor {
 public:
  explicit CpuExecutor(const PlanFile& plan, ExecutorOptions options = {});
  ~CpuExecutor();
  CpuExecutor(const CpuExecutor&) = delete;
  CpuExecutor& operator=(const CpuExecutor&) = delete;

  // Feeds (inputs and labels), by name; a wrong name, dtype or shape is a ds::Error
  // naming the feed with expected and actual.
  std::vector<std::string> feedNames() const;
  TensorType feedType(const std::string& name) const;
  void setFeed(const std::string& name, const Tensor& value);

  // Runs every step once; fails naming any feed that was never set.
  void run();

  size_t numOutputs() const;
  std::string outputName(size_t i) const;
  Tensor output(size_t i) const;

 private:
  struct Step;
  void* address(int tensor) const;
  int feedIndex(const std::string& name) const;
  void buildSteps();
  void poisonAfter(size_t step);

  const PlanFile& plan_;
  ExecutorOptions options_;
  uint8_t* arena_ = nullptr;
  uint8_t* persistent_ = nullptr;
  std::vector<Step> steps_;
  std::vector<bool> fed_;
  std::vector<std::vector<int>> dies_after_;  // arena tensors whose last use is step i
};

}  // namespace ds
