#include "passes/mixed_precision.h"

#include <map>
#include <set>
#include <vector>

#include "ir/error.h"

namespace ds {
namespace {

bool isF32(const Value* v) {
  return v && v->dtype() == DType::F32;
}

// Inputs that are not data the op computes on: Dropout's ratio and training flag.
bool isDataInput(const Node& n, size_t i) {
  return !(n.op() == "Dropout" && i > 0);
}

// The normalisations compute in f32 but read X and write Y in 16 bits (their
// parameters and statistics stay f32), as PyTorch's autocast and cuDNN run them:
// every backend widens a 16-bit input exactly and rounds a 16-bit output once
// (kernels/cpu/promote16.h), so this is Cast -> f32 op -> Cast to the bit, without
// an f32 copy of every normalised activation kept for the backward pass. The
// cross-entropy loss reads 16-bit logits the same way (its loss is f32, its
// gradient rounded once to the logits' dtype: ir/ops/shape_helpers.h).
bool readsSixteenBitData(const Node& n, size_t i) {
  return i == 0 && (n.op() == "BatchNormalization" || n.op() == "LayerNormalization" ||
                    n.op() == "SoftmaxCrossEntropyLoss");
}

class MixedPrecision {
 public:
  MixedPrecision(Graph& g, DType compute, const Value* loss)
      : g_(g), compute_(compute), loss_(loss) {}

  void run() {
    for (Value* p : g_.sourcesWithRole(Role::Parameter))
      if (isF32(p) && allUsesAre16Bit(p)) lower(p);
    std::vector<Node*> nodes;
    for (const auto& n : g_.nodes()) nodes.push_back(n.get());
    for (Node* n : nodes) convert(n);
    // The loss is f32; the model's other outputs keep the compute dtype, as
    // DeepSpeed's half-precision module returns them (an f32 copy of GPT-2's logits
    // would be 1.6 GiB, written every step for a trainer that reads only the loss).
    for (size_t i = 0; i < g_.outputs().size(); ++i) {
      Value* out = g_.outputs()[i];
      if (out == loss_ && out->dtype() == compute_) g_.setOutput(i, cast(out, DType::F32, nullptr));
    }
  }

 private:
  bool allUsesAre16Bit(const Value* p) const {
    for (const Node* u : p->users())
      if (keepsF32(u->op())) return false;
    return !p->users().empty();
  }

  // A parameter used only by 16-bit ops becomes a 16-bit parameter.
  void lower(Value* p) {
    TensorType type = p->type();
    type.dtype = compute_;
    if (p->hasData()) p->setData(std::make_shared<const Tensor>(p->data().castTo(compute_)));
    p->setType(type);
  }

  void convert(Node* n) {
    const bool keep = keepsF32(n->op());
    for (size_t i = 0; i < n->numInputs(); ++i) {
      Value* v = n->input(i);
      if (!v || !isDataInput(*n, i)) continue;
      if (keep && v->dtype() == compute_ && !readsSixteenBitData(*n, i))
        n->setInput(i, cast(v, DType::F32, n));
      else if (!keep && isF32(v))
        n->setInput(i, cast(v, compute_, n));
    }
    g_.inferTypes(n);  // inputs may have changed dtype upstream (parameters, casts)
  }

  // `v` in `to`: a converted constant, or a Cast before `before` (shared by later users).
  Value* cast(Value* v, DType to, Node* before) {
    auto key = std::make_pair(v, to);
    if (auto it = casts_.find(key); it != casts_.end()) return it->second;
    Value* out;
    if (v->role() == Role::Constant && v->hasData())
      out = g_.addConstant(g_.uniqueName(v->name() + "/" + std::string(dtypeName(to))),
                           v->data().castTo(to));
    else
      out = g_.addNode("Cast", {v}, {{"to", std::string(dtypeName(to))}},
                       {g_.uniqueName(v->name() + "/" + std::string(dtypeName(to)))}, "", before)
                ->output(0);
    casts_[key] = out;
    return out;
  }

  Graph& g_;
  DType compute_;
  const Value* loss_;
  std::map<std::pair<Value*, DType>, Value*> casts_;
};

}  // namespace

// Softmax is not here: like Megatron-LM's fused scale-mask-softmax (which DeepSpeed's
// GPT training runs), it reads and writes 16-bit data with f32 math inside, and its
// gradient reads the 16-bit probabilities. Attention probabilities are the largest
// activations of a transformer ([batch, heads, T, T]); in f32 they cost a Cast
// in, a Cast out to the 16-bit product that reads them, and two more in backward.
bool keepsF32(const std::string& op) {
  static const std::set<std::string> ops = {
      "BatchNormalization", "LayerNormalization", "LogSoftmax",      "SoftmaxCrossEntropyLoss",
      "ReduceSum",          "ReduceMean",         "ReduceSumSquare", "NegativeLogLikelihoodLoss"};
  return ops.count(op) != 0;
}

void convertToMixedPrecision(Graph& g, DType compute, const Value* loss) {
  DS_CHECK(compute == DType::F16 || compute == DType::BF16,
           "mixed precision computes in f16 or bf16, not ", dtypeName(compute));
  MixedPrecision(g, compute, loss).run();
}

}  // namespace ds
