#include "passes/zero_partition.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>

#include "ir/error.h"
#include "passes/accumulate_grads.h"

namespace ds {
namespace {

// Parameters whose gradients travel together, packed in order into one flat buffer.
struct Bucket {
  std::vector<Value*> params;
  std::vector<Value*> grads;
  int64_t elements = 0;
  bool sharded_params = false;  // stage 3: only the shard persists
  ShardLayout layout;           // the parameters' pieces in the flat buffer
};

bool isF32(const Value* v) {
  return v->dtype() == DType::F32;
}

std::vector<int64_t> oneDim(int64_t n) {
  return {n};
}

// `parts` flattened and concatenated, zero-padded to `elements`, before `before`.
Value* flatBuffer(Graph& g, const std::vector<Value*>& parts, int64_t elements,
                  const std::string& name, Node* before) {
  std::vector<Value*> flat;
  int64_t total = 0;
  for (Value* v : parts) {
    const int64_t n = v->type().numel();
    total += n;
    flat.push_back(
        v->rank() == 1
            ? v
            : g.addNode("Reshape", {v}, {{"shape", oneDim(n)}}, {}, "", before)->output(0));
  }
  const DType dtype = parts.front()->dtype();
  if (elements > total)
    flat.push_back(g.addConstant(g.uniqueName(name + "/padding"),
                                 Tensor(TensorType{dtype, {elements - total}})));
  if (flat.size() == 1) return flat[0];
  Node* cat = g.addNode("Concat", flat, {{"axis", int64_t{0}}}, {g.uniqueName(name)},
                        g.uniqueName(name + "/pack"), before);
  cat->output(0)->setRole(Role::CommBuffer);
  return cat->output(0);
}

// The bucket's tensors, shaped as `like`, out of a flat buffer (padding dropped).
std::vector<Value*> unpack(Graph& g, Value* flat, const std::vector<Value*>& like,
                           const std::string& name, Node* before) {
  std::vector<int64_t> sizes;
  for (Value* v : like) sizes.push_back(v->type().numel());
  int64_t total = 0;
  for (int64_t n : sizes) total += n;
  if (flat->type().numel() > total) sizes.push_back(flat->type().numel() - total);
  std::vector<Value*> pieces;
  if (sizes.size() == 1) {
    pieces.push_back(flat);
  } else {
    Node* split = g.addNodeN("Split", {flat}, {{"axis", int64_t{0}}, {"split", sizes}},
                             sizes.size(), g.uniqueName(name + "/unpack"), before);
    pieces = split->outputs();
  }
  std::vector<Value*> out;
  for (size_t i = 0; i < like.size(); ++i) {
    Value* v = pieces[i];
    if (v->shape() != like[i]->shape())
      v = g.addNode("Reshape", {v}, {{"shape", like[i]->shape()}}, {}, "", before)->output(0);
    out.push_back(v);
  }
  return out;
}

class ZeroBuilder {
 public:
  ZeroBuilder(Graph& g, const ZeroOptions& o, const Node* last_forward) : g_(g), o_(o) {
    size_t i = 0;
    for (const auto& n : g.nodes()) {
      order_[n.get()] = i++;
      if (n.get() == last_forward) forward_end_ = order_[n.get()];
    }
  }

