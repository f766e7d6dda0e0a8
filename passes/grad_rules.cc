// Gradient rules (see grad_rules.h). Each rule's math is in its one-line comment;
// reduceToShape undoes broadcasting.
#include "passes/grad_rules.h"

#include <numeric>

#include "ir/error.h"

namespace ds {

GradContext::GradContext(Graph& graph, const Node& node, std::vector<Value*> output_grads)
    : graph_(graph), node_(node), output_grads_(std::move(output_grads)) {}

bool GradContext::wants(size_t i) const {
  return i < wanted_.size() && wanted_[i];
}

std::vector<Value*> GradContext::emitN(const std::string& op, std::vector<Value*> inputs,
                                       AttributeMap attrs, size_t num_outputs) {
  std::vector<std::string> names(num_outputs);
  for (std::string& n : names) n = graph_.uniqueName(node_.name() + "_grad");
  Node* n = graph_.addNode(op, std::move(inputs), std::move(attrs), names,
                           graph_.uniqueName(node_.name() + "/grad/" + op));
  for (Value* v : n->outputs()) v->setRole(Role::Gradient);
  return n->outputs();
}

Value* GradContext::emit(const std::string& op, std::vector<Value*> inputs, AttributeMap attrs) {
  return emitN(op, std::move(inputs), std::move(attrs), 1)[0];
}

Value* GradContext::scalar(double v, DType dtype) {
  Tensor t({dtype, {}});
  t.setDouble(0, v);
  return graph_.addConstant(graph_.uniqueName(node_.name() + "_grad_const"), std::move(t));
}

Value* GradContext::reduceToShape(Value* g, const Shape& shape) {
  if (g->shape() == shape) return g;
  const Shape& from = g->shape();
  size_t lead = from.size() - shape.size();
  std::vector<int64_t> axes;
  for (size_t i = 0; i < from.size(); ++i)
    if (i < lead || (shape[i - lead] == 1 && from[i] != 1)) axes.push_back(static_cast<int64_t>(i));
  Value* summed = emit("ReduceSum", {g}, {{"axes", axes}, {"keepdims", int64_t{1}}});
  return summed->shape() == shape ? summed : emit("Reshape", {summed}, {{"shape", shape}});
}

namespace {

using Grads = std::vector<Value*>;

// Y = A + B ⇒ dA = dY, dB = dY (each reduced to its shape)
Grads addGrad(GradContext& c) {
  return {c.reduceToShape(c.dy(), c.x(0)->shape()), c.reduceToShape(c.dy(), c.x(1)->shape())};
}

// Y = A - B ⇒ dA = dY, dB = -dY
Grads subGrad(GradContext& c) {
  Value* db = c.wants(1) ? c.reduceToShape(c.emit("Neg", {c.dy()}), c.x(1)->shape()) : nullptr;
  return {c.reduceToShape(c.dy(), c.x(0)->shape()), db};
}

// Y = A·B ⇒ dA = dY·B, dB = dY·A
Grads mulGrad(GradContext& c) {
  Value* da =
      c.wants(0) ? c.reduceToShape(c.emit("Mul", {c.dy(), c.x(1)}), c.x(0)->shape()) : nullptr;
  Value* db =
      c.wants(1) ? c.reduceToShape(c.emit("Mul", {c.dy(), c.x(0)}), c.x(1)->shape()) : nullptr;
  return {da, db};
}

// Y = A / B ⇒ dA = dY / B, dB = -dY·Y / B
Grads divGrad(GradContext& c) {
  Value* da =
      c.wants(0) ? c.reduceToShape(c.emit("Div", {c.dy(), c.x(1)}), c.x(0)->shape()) : nullptr;
  Value* db = nullptr;
  if (c.wants(1)) {
    Value* t = c.emit("Div", {c.emit("Mul", {c.dy(), c.y()}), c.x(1)});
    db = c.reduceToShape(c.emit("Neg", {t}), c.x(1)->shape());
  }
  return {da, db};
}

// Y = -X ⇒ dX = -dY
Grads negGrad(GradContext& c) {
  return {c.emit("Neg", {c.dy()})};
}

// Y = X ⇒ dX = dY
Grads identityGrad(GradContext& c) {
  return {c.dy()};
}

// Y = max(X, 0) ⇒ dX = dY where Y ≠ 0, else 0 (PyTorch's subgradient at 0)
Grads reluGrad(GradContext& c) {
  return {c.emit("ReluGrad", {c.dy(), c.y()})};
}

// Y = clip(X, min, max) ⇒ dX = dY where min < X < max, else 0 (PyTorch's hardtanh
// gradient: zero at the bounds too)
Grads clipGrad(GradContext& c) {
  return {c.emit("ClipGrad", {c.dy(), c.x(0)},
                 {{"min", c.node().f("min")}, {"max", c.node().f("max")}})};
}

// Y = X > 0 ? X : α·X ⇒ dX = dY where X > 0, else α·dY (PyTorch's choice at 0)
Grads leakyReluGrad(GradContext& c) {
  return {c.emit("LeakyReluGrad", {c.dy(), c.x(0)}, {{"alpha", c.node().f("alpha")}})};
}

// Y = Trilu(X) keeps a triangle ⇒ dX is dY's same triangle
Grads triluGrad(GradContext& c) {
  return {c.emit("Trilu", {c.dy()}, {{"k", c.node().i("k")}, {"upper", c.node().i("upper")}})};
}

// Y = σ(X) ⇒ dX = dY·Y·(1 − Y)
Grads sigmoidGrad(GradContext& c) {
  Value* one_minus = c.emit("Sub", {c.scalar(1, c.y()->dtype()), c.y()});
  return {c.emit("Mul", {c.emit("Mul", {c.dy(), c.y()}), one_minus})};
}

// Y = tanh(X) ⇒ dX = dY·(1 − Y²)
Grads tanhGrad(GradContext& c) {
  Value* sq = c.emit("Mul", {c.y(), c.y()});
  return {c.emit("Mul", {c.dy(), c.emit("Sub", {c.scalar(1, c.y()->dtype()), sq})})};
}

// Y = √X ⇒ dX = dY / (2Y)
Grads sqrtGrad(GradContext& c) {
  return {c.emit("Div", {c.dy(), c.emit("Mul", {c.y(), c.scalar(2, c.y()->dtype())})})};
}

// Y = log(X) ⇒ dX = dY / X
Grads logGrad(GradContext& c) {
  return {c.emit("Div", {c.dy(), c.x(0)})};
}

// Y = log(1 + e^X) ⇒ dX = dY·σ(X)
Grads softplusGrad(GradContext& c) {
  return {c.emit("Mul", {c.dy(), c.emit("Sigmoid", {c.x(0)})})};
}

// Y = A^p, p constant ⇒ dA = dY·p·A^(p−1)
Grads powGrad(GradContext& c) {
  DS_CHECK(!c.wants(1), "autodiff: ", c.node().describe(), ": gradient of the exponent");
  Value* p = c.x(1);
  Value* pm1 = c.emit("Sub", {p, c.scalar(1, p->dtype())});
  Value* t =
      c.emit("Mul", {c.emit("Pow", {c.x(0), pm1}),
                     c.emit("Cast", {p}, {{"to", std::string(dtypeName(c.x(0)->dtype()))}})});
  return {c.reduceToShape(c.emit("Mul", {c.dy(), t}), c.x(0)->shape()), nullptr};
}

// Y = Where(C, A, B) ⇒ dA = Where(C, dY, 0), dB = Where(C, 0, dY)
Grads whereGrad(GradContext& c) {
  Value* zero = c.scalar(0, c.dy()->dtype());
  Value* da = c.wants(1) ? c.reduceToShape(c.emit("Where", {c.x(0), c.dy(), zero}), c.x(1)->shape())
                         : nullptr;
  Value* db = c.wants(2) ? c.reduceToShape(c.emit("Where", {c.x(0), zero, c.dy()}), c.x(2)->shape())
                         : nullptr;
  return {nullptr, da, db};
}

// Y = Cast(X) ⇒ dX = Cast(dY) back to X's dtype
Grads castGrad(GradContext& c) {
  return {c.emit("Cast", {c.dy()}, {{"to", std::string(dtypeName(c.x(0)->dtype()))}})};
}

// Reshape, Flatten, Squeeze, Unsqueeze ⇒ dX = reshape(dY, X.shape)
Grads reshapeGrad(GradContext& c) {
  return {c.emit("Reshape", {c.dy()}, {{"shape", c.x(0)->shape()}})};
}

// Y = transpose(X, p) ⇒ dX = transpose(dY, p⁻¹)
Grads transposeGrad(GradContext& c) {
  std::vector<int64_t> perm = c.node().ints("perm");
  if (perm.empty())
    for (int64_t i = c.x(0)->rank() - 1; i >= 0; --i) perm.push_back(i);
  std::vector<int64_t> inverse(perm.size());
  for (size_t i = 0; i < perm.size(); ++i)
    inverse[static_cast<size_t>(perm[i])] = static_cast<int64_t>(i);
  return {c.emit("Transpose", {c.dy()}, {{"perm", inverse}})};
}

// Y = Expand(X) ⇒ dX = Σ over broadcast axes of dY
Grads expandGrad(GradContext& c) {
  return {c.reduceToShape(c.dy(), c.x(0)->shape())};
}

// dY of a ReduceSum/Mean spread back over X's shape (÷ count for Mean), in dY's
// type: no axes with noop_with_empty_axes reduce nothing, so dY itself.
Value* spreadReduceGrad(GradContext& c, bool mean) {
  const Shape& xs = c.x(0)->shape();
  std::vector<int64_t> axes = c.node().ints("axes");
  if (axes.empty() && c.node().i("noop_with_empty_axes") != 0) return c.dy();
  if (axes.empty())
    for (int64_t i = 0; i < static_cast<int64_t>(xs.size()); ++i) axes.push_back(i);
  Shape kept = xs;
  int64_t count = 1;
  for (int64_t a : axes) {
    size_t axis = static_cast<size_t>(a < 0 ? a + static_cast<int64_t>(xs.size()) : a);
    count *= xs[axis];
    kept[axis] = 1;
  }
  Value* g = c.emit("Reshape", {c.dy()}, {{"shape", kept}});
  if (mean) g = c.emit("Div", {g, c.scalar(static_cast<double>(count), g->dtype())});
  return c.emit("Expand", {g}, {{"shape", xs}});
}

// `v` in X's type: an f32 sum of a 16-bit X (`to`) computes its gradient in f32, as
// Cast then the sum would, and rounds it to X's type last.
Value* inXType(GradContext& c, Value* v) {
  const DType t = c.x(0)->dtype();
  return v->dtype() == t ? v : c.emit("Cast", {v}, {{"to", std::string(dtypeName(t))}});
}

// Y = ReduceSum/Mean(X, axes) ⇒ dX = expand(dY with kept axes) (÷ count for Mean).
Grads reduceGrad(GradContext& c, bool mean) {
  return {inXType(c, spreadReduceGrad(c, mean))};
}

// Y = Σ_axes X² (ReduceSumSquare) ⇒ dX = 2·X·(dY spread as ReduceSum's gradient)
Grads reduceSumSquareGrad(GradContext& c) {
  Value* spread = spreadReduceGrad(c, false);
  Value* x = c.x(0);
  if (x->dtype() != spread->dtype())
    x = c.emit("Cast", {x}, {{"to", std::string(dtypeName(spread->dtype()))}});
  Value* twice = c.emit("Mul", {x, c.scalar(2.0, x->dtype())});
  return {inXType(c, c.emit("Mul", {spread, twice}))};
}

// Y = softmax(X) ⇒ dX = Y·(dY − Σ(dY·Y)) along the axis
Grads softmaxGrad(GradContext& c) {
  // A mask (always a constant: passes/fold_softmax_mask.h) takes no gradient.
  return {c.emit("SoftmaxGrad", {c.dy(), c.y()}, {{"axis", c.node().i("axis")}}), nullptr};
}

// dB of Y = α·A·op(B) with A [..., M, K] and 2-D weights B, whose gradient sums the
// batch: one product over the batch's rows flattened, A as [rows, K] and dY as
// [rows, N] (reshapes, in place where they are their inputs' last readers), rather
// than a [batch, K, N] product rounded per batch and then summed.
Value* sharedWeightGrad(GradContext& c, bool tb, double alpha) {
  const Shape& a = c.x(0)->shape();
  const Shape& dy = c.dy()->shape();
  auto rows = [&](Value* x, int64_t cols) {
    return c.emit("Reshape", {x}, {{"shape", std::vector<int64_t>{-1, cols}}});
  };
  Value* y_rows = rows(c.dy(), dy.back());
  Value* a_rows = rows(c.x(0), a.back());
  AttributeMap attrs = {{"transA", int64_t{1}}, {"transB", int64_t{0}}};
  if (alpha != 1.0) attrs["alpha"] = alpha;
  return tb ? c.emit("MatMul", {y_rows, a_rows}, attrs) : c.emit("MatMul", {a_rows, y_rows}, attrs);
}

// Y = α·op(A)·op(B) (matrices, batched; op transposes per transA/transB) ⇒
//   dA = α·dY·op(B)ᵀ, stored transposed when transA; dB = α·op(A)ᵀ·dY, likewise —
// each one MatMul with the transposes and α as attributes, reduced over broadcast
// batch axes.
Grads matmulGrad(GradContext& c) {
  Value* a = c.x(0);
  Value* b = c.x(1);
  DS_CHECK(a->rank() >= 2 && b->rank() >= 2, "autodiff: ", c.node().describe(),
           ": gradient of 1-D MatMul operands is not supported");
  bool ta = c.node().i("transA") != 0, tb = c.node().i("transB") != 0;
  const double alpha = c.node().f("alpha");
  auto matmul = [&](Value* x, Value* y, bool tx, bool ty) {
    AttributeMap attrs = {{"transA", int64_t{tx}}, {"transB", int64_t{ty}}};
    if (alpha != 1.0) attrs["alpha"] = alpha;
    return c.emit("MatMul", {x, y}, attrs);
  };
  // dA: A·B → dY·Bᵀ; A·Bᵀ → dY·B; Aᵀ·B → B·dYᵀ; Aᵀ·Bᵀ → Bᵀ·dYᵀ.
  Value* da = nullptr;
  if (c.wants(0))
    da = c.reduceToShape(ta ? matmul(b, c.dy(), tb, true) : matmul(c.dy(), b, false, !tb),
                         a->shape());
  // dB: A·B → Aᵀ·dY; A·Bᵀ → dYᵀ·A; Aᵀ·B → A·dY; Aᵀ·Bᵀ → dYᵀ·Aᵀ.
  Value* db = nullptr;
  if (c.wants(1) && b->rank() == 2 && a->rank() > 2 && !ta)
    db = sharedWeightGrad(c, tb, alpha);
  else if (c.wants(1))
    db = c.reduceToShape(tb ? matmul(c.dy(), a, true, ta) : matmul(a, c.dy(), !ta, false),
                         b->shape());
  return {da, db};
}

// Y = α·op(A)·op(B) + β·C ⇒ dA, dB by Gemm with transposes chosen per case, dC = β·Σ dY
Grads gemmGrad(GradContext& c) {
  const Node& n = c.node();
  double alpha = n.f("alpha"), beta = n.f("beta");
  bool ta = n.i("transA") != 0, tb = n.i("transB") != 0;
  auto gemm = [&](Value* p, Value* q, bool tp, bool tq) {
    return c.emit("Gemm", {p, q},
                  {{"alpha", alpha}, {"transA", int64_t{tp}}, {"transB", int64_t{tq}}});
  };
  Value* dy = c.dy();
  Value* da = nullptr;
  Value* db = nullptr;
  if (c.wants(0)) da = ta ? gemm(c.x(1), dy, tb, true) : gemm(dy, c.x(1), false, !tb);
  if (c.wants(1)) db = tb ? gemm(dy, c.x(0), true, ta) : gemm(c.x(0), dy, !ta, false);
  Value* dc = nullptr;
  if (n.hasInput(2) && c.wants(2)) {
    dc = c.reduceToShape(dy, c.x(2)->shape());
    if (beta != 1.0) dc = c.emit("Mul", {dc, c.scalar(beta, dc->dtype())});
  }
  return {da, db, dc};
}

// Y = concat(X₀, X₁, …) ⇒ dXᵢ = the slice of dY that Xᵢ occupies
Grads concatGrad(GradContext& c) {
  std::vector<int64_t> sizes;
  int64_t axis = c.node().i("axis");
  if (axis < 0) axis += c.y()->rank();
  for (Value* v : c.node().inputs()) sizes.push_back(v->shape()[static_cast<size_t>(axis)]);
  return c.emitN("Split", {c.dy()}, {{"axis", axis}, {"split", sizes}}, sizes.size());
}

// Y₀, Y₁, … = split(X) ⇒ dX = concat(dY₀, dY₁, …), zeros for outputs without a gradient
Grads splitGrad(GradContext& c) {
  std::vector<Value*> parts;
  for (size_t i = 0; i < c.node().numOutputs(); ++i) {
    Value* part = c.dy(i);
    if (!part) {
      Value* zero = c.scalar(0, c.y(i)->dtype());
      part = c.emit("Expand", {zero}, {{"shape", c.y(i)->shape()}});
    }
    parts.push_back(part);
  }
  int64_t axis = c.node().i("axis");
  return {c.emit("Concat", parts, {{"axis", axis < 0 ? axis + c.x(0)->rank() : axis}})};
}

// Y, M = dropout(X) ⇒ dX = dY·M / (1 − ratio) in training, dY otherwise
Grads dropoutGrad(GradContext& c) {
  const Node& n = c.node();
  double ratio = n.f("ratio");
  if (n.i("training_mode") == 0 || ratio == 0.0) return {c.dy()};
  DS_CHECK(n.numOutputs() == 2, "autodiff: ", n.describe(),
           ": training-mode Dropout needs its mask output for the gradient");
  Value* mask = c.emit("Cast", {c.y(1)}, {{"to", std::string(dtypeName(c.dy()->dtype()))}});
  Value* kept = c.emit("Mul", {c.dy(), mask});
  return {c.emit("Mul", {kept, c.scalar(1.0 / (1.0 - ratio), c.dy()->dtype())})};
}

// Y = GlobalAveragePool(X) ⇒ dX = expand(dY) / (spatial size)
Grads globalAveragePoolGrad(GradContext& c) {
  const Shape& xs = c.x(0)->shape();
  int64_t spatial = 1;
  for (size_t i = 2; i < xs.size(); ++i) spatial *= xs[i];
  Value* g = c.emit("Div", {c.dy(), c.scalar(static_cast<double>(spatial), c.dy()->dtype())});
  return {c.emit("Expand", {g}, {{"shape", xs}})};
}

}  // namespace

const std::map<std::string, GradRule>& gradRules() {
  static const std::map<std::string, GradRule> rules = [] {
    std::map<std::string, GradRule> all = elementwiseAndTensorRules();
    for (auto& [op, rule] : nnGradRules())
      DS_CHECK(all.emplace(op, std::move(rule)).second, "gradient rule for ", op, " defined twice");
    return all;
  }();
  return rules;
}

std::map<std::string, GradRule> elementwiseAndTensorRules() {
  return {
      {"Add", addGrad},
      {"Sub", subGrad},
      {"Mul", mulGrad},
      {"Div", divGrad},
      {"Neg", negGrad},
      {"Identity", identityGrad},
      {"Relu", reluGrad},
      {"Clip", clipGrad},
      {"LeakyRelu", leakyReluGrad},
      {"Trilu", triluGrad},
      {"Sigmoid", sigmoidGrad},
      {"Tanh", tanhGrad},
      {"Sqrt", sqrtGrad},
      {"Log", logGrad},
      {"Softplus", softplusGrad},
      {"Pow", powGrad},
      {"Where", whereGrad},
      {"Cast", castGrad},
      {"Reshape", reshapeGrad},
      {"Flatten", reshapeGrad},
      {"Squeeze", reshapeGrad},
      {"Unsqueeze", reshapeGrad},
      {"Transpose", transposeGrad},
      {"Expand", expandGrad},
      {"ReduceSum", [](GradContext& c) { return reduceGrad(c, false); }},
      {"ReduceMean", [](GradContext& c) { return reduceGrad(c, true); }},
      {"ReduceSumSquare", reduceSumSquareGrad},
      {"Softmax", softmaxGrad},
      {"MatMul", matmulGrad},
      {"Gemm", gemmGrad},
      {"Concat", concatGrad},
      {"GlobalAveragePool", globalAveragePoolGrad},
      {"Split", splitGrad},
      {"Dropout", dropoutGrad},
  };
}

}  // namespace ds
