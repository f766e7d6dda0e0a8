// Gradient rules of ops that need dedicated backward ops (convolution, pooling,
// normalisation, the loss, gathers, slices) and of the transcendental ops whose
// gradients need Exp (Erf, Gelu, LogSoftmax, Exp itself). Each rule's math is in
// its one-line comment; backward ops take the forward node's attributes unchanged.
#include <cmath>
#include <numbers>

#include "ir/error.h"
#include "passes/grad_rules.h"

namespace ds {
namespace {

using Grads = std::vector<Value*>;

AttributeMap withAttr(const Node& n, const std::string& name, Attribute value) {
  AttributeMap a = n.attrs();
  a[name] = std::move(value);
  return a;
}

// Axes 0 and 2.. of a [N, C, ...] tensor: every axis but the channel one.
std::vector<int64_t> allButChannel(int64_t rank) {
  std::vector<int64_t> axes = {0};
  for (int64_t a = 2; a < rank; ++a) axes.push_back(a);
  return axes;
}

// Fails when an output other than 0 (running statistics, saved mean) carries a gradient.
void requireOnlyFirstOutputGrad(GradContext& c) {
  for (size_t i = 1; i < c.node().numOutputs(); ++i)
    DS_CHECK(!c.dy(i), "autodiff: ", c.node().describe(), ": gradient through output ", i,
             " is not supported");
}

// Y = conv(X, W) + B ⇒ dX = ConvGradInput(dY, W), dW = ConvGradWeight(dY, X), dB = Σ dY over N,
// spatial
Grads convGrad(GradContext& c) {
  const Node& n = c.node();
  Value* dx = c.wants(0) ? c.emit("ConvGradInput", {c.dy(), c.x(1)},
                                  withAttr(n, "input_shape", c.x(0)->shape()))
                         : nullptr;
  Value* dw = c.wants(1) ? c.emit("ConvGradWeight", {c.dy(), c.x(0)},
                                  withAttr(n, "weight_shape", c.x(1)->shape()))
                         : nullptr;
  Value* db = nullptr;
  if (n.hasInput(2) && c.wants(2))
    db = c.emit("ReduceSum", {c.dy()},
                {{"axes", allButChannel(c.dy()->rank())}, {"keepdims", int64_t{0}}});
  return {dx, dw, db};
}

// Y = maxpool(X) ⇒ dX = dY routed to the first maximum of each window
Grads maxPoolGrad(GradContext& c) {
  requireOnlyFirstOutputGrad(c);
  return {c.emit("MaxPoolGrad", {c.dy(), c.x(0)}, c.node().attrs())};
}

// Y = avgpool(X) ⇒ dX = dY / count spread over each window's taps
Grads averagePoolGrad(GradContext& c) {
  return {c.emit("AveragePoolGrad", {c.dy()}, withAttr(c.node(), "input_shape", c.x(0)->shape()))};
}

// Inference form, per channel: Y = (X − m)·s/σ + b, σ = √(v + ε), x̂ = (X − m)/σ ⇒
// dX = dY·s/σ, ds = Σ dY·x̂, db = Σ dY, dm = −db·s/σ, dv = −ds·s/(2σ²)
Grads batchNormInferenceGrad(GradContext& c) {
  const Node& n = c.node();
  DType t = c.x(0)->dtype();
  int64_t rank = c.x(0)->rank();
  Shape bshape(static_cast<size_t>(rank - 1), 1);
  bshape[0] = c.x(0)->shape()[1];
  auto channel = [&](Value* v) { return c.emit("Reshape", {v}, {{"shape", bshape}}); };
  auto sum = [&](Value* v) {
    return c.emit("ReduceSum", {v}, {{"axes", allButChannel(rank)}, {"keepdims", int64_t{0}}});
  };
  Value* var_eps = c.emit("Add", {c.x(4), c.scalar(n.f("epsilon"), t)});
  Value* sigma = c.emit("Sqrt", {var_eps});
  Value* gain = c.emit("Div", {c.x(1), sigma});  // s/σ
  Value* dx = c.wants(0) ? c.emit("Mul", {c.dy(), channel(gain)}) : nullptr;
  Value* ds = nullptr;
  if (c.wants(1) || c.wants(4)) {
    Value* centred = c.emit("Sub", {c.x(0), channel(c.x(3))});
    Value* xhat = c.emit("Div", {centred, channel(sigma)});
    ds = sum(c.emit("Mul", {c.dy(), xhat}));
  }
  Value* db = c.wants(2) || c.wants(3) ? sum(c.dy()) : nullptr;
  Value* dm = c.wants(3) ? c.emit("Neg", {c.emit("Mul", {db, gain})}) : nullptr;
  Value* dv = nullptr;
  if (c.wants(4)) {
    Value* half_gain = c.emit("Div", {c.x(1), c.emit("Mul", {var_eps, c.scalar(2, t)})});
    dv = c.emit("Neg", {c.emit("Mul", {ds, half_gain})});
  }
  return {dx, c.wants(1) ? ds : nullptr, c.wants(2) ? db : nullptr, dm, dv};
}

// Training mode: BatchNormalizationGrad recomputes the batch statistics from X;
// the running statistics (inputs 3, 4) do not affect Y.
Grads batchNormGrad(GradContext& c) {
  requireOnlyFirstOutputGrad(c);
  if (c.node().i("training_mode") == 0) return batchNormInferenceGrad(c);
  std::vector<Value*> g = c.emitN("BatchNormalizationGrad", {c.dy(), c.x(0), c.x(1)},
                                  {{"epsilon", c.node().f("epsilon")}}, 3);
  return {g[0], g[1], g[2], nullptr, nullptr};
}

// Y = x̂·S + B over dims [axis, rank) ⇒ LayerNormalizationGrad gives dX and dS, dB in
// the normalised shape; dS, dB are then reduced to the parameters' shapes
Grads layerNormGrad(GradContext& c) {
  requireOnlyFirstOutputGrad(c);
  const Node& n = c.node();
  std::vector<Value*> g = c.emitN("LayerNormalizationGrad", {c.dy(), c.x(0), c.x(1)},
                                  {{"axis", n.i("axis")}, {"epsilon", n.f("epsilon")}}, 3);
  Value* ds = c.wants(1) ? c.reduceToShape(g[1], c.x(1)->shape()) : nullptr;
  Value* db = n.hasInput(2) && c.wants(2) ? c.reduceToShape(g[2], c.x(2)->shape()) : nullptr;
  return {g[0], ds, db};
}

// Y = log softmax(X) ⇒ dX = dY − exp(Y)·Σ_axis dY
Value* logSoftmaxBackward(GradContext& c, Value* dy, Value* y, int64_t axis) {
  Value* total =
      c.emit("ReduceSum", {dy}, {{"axes", std::vector<int64_t>{axis}}, {"keepdims", int64_t{1}}});
  return c.emit("Sub", {dy, c.emit("Mul", {c.emit("Exp", {y}), total})});
}

Grads logSoftmaxGrad(GradContext& c) {
  return {logSoftmaxBackward(c, c.dy(), c.y(), c.node().i("axis"))};
}

// L = −w[t]·log softmax(X)[t] (reduced) ⇒ dX = SoftmaxCrossEntropyLossGrad(dL, X, t, w);
// the optional log-prob output adds its LogSoftmax gradient over the class axis
Grads crossEntropyGrad(GradContext& c) {
  const Node& n = c.node();
  DS_CHECK(!c.wants(2), "autodiff: ", n.describe(), ": gradient of the class weights");
  Value* dx = nullptr;
  if (c.dy(0)) {
    std::vector<Value*> ins = {c.dy(0), c.x(0), c.x(1)};
    if (n.hasInput(2)) ins.push_back(c.x(2));
    dx = c.emit("SoftmaxCrossEntropyLossGrad", ins, n.attrs());
  }
  if (n.numOutputs() > 1 && c.dy(1)) {
    Value* d = logSoftmaxBackward(c, c.dy(1), c.y(1), 1);
    dx = dx ? c.emit("Add", {dx, d}) : d;
  }
  return {dx, nullptr, nullptr};
}

// Y = exp(X) ⇒ dX = dY·Y
Grads expGrad(GradContext& c) {
  return {c.emit("Mul", {c.dy(), c.y()})};
}

// Y = erf(X) ⇒ dX = dY·2/√π·exp(−X²)
Grads erfGrad(GradContext& c) {
  DType t = c.x(0)->dtype();
  Value* e = c.emit("Exp", {c.emit("Neg", {c.emit("Mul", {c.x(0), c.x(0)})})});
  Value* slope = c.emit("Mul", {e, c.scalar(2.0 * std::numbers::inv_sqrtpi, t)});
  return {c.emit("Mul", {c.dy(), slope})};
}

// Y = Gelu(X) ⇒ dX = dY·Gelu'(X), one GeluGrad step (its kernels hold the slope:
// kernels/cpu/grad_misc.cc, kernels/cuda/elementwise.cu).
Grads geluGrad(GradContext& c) {
  return {c.emit("GeluGrad", {c.dy(), c.x(0)}, {{"approximate", c.node().s("approximate")}})};
}

// Y, L = FusedAttention(Q, K, V) ⇒ dQ, dK, dV from one FusedAttentionGrad step,
// which recomputes the probabilities from Y and the statistics L (no gradient: L
// is not differentiated through). A packed QKV gets its packed gradient dQKV.
Grads fusedAttentionGrad(GradContext& c) {
  requireOnlyFirstOutputGrad(c);
  const Node& n = c.node();
  std::vector<Value*> inputs = {c.dy()};
  for (size_t i = 0; i < n.numInputs(); ++i) inputs.push_back(c.x(i));
  inputs.push_back(c.y(0));
  inputs.push_back(c.y(1));
  return c.emitN("FusedAttentionGrad", inputs, {{"scale", n.f("scale")}, {"causal", n.i("causal")}},
                 n.numInputs());
}

// Y = gather(D, I, axis) ⇒ dD = zeros(D) with dY scatter-added at I along axis
Grads gatherGrad(GradContext& c) {
  return {c.emit("GatherGrad", {c.dy(), c.x(1)},
                 {{"axis", c.node().i("axis")}, {"data_shape", c.x(0)->shape()}}),
          nullptr};
}

// Y = X[slice] ⇒ dX = zeros(X) with dY written at the sliced positions
Grads sliceGrad(GradContext& c) {
  return {c.emit("SliceGrad", {c.dy()}, withAttr(c.node(), "input_shape", c.x(0)->shape()))};
}

// Y = Pad(X) ⇒ dX = dY without the padding: the Slice of X's place in Y
Grads padGrad(GradContext& c) {
  const std::vector<int64_t>& pads = c.node().ints("pads");
  const Shape& x = c.x(0)->shape();
  const auto rank = static_cast<int64_t>(x.size());
  std::vector<int64_t> starts(pads.begin(), pads.begin() + rank), ends, axes;
  for (int64_t d = 0; d < rank; ++d) {
    ends.push_back(starts[d] + x[d]);
    axes.push_back(d);
  }
  return {c.emit("Slice", {c.dy()}, {{"starts", starts}, {"ends", ends}, {"axes", axes}})};
}

}  // namespace

std::map<std::string, GradRule> nnGradRules() {
  return {
      {"Conv", convGrad},
      {"MaxPool", maxPoolGrad},
      {"AveragePool", averagePoolGrad},
      {"BatchNormalization", batchNormGrad},
      {"LayerNormalization", layerNormGrad},
      {"LogSoftmax", logSoftmaxGrad},
      {"SoftmaxCrossEntropyLoss", crossEntropyGrad},
      {"Exp", expGrad},
      {"Erf", erfGrad},
      {"Gelu", geluGrad},
      {"FusedAttention", fusedAttentionGrad},
      {"Gather", gatherGrad},
      {"Slice", sliceGrad},
      {"Pad", padGrad},
  };
}

}  // namespace ds
