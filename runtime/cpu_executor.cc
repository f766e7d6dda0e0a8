#include "runtime/cpu_executor.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "ir/error.h"
#include "ir/graph.h"
#include "kernels/cpu/fusion.h"
#include "kernels/cpu/layout.h"
#include "kernels/cpu/promote16.h"

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

CpuExecutor::CpuExecutor(const PlanFile& plan, ExecutorOptions options) : Executor(plan, options) {
  const planpb::Plan& p = plan.plan;
  // Host and device memory are one on the CPU: four allocations, one per storage.
  auto allocateZeroed = [](int64_t bytes) {
    uint8_t* p = allocateAligned(bytes);
    std::memset(p, 0, static_cast<size_t>(bytes));  // optimizer state starts at zero
    return p;
  };
  regions_ = {allocateZeroed(p.arena_bytes()), allocateZeroed(p.persistent_bytes()),
              allocateZeroed(p.host_arena_bytes()), allocateZeroed(p.host_persistent_bytes())};
  for (int i = 0; i < p.tensors_size(); ++i) {
    std::span<const uint8_t> init = initialValue(i);
    if (!init.empty()) std::memcpy(address(i), init.data(), init.size());
  }
  buildSteps();
}

CpuExecutor::~CpuExecutor() {
  steps_.clear();  // kernels may hold views into the memory freed below
  for (uint8_t* p :
       {regions_.arena, regions_.persistent, regions_.host_arena, regions_.host_persistent})
    std::free(p);
}

void* CpuExecutor::address(int tensor) const {
  return tensorAddress(tensor, regions_);
}

void CpuExecutor::buildSteps() {
  const planpb::Plan& p = plan_.plan;
  const planpb::RankPlan& rank = p.ranks(options_.rank);
  steps_.reserve(static_cast<size_t>(rank.steps_size()));
  size_t scratch_bytes = 0;  // f32 copies of 16-bit tensors, shared by every step
  for (const planpb::Step& ps : rank.steps()) {
    Step step;
    step.ctx = stepContext(ps, regions_);
    if (cpu::needsPromotion(step.ctx))
      scratch_bytes = std::max(scratch_bytes, cpu::promotionScratchBytes(step.ctx));
    steps_.push_back(std::move(step));
  }
  scratch_.resize(scratch_bytes / sizeof(float) + 1);

  // Load-time choices that edit the contexts: layout, then fusion.
  std::vector<cpu::PlannedStep> planned;
  for (size_t s = 0; s < steps_.size(); ++s) {
    const planpb::Step& ps = rank.steps(static_cast<int>(s));
    planned.push_back({&steps_[s].ctx,
                       {ps.inputs().begin(), ps.inputs().end()},
                       {ps.outputs().begin(), ps.outputs().end()},
                       ps.phase(),
                       cpu::needsPromotion(steps_[s].ctx)});
  }
  const std::vector<bool> intermediate = runIntermediates(p);
  if (options_.channels_last) chooseLayouts(planned, intermediate);
  if (options_.fuse_epilogues) cpu::fuseEpilogues(planned, intermediate);

  fused_steps_ = 0;
  for (size_t s = 0; s < steps_.size(); ++s) {
    const planpb::Step& ps = rank.steps(static_cast<int>(s));
    const cpu::CpuKernelFactory* factory = cpu::CpuKernelRegistry::instance().find(ps.op());
    DS_CHECK(factory != nullptr, "node '", ps.node(), "' (", ps.op(), "): no CPU kernel");
    Step& step = steps_[s];
    if (planned[s].absorbed) {
      step.kernel = cpu::noopKernel();  // an earlier step's epilogue does its work
      ++fused_steps_;
    } else if (planned[s].promoted) {
      step.kernel = cpu::promotedKernel(step.ctx, *factory, scratch_.data());
    } else {
      step.kernel = (*factory)(step.ctx);
    }
  }
  dies_after_ = lastUses();
  if (options_.profile) step_times_ = {std::vector<double>(steps_.size(), 0.0), 0};
}

void CpuExecutor::chooseLayouts(const std::vector<cpu::PlannedStep>& planned,
                                const std::vector<bool>& intermediate) {
  channels_last_ = cpu::chooseChannelsLast(planned, intermediate);
  for (const cpu::PlannedStep& step : planned) {
    for (size_t i = 0; i < step.inputs.size(); ++i)
      if (step.inputs[i] >= 0) step.ctx->inputs[i].channels_last = channels_last_[step.inputs[i]];
    for (size_t i = 0; i < step.outputs.size(); ++i)
      if (step.outputs[i] >= 0)
        step.ctx->outputs[i].channels_last = channels_last_[step.outputs[i]];
  }
}

void CpuExecutor::setFeed(const std::string& name, const Tensor& value) {
  std::memcpy(address(acceptFeed(name, value)), value.raw(), value.bytes());
}

void CpuExecutor::poisonAfter(size_t s) {
  for (int dead : dies_after_[s]) {
    bool inplace = false;  // an output written over this input at the same step
    for (const cpu::TensorView& out : steps_[s].ctx.outputs) inplace |= out.data == address(dead);
    if (!inplace) std::memset(address(dead), 0xFF, plan_.tensorType(dead).bytes());
  }
}

void CpuExecutor::run(bool optimizer_step) {
  requireAllFed();
  if (options_.profile) {
    ++step_times_.runs;
    last_run_seconds_.assign(steps_.size(), 0.0);
  }
  const planpb::RankPlan& rank = plan_.plan.ranks(options_.rank);
  for (size_t s = 0; s < steps_.size(); ++s) {
    if (!optimizer_step && rank.steps(static_cast<int>(s)).phase() == planpb::OPTIMIZER_STEP)
      continue;
    if (options_.profile) {
      auto start = std::chrono::steady_clock::now();
      steps_[s].kernel->run(steps_[s].ctx);
      last_run_seconds_[s] =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      step_times_.seconds[s] += last_run_seconds_[s];
    } else {
      steps_[s].kernel->run(steps_[s].ctx);
    }
    if (options_.poison_freed) poisonAfter(s);
  }
}

Tensor CpuExecutor::output(size_t i) const {
  return readTensor(plan_.plan.outputs(static_cast<int>(i)));
}

Tensor CpuExecutor::readTensor(int index) const {
  TensorType type = plan_.tensorType(index);
  const auto* p = static_cast<const uint8_t*>(address(index));
  Tensor value(type, std::vector<uint8_t>(p, p + type.bytes()));
  if (static_cast<size_t>(index) < channels_last_.size() && channels_last_[index])
    cpu::channelsLastToPlain(reinterpret_cast<const float*>(p),
                             reinterpret_cast<float*>(value.raw()), type.shape);
  return value;
}

void CpuExecutor::writeTensor(int index, const Tensor& value) {
  const auto& t = plan_.plan.tensors(index);
  DS_CHECK(isPersistentStorage(t.storage()), "tensor '", t.name(), "' is not persistent");
  TensorType want = plan_.tensorType(index);
  DS_CHECK(value.type() == want, "tensor '", t.name(), "': expected ", want.toString(), ", got ",
           value.type().toString());
  std::memcpy(address(index), value.raw(), value.bytes());
  if (isConstant(index)) {  // kernels may hold it prepared (packed weights): rebuild them
    steps_.clear();
    buildSteps();
  }
}

}  // namespace ds