  ZeroPartition run(const std::vector<ParamGrad>& grads) {
    ZeroPartition out;
    if (o_.world_size == 1 && o_.stage == 0) {
      std::vector<ParamGrad> whole = grads;
      if (o_.accumulation > 1)
        whole = out.accumulated = accumulateGradients(g_, grads, o_.accumulate_in_f32);
      stepOneRank(whole, &out);
      return out;
    }
    std::vector<ParamGrad> full = grads;
    // Stages 0 and 1 with accumulation: whole gradients accumulate, then reduce once.
    const bool reduce_in_step = o_.accumulation > 1 && o_.stage <= 1;
    if (reduce_in_step)
      full = out.accumulated = accumulateGradients(g_, grads, o_.accumulate_in_f32);
    std::vector<Bucket> buckets = makeBuckets(full);
    out.shard_world_size = o_.stage == 0 ? 1 : o_.world_size;
    if (o_.stage == 3) gatherStage3Parameters(buckets);
    for (size_t i = 0; i < buckets.size(); ++i) {
      const Bucket& b = buckets[i];
      const std::string name = "zero/bucket" + std::to_string(i);
      std::optional<Graph::PhaseScope> phase;
      if (reduce_in_step) phase.emplace(g_, Phase::OptimizerStep);
      Node* before = reduce_in_step ? nullptr : afterLastGradient(b);
      if (o_.stage == 0) {
        for (const ParamGrad& pg : allReduce(b, name, before)) stepWhole(pg, &out);
        continue;
      }
      Value* grad = toF32(reduceScatter(b, name, before), before);
      Value* shard = b.sharded_params ? shards_.at(i) : nullptr;
      // The optimizer steps f32: the stage-3 shard itself, else an f32 master shard.
      Value* stepped = shard && isF32(shard) ? shard : masterCopy(b, name);
      if (o_.accumulation > 1 && !reduce_in_step) {
        std::vector<ParamGrad> acc =
            accumulateGradients(g_, std::vector<ParamGrad>{{stepped, grad}});
        out.accumulated.push_back(acc[0]);
        grad = acc[0].grad;
      }
      out.updates.push_back({stepped, grad});
      if (!shard)
        out.write_back.push_back({stepped, b.params, true});
      else if (stepped != shard)
        out.write_back.push_back({stepped, {shard}, false});
    }
    for (Value* p : replaced_) g_.eraseSource(p);
    return out;
  }

 private:
  std::vector<Bucket> makeBuckets(const std::vector<ParamGrad>& grads) {
    std::vector<Bucket> buckets;
    // Stage 3 buckets its sharded parameters and its persistent ones separately; a
    // bucket holds one dtype (mixed precision keeps some parameters f32).
    std::map<std::pair<bool, DType>, size_t> open;
    for (const ParamGrad& pg : grads) {
      const int64_t n = pg.param->type().numel();
      const bool sharded = o_.stage == 3 && n > o_.param_persistence_threshold;
      const int64_t limit = sharded ? o_.prefetch_bucket_elements : o_.reduce_bucket_elements;
      size_t& at = open.try_emplace({sharded, pg.param->dtype()}, SIZE_MAX).first->second;
      if (at == SIZE_MAX || (buckets[at].elements > 0 && buckets[at].elements + n > limit)) {
        buckets.emplace_back();
        at = buckets.size() - 1;
        buckets[at].sharded_params = sharded;
        buckets[at].layout.world_size = o_.world_size;
      }
      Bucket& b = buckets[at];
      b.layout.pieces.push_back({pg.param->name(), pg.param->shape(), b.elements});
      b.params.push_back(pg.param);
      b.grads.push_back(computed(pg.grad));
      b.elements += n;
    }
    return buckets;
  }

  // A gradient as its last backward op computes it: autodiff names gradients with
  // Identity nodes at the end of backward, which would hold every reduction back
  // until backward is over (dead-code elimination then drops them).
  static Value* computed(Value* grad) {
    while (grad->producer() && grad->producer()->op() == "Identity" && grad->users().empty())
      grad = grad->producer()->input(0);
    return grad;
  }

  int64_t shardElements(const Bucket& b) const {
    return (b.elements + o_.world_size - 1) / o_.world_size;
  }

  // The node right after the last producer of the bucket's gradients.
  Node* afterLastGradient(const Bucket& b) const {
    const Node* last = nullptr;
    for (Value* grad : b.grads) {
      DS_CHECK(grad->producer() != nullptr, "zero: gradient '", grad->name(), "' has no producer");
      if (!last || order_.at(grad->producer()) > order_.at(last)) last = grad->producer();
    }
    return g_.nextNode(last);
  }

  // The bucket's gradients packed into `elements` for a reduction, in the dtype
  // they are communicated in, as DeepSpeed casts to communication_data_type: f32
  // when it asks, else the parameters' dtype (f32 accumulators of 16-bit gradients
  // are rounded back). At one rank nothing is communicated, so nothing is cast.
  Value* commBuffer(const Bucket& b, int64_t elements, const std::string& name, Node* before) {
    Value* flat = flatBuffer(g_, b.grads, elements, name + "/grads", before);
    const DType wire = o_.communicate_in_f32 ? DType::F32 : b.params.front()->dtype();
    if (o_.world_size == 1 || flat->dtype() == wire) return flat;
    Value* cast = g_.addNode("Cast", {flat}, {{"to", std::string(dtypeName(wire))}},
                             {g_.uniqueName(name + "/grads_" + std::string(dtypeName(wire)))},
                             name + "/to_" + std::string(dtypeName(wire)), before)
                      ->output(0);
    cast->setRole(Role::CommBuffer);
    return cast;
  }

