#include "passes/lower_to_plan.h"

#include <map>
#include <set>
#include <unordered_map>

#include "ir/error.h"
#include "ir/op_registry.h"
#include "ir/plan_verifier.h"
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
    overlap_ = o.overlap_comm && hasCollectives();
    if (overlap_) p.add_streams("comm");
    for (const Value* v : g_.sources()) addSource(v);
    for (const auto& n : g_.nodes())
      for (const Value* v : n->outputs()) addArenaTensor(v);
    for (const Value* v : g_.feeds()) p.add_feeds(index_.at(v));
    for (const Value* v : g_.outputs()) p.add_outputs(index_.at(v));
    p.set_arena_bytes(m_.arena_bytes);
    p.set_peak_live_bytes(m_.peak_live_bytes);
    p.set_persistent_bytes(persistent_bytes_);
    setRankCost(rankCost(g_, o.accumulation), p.mutable_rank_cost());
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
    t->set_storage(planpb::PERSISTENT);
    t->set_offset(persistent_bytes_);
    persistent_bytes_ = alignUp(persistent_bytes_ + static_cast<int64_t>(v->type().bytes()));
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
    for (const Graph::StateUpdate& u : g_.stateUpdates()) {
      if (u.next != v) continue;
      int32_t state = index_.at(u.state);  // the update writes the state's own memory
      planpb::TensorInfo* t = addTensor(v);
      t->set_storage(planpb::PERSISTENT);
      t->set_offset(f_.plan.tensors(state).offset());
      return;
    }
    planpb::TensorInfo* t = addTensor(v);
    t->set_storage(planpb::ARENA);
    auto it = m_.allocations.find(v);
    DS_CHECK(it != m_.allocations.end(), "lowering: '", v->name(), "' has no arena offset");
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

  bool hasCollectives() const {
    for (const auto& n : g_.nodes())
      if (isCollectiveOp(n->op())) return true;
    return false;
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

  // Overlap: a collective waits for the compute step issued just before it (so the
  // memory it writes is no longer read there), and a compute step reading a
  // collective's result waits for that collective; the memory plan keeps the
  // collective's inputs live until then.
  void addWaits(planpb::RankPlan* r, int at, const Node& n, std::map<int32_t, int>& producer,
                int last_compute) {
    planpb::Step* s = r->mutable_steps(at);
    std::set<int32_t> waits;
    if (s->stream() == 1 && last_compute >= 0) waits.insert(eventOf(r, last_compute));
    if (s->stream() == 0)
      for (const Value* v : n.inputs()) {
        if (!v) continue;
        auto it = producer.find(index_.at(v));
        if (it != producer.end() && r->steps(it->second).stream() == 1)
          waits.insert(eventOf(r, it->second));
      }
    for (int32_t e : waits) r->mutable_steps(at)->add_wait_events(e);
  }

  void emitRank(int32_t rank) {
    planpb::RankPlan* r = f_.plan.add_ranks();
    r->set_rank(rank);
    std::map<int32_t, int> producer;  // tensor -> the step writing it
    int last_compute = -1;
    for (const auto& n : g_.nodes()) {
      const int at = r->steps_size();
      planpb::Step* s = r->add_steps();
      s->set_op(n->op());
      s->set_node(n->name());
      s->set_stream(overlap_ && isCollectiveOp(n->op()) ? 1 : 0);
      s->set_record_event(-1);
      s->set_phase(n->phase() == Phase::OptimizerStep ? planpb::OPTIMIZER_STEP
                                                      : planpb::EVERY_MICRO_STEP);
      for (const auto& [name, value] : attrsWithDefaults(*n))
        toPlanAttr(name, value, s->add_attrs());
      for (size_t i = 0; i < n->numInputs(); ++i)
        s->add_inputs(n->hasInput(i) ? index_.at(n->input(i)) : -1);
      for (const Value* v : n->outputs()) s->add_outputs(index_.at(v));
      if (overlap_) addWaits(r, at, *n, producer, last_compute);
      for (const Value* v : n->outputs()) producer[index_.at(v)] = at;
      if (r->steps(at).stream() == 0) last_compute = at;
    }
  }

  const Graph& g_;
  const MemoryPlan& m_;
  PlanFile f_;
  std::unordered_map<const Value*, int32_t> index_;
  int64_t persistent_bytes_ = 0;
  bool overlap_ = false;
};

}  // namespace

PlanFile lowerToPlan(const Graph& graph, const MemoryPlan& memory, const LowerOptions& options) {
  PlanFile plan = Lowering(graph, memory).run(options);
  verifyPlanCollectives(plan);
  verifyPlanStreams(plan);
  return plan;
}

}  // namespace ds
