#include "runtime/executor.h"

#include <set>
#include <utility>

#include "ir/error.h"

namespace ds {

namespace {

// Persistent tensors no step writes and no feed sets: weights of a plan that does
// not train them. A step output in persistent memory (a state update) writes the
// tensor whose bytes it shares.
std::vector<bool> constantTensors(const PlanFile& plan, int rank) {
  const planpb::Plan& p = plan.plan;
  std::set<std::pair<int, int64_t>> written;  // (storage, offset)
  for (const planpb::Step& step : p.ranks(rank).steps())
    for (int out : step.outputs())
      written.insert({p.tensors(out).storage(), p.tensors(out).offset()});
  std::vector<bool> constant(static_cast<size_t>(p.tensors_size()), false);
  for (int i = 0; i < p.tensors_size(); ++i) {
    const planpb::TensorInfo& t = p.tensors(i);
    constant[static_cast<size_t>(i)] =
        isPersistentStorage(t.storage()) && !written.count({t.storage(), t.offset()});
  }
  for (int feed : p.feeds()) constant[static_cast<size_t>(feed)] = false;
  return constant;
}

}  // namespace

Executor::Executor(const PlanFile& plan, ExecutorOptions options)
    : plan_(plan), options_(options), fed_(static_cast<size_t>(plan.plan.feeds_size()), false) {
  DS_CHECK(options.rank >= 0 && options.rank < plan.plan.ranks_size(), "rank ", options.rank,
           " is not in the plan (world size ", plan.plan.ranks_size(), ")");
  constant_ = constantTensors(plan, options.rank);
}

int Executor::acceptFeed(const std::string& name, const Tensor& value) {
  int i = feedIndex(name);
  int tensor = plan_.plan.feeds(i);
  TensorType want = plan_.tensorType(tensor);
  DS_CHECK(value.type() == want, "feed '", name, "': expected ", want.toString(), ", got ",
           value.type().toString());
  fed_[static_cast<size_t>(i)] = true;
  return tensor;
}

void Executor::requireAllFed() const {
  for (size_t i = 0; i < fed_.size(); ++i) {
    int tensor = plan_.plan.feeds(static_cast<int>(i));
    DS_CHECK(fed_[i], "input '", plan_.plan.tensors(tensor).name(), "' (",
             plan_.tensorType(tensor).toString(), ") was not fed");
  }
}

uint8_t* Executor::tensorAddress(int index, const Regions& r) const {
  const auto& t = plan_.plan.tensors(index);
  switch (t.storage()) {
    case planpb::ARENA:
      return r.arena + t.offset();
    case planpb::PERSISTENT:
      return r.persistent + t.offset();
    case planpb::HOST_ARENA:
      return r.host_arena + t.offset();
    case planpb::HOST_PERSISTENT:
      return r.host_persistent + t.offset();
    default:
      throw makeError("tensor '", t.name(), "' has an unknown storage ", t.storage());
  }
}

std::span<const uint8_t> Executor::initialValue(int index) const {
  const auto& t = plan_.plan.tensors(index);
  if (!t.has_init()) return {};
  const uint8_t* data = plan_.blob.data() + t.init_offset();
  if (t.shard().world_size() <= 1) return {data, t.init_bytes()};
  size_t shard = t.init_bytes() / static_cast<size_t>(t.shard().world_size());
  return {data + shard * static_cast<size_t>(options_.rank), shard};
}

cpu::KernelContext Executor::stepContext(const planpb::Step& step, const Regions& regions) const {
  cpu::KernelContext ctx;
  ctx.op = step.op();
  ctx.node_name = step.node();
  ctx.seed = options_.seed;
  ctx.comm = options_.comm;
  ctx.device_comm = options_.device_comm;
  for (const auto& a : step.attrs()) ctx.attrs[a.name()] = fromPlanAttr(a);
  auto view = [&](int idx) {
    return idx < 0 ? cpu::TensorView{}
                   : cpu::TensorView{tensorAddress(idx, regions), plan_.tensorType(idx),
                                     constant_[static_cast<size_t>(idx)]};
  };
  for (int idx : step.inputs()) ctx.inputs.push_back(view(idx));
  for (int idx : step.outputs()) ctx.outputs.push_back(view(idx));
  return ctx;
}

std::vector<std::vector<int>> Executor::lastUses() const {
  const planpb::RankPlan& rank = plan_.plan.ranks(options_.rank);
  std::vector<int> last_use(static_cast<size_t>(plan_.plan.tensors_size()), -1);
  for (int s = 0; s < rank.steps_size(); ++s)
    for (int idx : rank.steps(s).inputs())
      if (idx >= 0) last_use[static_cast<size_t>(idx)] = s;
  for (int out : plan_.plan.outputs()) last_use[static_cast<size_t>(out)] = -1;
  std::vector<std::vector<int>> dies_after(static_cast<size_t>(rank.steps_size()));
  for (size_t i = 0; i < last_use.size(); ++i)
    if (last_use[i] >= 0 && isArena(plan_.plan.tensors(static_cast<int>(i)).storage()))
      dies_after[static_cast<size_t>(last_use[i])].push_back(static_cast<int>(i));
  return dies_after;
}

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