  // Stage 0: every rank gets the summed gradients of the bucket.
  std::vector<ParamGrad> allReduce(const Bucket& b, const std::string& name, Node* before) {
    Value* flat = commBuffer(b, b.elements, name, before);
    Value* sum = g_.addNode("AllReduce", {flat}, {{"world_size", o_.world_size}},
                            {g_.uniqueName(name + "/grads_sum")}, name + "/all_reduce", before)
                     ->output(0);
    sum->setRole(Role::CommBuffer);
    std::vector<Value*> reduced = unpack(g_, sum, b.grads, name + "/grads_sum", before);
    std::vector<ParamGrad> out;
    for (size_t i = 0; i < b.params.size(); ++i) {
      reduced[i]->setRole(Role::Gradient);
      out.push_back({b.params[i], reduced[i]});
    }
    return out;
  }

  // Stages 1-3: this rank's shard of the bucket's summed gradients.
  Value* reduceScatter(const Bucket& b, const std::string& name, Node* before) {
    Value* flat = commBuffer(b, shardElements(b) * o_.world_size, name, before);
    Value* shard = g_.addNode("ReduceScatter", {flat}, {{"world_size", o_.world_size}},
                              {name + "/grad_shard"}, name + "/reduce_scatter", before)
                       ->output(0);
    shard->setRole(Role::Gradient);
    return shard;
  }

  // The bucket's initial parameter values, packed and padded: every rank's shard.
  std::shared_ptr<const Tensor> packedInitialValues(const Bucket& b) const {
    Tensor flat(TensorType{b.params.front()->dtype(), {shardElements(b) * o_.world_size}});
    size_t at = 0;
    for (Value* p : b.params) {
      DS_CHECK(p->hasData(), "zero: parameter '", p->name(), "' has no initial value");
      std::memcpy(flat.raw() + at, p->data().raw(), p->data().bytes());
      at += p->data().bytes();
    }
    return std::make_shared<const Tensor>(std::move(flat));
  }

  // The f32 master shard the optimizer steps (stages 1-2, 16-bit stage-3 shards).
  // Packing 16-bit parameters, its pieces are "<param>.master": the parameters'
  // own names hold their 16-bit values.
  Value* masterCopy(const Bucket& b, const std::string& name) {
    ShardLayout layout = b.layout;
    if (!isF32(b.params.front()))
      for (ShardPiece& piece : layout.pieces) piece.name += ".master";
    auto data = std::make_shared<const Tensor>(packedInitialValues(b)->castTo(DType::F32));
    return g_.addShardedSource(name + ".master", DType::F32, Role::OptimizerState,
                               std::move(layout), std::move(data));
  }

  // One rank at stage 0. An f32 model steps its parameters in place. A mixed
  // precision one steps f32 masters packed by bucket, as stage 1 packs them (at one
  // rank the same arithmetic): one multi-tensor step per bucket rather than one per
  // parameter; its few f32 parameters (normalisations') are packed too, at the cost
  // of a flat copy of them.
  void stepOneRank(const std::vector<ParamGrad>& grads, ZeroPartition* out) {
    const bool mixed = std::any_of(grads.begin(), grads.end(),
                                   [](const ParamGrad& pg) { return !isF32(pg.param); });
    if (!mixed || o_.whole_masters) {
      for (const ParamGrad& pg : grads) stepWhole(pg, out);
      return;
    }
    Graph::PhaseScope optimizer_step(g_, Phase::OptimizerStep);
    std::vector<Bucket> buckets = makeBuckets(grads);
    for (size_t i = 0; i < buckets.size(); ++i) {
      const Bucket& b = buckets[i];
      const std::string name = "zero/bucket" + std::to_string(i);
      Value* grad = toF32(flatBuffer(g_, b.grads, b.elements, name + "/grads", nullptr), nullptr);
      Value* master = masterCopy(b, name);
      out->updates.push_back({master, grad});
      out->write_back.push_back({master, b.params, true});
    }
  }

