#include "runtime/executor.h"

#include <algorithm>
#include <limits>
#include <map>
#include <set>
#include <tuple>
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

// Tensors on the same bytes whose lives meet (an in-place step's input and output,
// a reshape and the tensor it relabels: the memory plan's shared buffers) die
// together, when the last of them is read for the last time.
std::vector<std::vector<int>> Executor::lastUses() const {
  const planpb::RankPlan& rank = plan_.plan.ranks(options_.rank);
  const auto count = static_cast<size_t>(plan_.plan.tensors_size());
  std::vector<int> first(count, -1), last(count, -1);
  for (int s = 0; s < rank.steps_size(); ++s) {
    for (int idx : rank.steps(s).inputs())
      if (idx >= 0) last[static_cast<size_t>(idx)] = s;
    for (int idx : rank.steps(s).outputs())
      if (first[static_cast<size_t>(idx)] < 0) first[static_cast<size_t>(idx)] = s;
  }
  constexpr int kNever = std::numeric_limits<int>::max();
  for (int out : plan_.plan.outputs()) last[static_cast<size_t>(out)] = kNever;
  // Arena tensors by (storage, offset, bytes), in the order they are made.
  std::map<std::tuple<int, int64_t, size_t>, std::vector<int>> same_bytes;
  for (size_t i = 0; i < count; ++i) {
    const planpb::TensorInfo& t = plan_.plan.tensors(static_cast<int>(i));
    if (first[i] >= 0 && last[i] >= 0 && isArena(t.storage()))
      same_bytes[{t.storage(), t.offset(), plan_.tensorType(static_cast<int>(i)).bytes()}]
          .push_back(static_cast<int>(i));
  }
  std::vector<std::vector<int>> dies_after(static_cast<size_t>(rank.steps_size()));
  for (auto& [key, tensors] : same_bytes) {
    std::sort(tensors.begin(), tensors.end(), [&](int a, int b) {
      return first[static_cast<size_t>(a)] < first[static_cast<size_t>(b)];
    });
    int end = -1, dying = -1;  // the current group's last read and its tensor
    auto close = [&] {
      if (dying >= 0 && end != kNever) dies_after[static_cast<size_t>(end)].push_back(dying);
    };
    for (int t : tensors) {
      const auto i = static_cast<size_t>(t);
      if (dying >= 0 && first[i] > end) {
        close();
        dying = -1;
      }
      if (dying < 0 || last[i] >= end) {
        end = dying < 0 ? last[i] : std::max(end, last[i]);
        dying = t;
      }
    }
    close();
  }
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
