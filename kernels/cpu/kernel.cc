#include "kernels/cpu/kernel.h"

#include "ir/op_registry.h"

namespace ds::cpu {

namespace {

template <typename T>
const T& attrAs(const KernelContext& ctx, const std::string& name) {
  auto it = ctx.attrs.find(name);
  if (it == ctx.attrs.end()) ctx.fail("plan step lacks attribute '", name, "'");
  const T* v = std::get_if<T>(&it->second);
  if (!v) ctx.fail("attribute '", name, "' has the wrong kind");
  return *v;
}

class FunctionKernel : public CpuKernel {
 public:
  explicit FunctionKernel(std::function<void(const KernelContext&)> fn) : fn_(std::move(fn)) {}
  void run(const KernelContext& ctx) override { fn_(ctx); }

 private:
  std::function<void(const KernelContext&)> fn_;
};

}  // namespace

KernelContext partContext(const KernelContext& parent, const std::string& op,
                          std::vector<TensorView> inputs, std::vector<TensorView> outputs,
                          const AttributeMap& attrs) {
  KernelContext part;
  part.op = op;
  part.node_name = parent.node_name;
  for (const AttrSpec& spec : OpRegistry::instance().get(op).attrs)
    if (spec.default_value) part.attrs[spec.name] = *spec.default_value;
  for (const auto& [name, value] : attrs) part.attrs[name] = value;
  part.inputs = std::move(inputs);
  part.outputs = std::move(outputs);
  part.seed = parent.seed;
  part.comm = parent.comm;
  part.device_comm = parent.device_comm;
  return part;
}

int64_t KernelContext::i(const std::string& name) const {
  return attrAs<int64_t>(*this, name);
}
double KernelContext::f(const std::string& name) const {
  return attrAs<double>(*this, name);
}
const std::string& KernelContext::s(const std::string& name) const {
  return attrAs<std::string>(*this, name);
}
const std::vector<int64_t>& KernelContext::ints(const std::string& name) const {
  return attrAs<std::vector<int64_t>>(*this, name);
}
const std::vector<double>& KernelContext::floats(const std::string& name) const {
  return attrAs<std::vector<double>>(*this, name);
}
const Tensor& KernelContext::t(const std::string& name) const {
  return attrAs<Tensor>(*this, name);
}

std::unique_ptr<CpuKernel> statelessKernel(std::function<void(const KernelContext&)> fn) {
  return std::make_unique<FunctionKernel>(std::move(fn));
}

std::unique_ptr<CpuKernel> noopKernel() {
  return statelessKernel([](const KernelContext&) {});
}

const CpuKernelRegistry& CpuKernelRegistry::instance() {
  static const CpuKernelRegistry registry = [] {
    CpuKernelRegistry r;
    registerElementwiseKernels(r);
    registerReductionKernels(r);
    registerShapeKernels(r);
    registerNnKernels(r);
    registerTrainingKernels(r);
    registerOptimizerKernels(r);
    registerCollectiveKernels(r);
    return r;
  }();
  return registry;
}

void CpuKernelRegistry::add(const std::string& op, CpuKernelFactory factory) {
  DS_CHECK(factories_.emplace(op, std::move(factory)).second, "CPU kernel for '", op,
           "' registered twice");
}

void CpuKernelRegistry::allowChannelsLast(const std::string& op, ChannelsLastRule rule) {
  DS_CHECK(channels_last_.emplace(op, std::move(rule)).second, "channels-last rule for '", op,
           "' registered twice");
}

const ChannelsLastRule* CpuKernelRegistry::channelsLastRule(const std::string& op) const {
  auto it = channels_last_.find(op);
  return it == channels_last_.end() ? nullptr : &it->second;
}

void CpuKernelRegistry::allowEpilogue(const std::string& op, EpilogueRule rule) {
  DS_CHECK(epilogues_.emplace(op, std::move(rule)).second, "epilogue rule for '", op,
           "' registered twice");
}

const EpilogueRule* CpuKernelRegistry::epilogueRule(const std::string& op) const {
  auto it = epilogues_.find(op);
  return it == epilogues_.end() ? nullptr : &it->second;
}

const CpuKernelFactory* CpuKernelRegistry::find(const std::string& op) const {
  auto it = factories_.find(op);
  return it == factories_.end() ? nullptr : &it->second;
}

std::vector<std::string> CpuKernelRegistry::ops() const {
  std::vector<std::string> out;
  for (const auto& [op, f] : factories_) out.push_back(op);
  return out;
}

}  // namespace ds::cpu