  // A whole parameter's update: itself when f32, else an f32 master copy written back
  // (rounded) after the step, as DeepSpeed's fp16 optimizers keep one.
  void stepWhole(const ParamGrad& pg, ZeroPartition* out) {
    if (isF32(pg.param)) {
      out->updates.push_back(pg);
      return;
    }
    Graph::PhaseScope optimizer_step(g_, Phase::OptimizerStep);
    DS_CHECK(pg.param->hasData(), "zero: parameter '", pg.param->name(), "' has no initial value");
    Value* master = g_.addSource(
        pg.param->name() + ".master", {DType::F32, pg.param->shape()}, Role::OptimizerState,
        std::make_shared<const Tensor>(pg.param->data().castTo(DType::F32)));
    out->updates.push_back({master, toF32(pg.grad, nullptr)});
    out->write_back.push_back({master, {pg.param}, false});
  }

  Value* toF32(Value* v, Node* before) {
    if (isF32(v)) return v;
    Value* out = g_.addNode("Cast", {v}, {{"to", std::string("f32")}},
                            {g_.uniqueName(v->name() + "/f32")}, "", before)
                     ->output(0);
    out->setRole(Role::Gradient);
    return out;
  }

  // Where the parameters of a stage-3 bucket are used: forward, and backward unless
  // the bucket is kept from forward.
  struct BucketUses {
    std::vector<std::pair<Node*, size_t>> forward, backward;  // (user, input slot)
  };

  // Stage 3: shards replace the bucket's parameters, which are gathered for use.
  void gatherStage3Parameters(const std::vector<Bucket>& buckets) {
    std::vector<bool> keep = keepForBackward(buckets);
    std::map<size_t, BucketUses> uses;
    for (size_t i = 0; i < buckets.size(); ++i) {
      if (!buckets[i].sharded_params) continue;
      BucketUses& u = uses[i];
      for (Value* p : buckets[i].params)
        for (Node* user : std::vector<Node*>(p->users()))
          for (size_t s = 0; s < user->numInputs(); ++s)
            if (user->input(s) == p)
              (isBackward(user) && !keep[i] ? u.backward : u.forward).push_back({user, s});
    }
    std::map<size_t, Node*> forward_at = prefetchPoints(uses, false);
    std::map<size_t, Node*> backward_at = prefetchPoints(uses, true);
    for (auto& [i, u] : uses) {
      const Bucket& b = buckets[i];
      const std::string name = "zero/bucket" + std::to_string(i);
      Value* shard = g_.addShardedSource(name + ".params", b.params.front()->dtype(),
                                         Role::Parameter, b.layout, packedInitialValues(b));
      shards_[i] = shard;
      gatherFor(b, shard, u.forward, name + "/gather", forward_at.at(i));
      if (!u.backward.empty())
        gatherFor(b, shard, u.backward, name + "/gather_backward", backward_at.at(i));
      for (Value* p : b.params) replaced_.push_back(p);  // erased once masters are made
    }
  }

  Node* firstOf(const std::vector<std::pair<Node*, size_t>>& uses) const {
    Node* first = nullptr;
    for (const auto& [user, slot] : uses)
      if (!first || order_.at(user) < order_.at(first)) first = user;
    return first;
  }

  // Where each bucket's gather is issued: before the first use of the bucket used
  // just before it (forward or backward order), i.e. prefetched one bucket — at most
  // stage3_prefetch_bucket_size elements — ahead; without prefetching, before its
  // own first use.
  std::map<size_t, Node*> prefetchPoints(const std::map<size_t, BucketUses>& uses,
                                         bool backward) const {
    std::vector<std::pair<size_t, Node*>> firsts;  // (order of first use, its node)
    std::map<size_t, Node*> at;
    for (const auto& [i, u] : uses) {
      Node* first = firstOf(backward ? u.backward : u.forward);
      if (first) firsts.push_back({i, first});
    }
    std::sort(firsts.begin(), firsts.end(), [&](const auto& a, const auto& b) {
      return order_.at(a.second) < order_.at(b.second);
    });
    for (size_t k = 0; k < firsts.size(); ++k)
      at[firsts[k].first] = o_.prefetch && k > 0 ? firsts[k - 1].second : firsts[k].second;
    return at;
  }

