#include "runtime/executor.h"

#include "ir/error.h"

namespace ds {

int Executor::feedIndex(const std::string& name) const {
  const auto& p = plan_.plan;
  for (int i = 0; i < p.feeds_size(); ++i)
    if (p.tensors(p.feeds(i)).name() == name) return i;
  std::string names;
  for (const std::string& n : feedNames()) names += (names.empty() ? "" : ", ") + n;
  throw makeError("feed '", name, "': the plan has no such input (inputs: ", names, ")");
}

std::vector<std::string> Executor::feedNames() const {
  std::vector<std::string> out;
  for (int idx : plan_.plan.feeds()) out.push_back(plan_.plan.tensors(idx).name());
  return out;
}

TensorType Executor::feedType(const std::string& name) const {
  return plan_.tensorType(plan_.plan.feeds(feedIndex(name)));
}

size_t Executor::numOutputs() const {
  return static_cast<size_t>(plan_.plan.outputs_size());
}

std::string Executor::outputName(size_t i) const {
  return plan_.plan.tensors(plan_.plan.outputs(static_cast<int>(i))).name();
}

int Executor::outputIndex(const std::string& name) const {
  for (size_t i = 0; i < numOutputs(); ++i)
    if (outputName(i) == name) return static_cast<int>(i);
  return -1;
}

}  // namespace ds
