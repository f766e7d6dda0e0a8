#include "runtime/cpu_executor.h"

#include <cstdlib>
#include <cstring>

#include "ir/error.h"
#include "ir/graph.h"

namespace ds {

struct CpuExecutor::Step {
  cpu::KernelContext ctx;
  std::unique_ptr<cpu::CpuKernel> kernel;
};

namespace {

uint8_t* allocateAligned(int64_t bytes) {
  size_t size = static_cast<size_t>((bytes + kPlanAlignment - 1) / kPlanAlignment * kPlanAlignment);
  void* p = std::aligned_alloc(kPlanAlignment, size ? size : kPlanAlignment);
  DS_CHECK(p != nullptr, "cannot allocate ", bytes, " bytes for the plan");
  return static_cast<uint8_t*>(p);
}

}  // namespace

CpuExecutor::CpuExecutor(const PlanFile& plan, ExecutorOptions options)
    : Executor(plan), options_(options) {
  const planpb::Plan& p = plan.plan;
  DS_CHECK(options.rank >= 0 && options.rank < p.ranks_size(), "rank ", options.rank,
           " is not in the plan (world size ", p.ranks_size(), ")");
  arena_ = allocateAligned(p.arena_bytes());
  persistent_ = allocateAligned(p.persistent_bytes());
  std::memset(arena_, 0, static_cast<size_t>(p.arena_bytes()));
  std::memset(persistent_, 0, static_cast<size_t>(p.persistent_bytes()));  // optimizer state
  for (int i = 0; i < p.tensors_size(); ++i) {
    const auto& t = p.tensors(i);
    if (t.has_init()) std::memcpy(address(i), plan.blob.data() + t.init_offset(), t.init_bytes());
  }
  fed_.assign(static_cast<size_t>(p.feeds_size()), false);
  buildSteps();
}

CpuExecutor::~CpuExecutor() {
  steps_.clear();  // kernels may hold views into the memory freed below
  std::free(arena_);
  std::free(persistent_);
}

void* CpuExecutor::address(int tensor) const {
  const auto& t = plan_.plan.tensors(tensor);
  return (t.storage() == planpb::ARENA ? arena_ : persistent_) + t.offset();
}

void CpuExecutor::buildSteps() {
  const planpb::RankPlan& rank = plan_.plan.ranks(options_.rank);
  std::vector<int> last_use(static_cast<size_t>(plan_.plan.tensors_size()), -1);
  steps_.reserve(static_cast<size_t>(rank.steps_size()));
  for (int s = 0; s < rank.steps_size(); ++s) {
    const planpb::Step& ps = rank.steps(s);
    Step step;
    step.ctx.op = ps.op();
    step.ctx.node_name = ps.node();
    step.ctx.seed = options_.seed;
    step.ctx.comm = options_.comm;
    for (const auto& a : ps.attrs()) step.ctx.attrs[a.name()] = fromPlanAttr(a);
    for (int idx : ps.inputs()) {
      step.ctx.inputs.push_back(idx < 0 ? cpu::TensorView{}
                                        : cpu::TensorView{address(idx), plan_.tensorType(idx)});
      if (idx >= 0) last_use[static_cast<size_t>(idx)] = s;
    }
    for (int idx : ps.outputs()) step.ctx.outputs.push_back({address(idx), plan_.tensorType(idx)});
    const cpu::CpuKernelFactory* factory = cpu::CpuKernelRegistry::instance().find(ps.op());
    DS_CHECK(factory != nullptr, "node '", ps.node(), "' (", ps.op(), "): no CPU kernel");
    step.kernel = (*factory)(step.ctx);
    steps_.push_back(std::move(step));
  }
  dies_after_.assign(steps_.size(), {});
  for (int out : plan_.plan.outputs()) last_use[static_cast<size_t>(out)] = -1;  // read after run
  for (size_t i = 0; i < last_use.size(); ++i)
    if (last_use[i] >= 0 && plan_.plan.tensors(static_cast<int>(i)).storage() == planpb::ARENA)
      dies_after_[static_cast<size_t>(last_use[i])].push_back(static_cast<int>(i));
}

void CpuExecutor::setFeed(const std::string& name, const Tensor& value) {
  int i = feedIndex(name);
  int tensor = plan_.plan.feeds(i);
  TensorType want = plan_.tensorType(tensor);
  DS_CHECK(value.type() == want, "feed '", name, "': expected ", want.toString(), ", got ",
           value.type().toString());
  std::memcpy(address(tensor), value.raw(), value.bytes());
  fed_[static_cast<size_t>(i)] = true;
}

void CpuExecutor::poisonAfter(size_t s) {
  for (int dead : dies_after_[s]) {
    bool inplace = false;  // an output written over this input at the same step
    for (const cpu::TensorView& out : steps_[s].ctx.outputs) inplace |= out.data == address(dead);
    if (!inplace) std::memset(address(dead), 0xFF, plan_.tensorType(dead).bytes());
  }
}

void CpuExecutor::run(bool optimizer_step) {
  for (size_t i = 0; i < fed_.size(); ++i) {
    const auto& t = plan_.plan.tensors(plan_.plan.feeds(static_cast<int>(i)));
    DS_CHECK(fed_[i], "input '", t.name(), "' (",
             plan_.tensorType(plan_.plan.feeds(static_cast<int>(i))).toString(), ") was not fed");
  }
  const planpb::RankPlan& rank = plan_.plan.ranks(options_.rank);
  for (size_t s = 0; s < steps_.size(); ++s) {
    if (!optimizer_step && rank.steps(static_cast<int>(s)).phase() == planpb::OPTIMIZER_STEP)
      continue;
    steps_[s].kernel->run(steps_[s].ctx);
    if (options_.poison_freed) poisonAfter(s);
  }
}

Tensor CpuExecutor::output(size_t i) const {
  return readTensor(plan_.plan.outputs(static_cast<int>(i)));
}

Tensor CpuExecutor::readTensor(int index) const {
  TensorType type = plan_.tensorType(index);
  const auto* p = static_cast<const uint8_t*>(address(index));
  return Tensor(type, std::vector<uint8_t>(p, p + type.bytes()));
}

void CpuExecutor::writeTensor(int index, const Tensor& value) {
  const auto& t = plan_.plan.tensors(index);
  DS_CHECK(t.storage() == planpb::PERSISTENT, "tensor '", t.name(), "' is not persistent");
  TensorType want = plan_.tensorType(index);
  DS_CHECK(value.type() == want, "tensor '", t.name(), "': expected ", want.toString(), ", got ",
           value.type().toString());
  std::memcpy(address(index), value.raw(), value.bytes());
}

}  // namespace ds