  // One AllGather before `at`, whose values then replace the parameters in `uses`.
  void gatherFor(const Bucket& b, Value* shard, const std::vector<std::pair<Node*, size_t>>& uses,
                 const std::string& name, Node* at) {
    Value* flat = g_.addNode("AllGather", {shard}, {{"world_size", o_.world_size}},
                             {g_.uniqueName(name + "ed")}, g_.uniqueName(name), at)
                      ->output(0);
    flat->setRole(Role::CommBuffer);
    std::vector<Value*> values = unpack(g_, flat, b.params, name, at);
    for (const auto& [user, slot] : uses) {
      auto it = std::find(b.params.begin(), b.params.end(), user->input(slot));
      user->setInput(slot, values[static_cast<size_t>(it - b.params.begin())]);
    }
  }

  bool isBackward(const Node* n) const {
    auto it = order_.find(n);
    return it != order_.end() && it->second > forward_end_;
  }

  // Which stage-3 buckets backward reuses from forward instead of gathering again:
  // a bucket's reuse distance is the elements gathered between its forward and its
  // backward use (each later bucket once in forward, once in backward); closest
  // first, while the kept buckets fit max_live_parameters (DeepSpeed's limits).
  std::vector<bool> keepForBackward(const std::vector<Bucket>& buckets) const {
    std::vector<bool> keep(buckets.size(), false);
    int64_t later = 0, live = 0;
    for (size_t i = buckets.size(); i-- > 0;) {
      if (!buckets[i].sharded_params) continue;
      const int64_t distance = 2 * later;
      if (distance <= o_.max_reuse_distance &&
          live + buckets[i].elements <= o_.max_live_parameters) {
        keep[i] = true;
        live += buckets[i].elements;
      }
      later += buckets[i].elements;
    }
    return keep;
  }

  Graph& g_;
  const ZeroOptions& o_;
  std::unordered_map<const Node*, size_t> order_;
  size_t forward_end_ = SIZE_MAX;
  std::map<size_t, Value*> shards_;  // stage 3: bucket index -> its parameter shard
  std::vector<Value*> replaced_;     // stage 3: parameters their shards replace
};

}  // namespace

ZeroPartition partitionForZero(Graph& g, const std::map<Value*, Value*>& grads,
                               const Node* last_forward, const ZeroOptions& o) {
  DS_CHECK(o.stage >= 0 && o.stage <= 3, "zero_optimization.stage: must be 0, 1, 2 or 3, is ",
           o.stage);
  DS_CHECK(o.world_size >= 1, "world size: must be at least 1, is ", o.world_size);
  DS_CHECK(o.reduce_bucket_elements >= 1 && o.prefetch_bucket_elements >= 1,
           "zero_optimization: bucket sizes must be at least 1");
  return ZeroBuilder(g, o, last_forward).run(inDeclarationOrder(g, grads));
}

void finishZeroStep(Graph& g, const ZeroPartition& p, const std::map<Value*, Value*>& next) {
  Graph::PhaseScope optimizer_step(g, Phase::OptimizerStep);
  for (const ZeroPartition::WriteBack& wb : p.write_back) {
    const std::string& name = wb.master->name();
    Value* value = next.at(wb.master);
    // Right after the step that updates the master, so that a bucket's gather and
    // unpacking (and under offload its copy up) overlap the next bucket's step.
    Node* before = g.nextNode(value->producer());
    const DType dtype = wb.targets.front()->dtype();
    if (value->dtype() != dtype)  // the 16-bit parameters round the f32 masters
      value = g.addNode("Cast", {value}, {{"to", std::string(dtypeName(dtype))}},
                        {name + "/" + std::string(dtypeName(dtype))}, name + "/round", before)
                  ->output(0);
    if (!wb.all_gather) {
      g.addStateUpdate(wb.targets.front(), value);
      continue;
    }
    const int64_t world = wb.master->shardLayout()->world_size;
    // One rank's shard is the whole bucket: the rounded copy unpacks as it is (the
    // master's own next value cannot, being the master's update already).
    Value* flat = value;
    if (world > 1 || value == next.at(wb.master)) {
      flat = g.addNode("AllGather", {value}, {{"world_size", world}}, {name + "/gathered"},
                       name + "/all_gather", before)
                 ->output(0);
      flat->setRole(Role::CommBuffer);
    }
    std::vector<Value*> values = unpack(g, flat, wb.targets, name, before);
    for (size_t i = 0; i < wb.targets.size(); ++i) g.addStateUpdate(wb.targets[i], values[i]);
  }
  if (!p.accumulated.empty()) resetAccumulators(g, p.accumulated);
}

}  // namespace ds
