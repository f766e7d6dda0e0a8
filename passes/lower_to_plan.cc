#include "passes/lower_to_plan.h"

#include <algorithm>
#include <map>
#include <set>
#include <unordered_map>

#include "ir/error.h"
#include "ir/op_registry.h"
#include "ir/plan_verifier.h"
#include "ir/stream_order.h"
#include "passes/offload_optimizer.h"
#include "passes/rank_cost.h"

namespace ds {
namespace {

int64_t alignUp(int64_t v) {
  return (v + kPlanAlignment - 1) / kPlanAlignment * kPlanAlignment;
}

class Lowering {
 public:
  Lowering(const Graph& g, const MemoryPlan& m) : g_(g), m_(m) {}

  PlanFile run(const LowerOptions& o) {
    planpb::Plan& p = f_.plan;
    p.set_format_version(kPlanFormatVersion);
    p.set_producer("dscompile 0.1.0");
    p.set_model(o.model);
    p.set_world_size(static_cast<int32_t>(o.world_size));
    p.set_config_json(o.config_json);
    p.add_streams("compute");
    if (o.overlap_comm && has([](const Node& n) { return isCollectiveOp(n.op()); }))
      comm_stream_ = addStream("comm");
    if (has([](const Node& n) { return n.onHost(); }))  // optimizer offload
      host_stream_ = addStream("host");
    if (has([](const Node& n) { return n.op() == "Copy"; }))  // optimizer or parameter offload
      copy_stream_ = addStream("copy");
    // The initial data's bytes, reserved: growing the blob by doubling would hold
    // twice a large model's weights at once.
    size_t blob_bytes = o.blob_reserve;
    for (const Value* v : g_.sources())
      if (v->hasData())
        blob_bytes += static_cast<size_t>(alignUp(static_cast<int64_t>(v->data().bytes())));
    f_.blob.reserve(blob_bytes);
    for (const Value* v : g_.sources()) addSource(v);
    for (const auto& n : g_.nodes())
      for (const Value* v : n->outputs()) addArenaTensor(v);
    for (const Value* v : g_.feeds()) p.add_feeds(index_.at(v));
    for (const Value* v : g_.outputs()) p.add_outputs(index_.at(v));
    p.set_arena_bytes(m_.arena_bytes);
    p.set_host_arena_bytes(m_.host_arena_bytes);
    p.set_peak_live_bytes(m_.peak_live_bytes);
    p.set_persistent_bytes(persistent_bytes_);
    p.set_host_persistent_bytes(host_persistent_bytes_);
    setRankCost(rankCost(g_, o.accumulation), p.mutable_rank_cost());
    p.mutable_rank_cost()->set_host_bytes(m_.host_arena_bytes + host_persistent_bytes_);
    for (int64_t r = 0; r < o.world_size; ++r) emitRank(static_cast<int32_t>(r));
    return std::move(f_);
  }

 private:
  planpb::TensorInfo* addTensor(const Value* v) {
    index_[v] = f_.plan.tensors_size();
    planpb::TensorInfo* t = f_.plan.add_tensors();
    t->set_name(v->name());
    t->set_dtype(static_cast<int32_t>(v->dtype()));
    for (int64_t d : v->shape()) t->add_shape(d);
    t->set_role(static_cast<int32_t>(v->role()));
    return t;
  }

  void addSource(const Value* v) {
    planpb::TensorInfo* t = addTensor(v);
    const bool host = isHostValue(v);
    int64_t& region = host ? host_persistent_bytes_ : persistent_bytes_;
    t->set_storage(host ? planpb::HOST_PERSISTENT : planpb::PERSISTENT);
    t->set_offset(region);
    region = alignUp(region + static_cast<int64_t>(v->type().bytes()));
    bool fed = v->role() == Role::Input || v->role() == Role::Label;
    bool zero = v->role() == Role::OptimizerState && !v->hasData();  // the region starts zeroed
    if (const ShardLayout* layout = v->shardLayout()) {
      planpb::ShardLayout* out = t->mutable_shard();
      out->set_world_size(static_cast<int32_t>(layout->world_size));
      for (const ShardPiece& piece : layout->pieces) {
        planpb::ShardPiece* p = out->add_pieces();
        p->set_name(piece.name);
        for (int64_t d : piece.shape) p->add_shape(d);
        p->set_offset(piece.offset);
      }
    }
    if (!fed && !zero) {
      DS_CHECK(v->hasData(), "lowering: '", v->name(), "' (", roleName(v->role()),
               ") has no initial value");
      f_.setInit(index_.at(v), v->data());
    }
  }

  void addArenaTensor(const Value* v) {
    if (auto in = m_.in_state.find(v); in != m_.in_state.end()) {
      int32_t state = index_.at(in->second);  // written into the state's own memory
      planpb::TensorInfo* t = addTensor(v);
      t->set_storage(f_.plan.tensors(state).storage());
      t->set_offset(f_.plan.tensors(state).offset());
      return;
    }
    planpb::TensorInfo* t = addTensor(v);
    auto it = m_.allocations.find(v);
    DS_CHECK(it != m_.allocations.end(), "lowering: '", v->name(), "' has no arena offset");
    t->set_storage(it->second.host ? planpb::HOST_ARENA : planpb::ARENA);
    t->set_offset(it->second.offset);
  }

  static void setRankCost(const RankCost& c, planpb::RankCost* out) {
    out->set_parameter_bytes(c.parameter_bytes);
    out->set_gradient_bytes(c.gradient_bytes);
    out->set_optimizer_bytes(c.optimizer_bytes);
    out->set_buffer_bytes(c.buffer_bytes);
    out->set_comm_buffer_bytes(c.comm_buffer_bytes);
    for (const auto& [op, volume] : c.comm) {
      planpb::CommVolume* v = out->add_comm();
      v->set_op(op);
      v->set_calls_per_step(volume.calls_per_step);
      v->set_bytes_per_step(volume.bytes_per_step);
    }
  }

