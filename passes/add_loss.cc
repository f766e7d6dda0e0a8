#include "passes/add_loss.h"

#include <algorithm>

#include "ir/error.h"

namespace ds {
namespace {

Value* modelOutput(Graph& g, const std::string& name) {
  DS_CHECK(!g.outputs().empty(), "--loss: the model has no outputs");
  if (name.empty()) return g.outputs()[0];
  for (Value* v : g.outputs())
    if (v->name() == name) return v;
  throw makeError("--loss-output: the model has no output named '", name, "'");
}

Value* crossEntropy(Graph& g, Value* logits, const std::string& label_name) {
  DS_CHECK(logits->rank() >= 2 && isFloat(logits->dtype()), "--loss cross_entropy: output '",
           logits->name(), "' must be float logits with a class axis, is ",
           logits->type().toString());
  Shape label_shape(logits->shape().begin(), logits->shape().end() - 1);
  Value* label = g.addSource(label_name, {DType::I64, label_shape}, Role::Label);
  Value* scores = logits;
  Value* labels = label;
  if (logits->rank() > 2) {
    // SoftmaxCrossEntropyLoss wants the class axis at 1. The mean over [N, d1..] is
    // the mean over their product, so the samples are flattened into rows, which
    // moves no data (an in-place reshape), where a transpose to [N, C, d1..] would
    // copy every logit twice (forward and gradient) and leave each sample strided.
    const int64_t classes = logits->shape().back();
    const int64_t samples = logits->type().numel() / std::max<int64_t>(classes, 1);
    scores = g.addNode("Reshape", {logits}, {{"shape", Shape{samples, classes}}}, {"loss/scores"})
                 ->output(0);
    labels = g.addNode("Reshape", {label}, {{"shape", Shape{samples}}}, {"loss/labels"})->output(0);
  }
  return g
      .addNode("SoftmaxCrossEntropyLoss", {scores, labels}, {{"reduction", std::string("mean")}},
               {"loss"}, "loss")
      ->output(0);
}

Value* meanSquaredError(Graph& g, Value* out, const std::string& label_name) {
  Value* label = g.addSource(label_name, out->type(), Role::Label);
  Value* diff = g.addNode("Sub", {out, label}, {}, {"loss/diff"})->output(0);
  Value* sq = g.addNode("Mul", {diff, diff}, {}, {"loss/sq"})->output(0);
  return g.addNode("ReduceMean", {sq}, {{"keepdims", int64_t{0}}}, {"loss"}, "loss")->output(0);
}

}  // namespace

Value* addLoss(Graph& g, const LossOptions& o) {
  Value* out = modelOutput(g, o.output);
  Value* loss = nullptr;
  // The loss the runtime reads is the value named "loss": a model's own value of
  // that name is its loss, for --loss output.
  DS_CHECK(o.kind == "output" || !g.findValue("loss"), "--loss ", o.kind,
           ": the model already has a value named 'loss' (its own loss? train it with --loss "
           "output --loss-output loss)");
  if (o.kind == "cross_entropy") {
    loss = crossEntropy(g, out, o.label);
  } else if (o.kind == "mse") {
    loss = meanSquaredError(g, out, o.label);
  } else if (o.kind == "output") {
    DS_CHECK(out->type().numel() == 1 && isFloat(out->dtype()), "--loss-output: '", out->name(),
             "' must be a float scalar, is ", out->type().toString());
    loss = out;
  } else {
    throw makeError("--loss: '", o.kind, "' is not one of cross_entropy, mse, output");
  }
  std::vector<Value*> outputs = g.outputs();
  g.clearOutputs();
  g.addOutput(loss);
  for (Value* v : outputs)
    if (v != loss) g.addOutput(v);
  return loss;
}

}  // namespace ds