  template <typename Pred>
  bool has(Pred pred) const {
    for (const auto& n : g_.nodes())
      if (pred(*n)) return true;
    return false;
  }

  int32_t addStream(const char* name) {
    f_.plan.add_streams(name);
    return f_.plan.streams_size() - 1;
  }

  // Host steps (offload) on the host stream, copies on the copy stream, collectives
  // on the comm stream with overlap_comm, the rest on compute (0).
  int32_t streamOf(const Node& n) const {
    if (n.onHost()) return host_stream_;
    if (n.op() == "Copy" && copy_stream_ >= 0) return copy_stream_;
    if (isCollectiveOp(n.op()) && comm_stream_ >= 0) return comm_stream_;
    return 0;
  }

  // The event step `at` of rank plan `r` records, made on first need.
  int32_t eventOf(planpb::RankPlan* r, int at) {
    planpb::Step* s = r->mutable_steps(at);
    if (s->record_event() < 0) {
      s->set_record_event(f_.plan.num_events());
      f_.plan.set_num_events(f_.plan.num_events() + 1);
    }
    return s->record_event();
  }

  // A step waits for the steps on other streams that wrote its inputs. A
  // collective or copy also waits for the last compute and host steps issued
  // before it, whose reads of the memory it writes must be over; the memory plan
  // keeps an asynchronous op's inputs live until its result is first read.
  void addWaits(planpb::RankPlan* r, int at, const Node& n, const std::map<int32_t, int>& producer,
                const std::map<int32_t, int>& last_on_stream) {
    const int32_t stream = r->steps(at).stream();
    std::set<int32_t> waits;
    if (stream == comm_stream_ || stream == copy_stream_)
      for (int32_t other : {int32_t{0}, host_stream_})
        if (auto it = last_on_stream.find(other); other >= 0 && it != last_on_stream.end())
          waits.insert(eventOf(r, it->second));
    for (const Value* v : n.inputs()) {
      if (!v) continue;
      auto it = producer.find(index_.at(v));
      if (it != producer.end() && r->steps(it->second).stream() != stream)
        waits.insert(eventOf(r, it->second));
    }
    for (int32_t e : waits) r->mutable_steps(at)->add_wait_events(e);
  }

  // A step touching bytes that a step on another stream may still be using (or
  // writing) waits for it. The memory plan reuses an asynchronous op's input only after a reader
  // of its result, which waits for it, so this seldom adds a wait; it makes every
  // reuse safe (verifyPlanMemoryOrder proves it).
  void orderReuse(planpb::RankPlan* r, int at, const StreamOrder& order) {
    for (int before : order.hazards(at)) {
      if (before < 0) continue;
      const int32_t e = eventOf(r, before);
      const auto& waits = r->steps(at).wait_events();
      if (std::find(waits.begin(), waits.end(), e) == waits.end())
        r->mutable_steps(at)->add_wait_events(e);
    }
  }

  void emitRank(int32_t rank) {
    planpb::RankPlan* r = f_.plan.add_ranks();
    r->set_rank(rank);
    std::map<int32_t, int> producer;        // tensor -> the step writing it
    std::map<int32_t, int> last_on_stream;  // stream -> its latest step
    StreamOrder optimizer_run(f_, *r, true), micro_run(f_, *r, false);
    for (const auto& n : g_.nodes()) {
      const int at = r->steps_size();
      planpb::Step* s = r->add_steps();
      s->set_op(n->op());
      s->set_node(n->name());
      s->set_stream(streamOf(*n));
      s->set_record_event(-1);
      s->set_phase(n->phase() == Phase::OptimizerStep ? planpb::OPTIMIZER_STEP
                                                      : planpb::EVERY_MICRO_STEP);
      for (const auto& [name, value] : attrsWithDefaults(*n))
        toPlanAttr(name, value, s->add_attrs());
      for (size_t i = 0; i < n->numInputs(); ++i)
        s->add_inputs(n->hasInput(i) ? index_.at(n->input(i)) : -1);
      for (const Value* v : n->outputs()) s->add_outputs(index_.at(v));
      if (f_.plan.streams_size() > 1) {
        addWaits(r, at, *n, producer, last_on_stream);
        for (StreamOrder* order : {&optimizer_run, &micro_run})
          if (order->runs(at)) orderReuse(r, at, *order);
        for (StreamOrder* order : {&optimizer_run, &micro_run})
          if (order->runs(at)) order->commit(at);
      }
      for (const Value* v : n->outputs()) producer[index_.at(v)] = at;
      last_on_stream[r->steps(at).stream()] = at;
    }
  }

  const Graph& g_;
  const MemoryPlan& m_;
  PlanFile f_;
  std::unordered_map<const Value*, int32_t> index_;
  int64_t persistent_bytes_ = 0;
  int64_t host_persistent_bytes_ = 0;
  int32_t comm_stream_ = -1, host_stream_ = -1, copy_stream_ = -1;  // -1: none
};

}  // namespace

PlanFile lowerToPlan(const Graph& graph, const MemoryPlan& memory, const LowerOptions& options) {
  PlanFile plan = Lowering(graph, memory).run(options);
  verifyPlanCollectives(plan);
  verifyPlanStreams(plan);
  verifyPlanMemoryOrder(plan);
  verifyPlanPlacement(plan);
  return plan;
}

}  // namespace ds
