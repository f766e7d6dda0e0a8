// ONNX import: models written inline in ONNX's text syntax, batch binding,
// opset-dependent forms, folding, and one clear error for each kind of bad input.
#include <gtest/gtest.h>

#include <limits>

#include "frontend/onnx_import.h"
#include "ir/error.h"
#include "ir/verifier.h"
#include "tests/test_util.h"

namespace ds {
namespace {

using test::contains;

ImportOptions batched(int64_t micro_batch) {
  ImportOptions o;
  o.batch = micro_batch;
  return o;
}

// Imports `text`, expecting failure; returns the error message.
std::string importError(const std::string& path, const ImportOptions& options = {}) {
  try {
    importOnnxFile(path, options);
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "import of " << path << " succeeded";
  return "";
}

// Importing the model in ONNX text `text` (written to `file`) fails with an error
// that contains `want`.
void expectImportError(const char* text, const std::string& file, const std::string& want) {
  const std::string msg = importError(test::writeModel(test::parseOnnxText(text), file));
  EXPECT_TRUE(contains(msg, want)) << msg;
}

const char* kDynamicMlp = R"(
<ir_version: 8, opset_import: ["" : 17]>
mlp (float[batch, 4] input) => (float[batch, 2] logits)
<float[4, 2] w = {1, 2, 3, 4, 5, 6, 7, 8}, float[2] b = {0.5, -0.5}>
{
  h = MatMul(input, w)
  logits = Add(h, b)
}
)";

TEST(OnnxImport, BindsSymbolicBatchAndClassifiesSources) {
  auto path = test::writeModel(test::parseOnnxText(kDynamicMlp), "mlp.onnx");
  auto g = importOnnxFile(path, batched(16));
  verifyGraph(*g);
  EXPECT_EQ(g->value("input")->shape(), (Shape{16, 4}));
  EXPECT_EQ(g->value("logits")->shape(), (Shape{16, 2}));
  EXPECT_EQ(g->value("w")->role(), Role::Parameter);
  EXPECT_EQ(g->value("w")->data().toDoubles(), (std::vector<double>{1, 2, 3, 4, 5, 6, 7, 8}));
}

TEST(OnnxImport, SymbolicBatchWithoutMicroBatchIsAnError) {
  auto path = test::writeModel(test::parseOnnxText(kDynamicMlp), "mlp_nobatch.onnx");
  std::string msg = importError(path);
  EXPECT_TRUE(contains(msg, "graph input 'input' has a symbolic batch dimension 'batch'")) << msg;
  EXPECT_TRUE(contains(msg, "--batch")) << msg;
}

TEST(OnnxImport, StaticBatchDisagreeingWithMicroBatchNamesBothNumbers) {
  auto model = test::parseOnnxText(R"(
<ir_version: 8, opset_import: ["" : 17]>
g (float[8, 4] input) => (float[8, 4] y) { y = Relu(input) }
)");
  std::string msg = importError(test::writeModel(model, "static.onnx"), batched(32));
  EXPECT_TRUE(
      contains(msg, "graph input 'input' has a static batch of 8 but the micro-batch is 32"))
      << msg;
}

TEST(OnnxImport, FoldsTorchStyleShapeArithmetic) {
  // x.view(x.size(0), -1) as torch.onnx.export writes it with a dynamic batch axis.
  auto model = test::parseOnnxText(R"(
<ir_version: 8, opset_import: ["" : 15]>
g (float[batch, 2, 3] x) => (float[batch, 6] y)
{
  s = Shape(x)
  zero = Constant<value = int64 {0}>()
  n = Gather<axis = 0>(s, zero)
  n1 = Unsqueeze(n, axes)
  minus = Constant<value = int64[1] {-1}>()
  shape = Concat<axis = 0>(n1, minus)
  y = Reshape(x, shape)
}
)");
  // Unsqueeze's axes come from an initializer in opset 13+.
  auto* axes = model.mutable_graph()->add_initializer();
  axes->set_name("axes");
  axes->set_data_type(onnx::TensorProto::INT64);
  axes->add_dims(1);
  axes->add_int64_data(0);
  auto g = importOnnxFile(test::writeModel(model, "fold.onnx"), batched(5));
  EXPECT_EQ(g->numNodes(), 1u);
  const Node& reshape = *g->nodes().front();
  EXPECT_EQ(reshape.op(), "Reshape");
  EXPECT_EQ(reshape.ints("shape"), (std::vector<int64_t>{5, -1}));
  EXPECT_EQ(g->value("y")->shape(), (Shape{5, 6}));
}

TEST(OnnxImport, CanonicalisesOpsetDependentForms) {
  // Opset 11: Unsqueeze axes and Split sizes are attributes; Softmax coerces to 2-D.
  auto old_model = test::parseOnnxText(R"(
<ir_version: 6, opset_import: ["" : 11]>
g (float[2, 3, 4] x) => (float[2, 1, 3, 4] u, float[2, 1, 4] a, float[2, 2, 4] b, float[2, 3, 4] s)
{
  u = Unsqueeze<axes = [1]>(x)
  a, b = Split<axis = 1, split = [1, 2]>(x)
  s = Softmax<axis = 1>(x)
}
)");
  auto g = importOnnxFile(test::writeModel(old_model, "opset11.onnx"));
  verifyGraph(*g);
  EXPECT_EQ(g->value("u")->producer()->ints("axes"), (std::vector<int64_t>{1}));
  EXPECT_EQ(g->value("b")->shape(), (Shape{2, 2, 4}));
  // Softmax over axis 1 of a rank-3 input at opset 11 = softmax of the flattened [2, 12].
  const Node* s = g->value("s")->producer();
  EXPECT_EQ(s->op(), "Reshape");
  EXPECT_EQ(s->input(0)->producer()->op(), "Softmax");
  EXPECT_EQ(s->input(0)->shape(), (Shape{2, 12}));
}

TEST(OnnxImport, TrainingBatchNormKeepsRunningStatisticsAsBuffers) {
  auto model = test::parseOnnxText(R"(
<ir_version: 8, opset_import: ["" : 15]>
g (float[batch, 2, 3, 3] x) => (float[batch, 2, 3, 3] y)
<float[2] s = {1, 1}, float[2] b = {0, 0}, float[2] m = {0, 0}, float[2] v = {1, 1}>
{
  y, rm, rv = BatchNormalization<training_mode = 1, momentum = 0.9>(x, s, b, m, v)
}
)");
  auto g = importOnnxFile(test::writeModel(model, "bn.onnx"), batched(4));
  const Node* bn = g->value("y")->producer();
  EXPECT_EQ(bn->i("training_mode"), 1);
  EXPECT_EQ(bn->numOutputs(), 3u);
  EXPECT_EQ(g->value("s")->role(), Role::Parameter);
  EXPECT_EQ(g->value("m")->role(), Role::Buffer);
  EXPECT_EQ(g->value("v")->role(), Role::Buffer);
}

// Clip's bounds are inputs (opset 11 on; torch.onnx exports ReLU6 with constant
// ones) that become attributes; an absent bound leaves that side open. A bound
// computed at run time is one line naming it.
TEST(OnnxImport, ClipBoundsBecomeAttributes) {
  auto model = test::parseOnnxText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[2, 3] x) => (float[2, 3] y, float[2, 3] z, float[2, 3] scaled)
<float lo = {0}, float hi = {6}>
{
  y = Clip(x, lo, hi)
  z = Clip(x, , hi)
  scaled = Mul(x, hi)
}
)");
  auto g = importOnnxFile(test::writeModel(model, "clip13.onnx"));
  verifyGraph(*g);
  const Node* y = g->value("y")->producer();
  EXPECT_EQ(y->op(), "Clip");
  EXPECT_EQ(y->numInputs(), 1u);
  // Read as a bound, a float initializer is a constant of the model, for its other
  // readers too: nothing trains a value a bound has fixed.
  EXPECT_EQ(g->value("hi")->role(), Role::Constant);
  EXPECT_TRUE(g->sourcesWithRole(Role::Parameter).empty());
  EXPECT_EQ(y->f("min"), 0.0);
  EXPECT_EQ(y->f("max"), 6.0);
  EXPECT_EQ(g->value("z")->producer()->f("min"), -std::numeric_limits<double>::infinity());
  expectImportError(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[2, 3] x, float bound) => (float[2, 3] y)
{
  y = Clip(x, bound)
}
)",
                    "clip_dynamic.onnx", "input 'min' ('bound') must be a compile-time constant");
}

// Pad: constant pads and value become attributes over every axis (opset 18's axes
// input too); all-zero pads, as torch.onnx writes before an AveragePool, are an
// Identity; modes other than constant are one line naming the node.
TEST(OnnxImport, PadBecomesConstantPadOverEveryAxis) {
  auto model = test::parseOnnxText(R"(
<ir_version: 8, opset_import: ["" : 18]>
g (float[2, 3, 4] x) => (float[2, 5, 4] y, float[2, 3, 4] z)
<int64[2] p = {1, 1}, int64[1] a = {-2}, float v = {2.5}, int64[6] zero = {0, 0, 0, 0, 0, 0}>
{
  y = Pad(x, p, v, a)
  z = Pad(x, zero)
}
)");
  auto g = importOnnxFile(test::writeModel(model, "pad18.onnx"));
  verifyGraph(*g);
  const Node* y = g->value("y")->producer();
  EXPECT_EQ(y->op(), "Pad");
  EXPECT_EQ(y->ints("pads"), (std::vector<int64_t>{0, 1, 0, 0, 1, 0}));
  EXPECT_EQ(y->f("value"), 2.5);
  EXPECT_EQ(g->value("z")->producer()->op(), "Identity");
  expectImportError(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[2, 3] x) => (float[2, 5] y)
<int64[4] p = {0, 1, 0, 1}>
{
  y = Pad<mode = "reflect">(x, p)
}
)",
                    "pad_reflect.onnx",
                    "(Pad, opset 13): mode 'reflect' is not supported (constant only)");
  expectImportError(R"(
<ir_version: 8, opset_import: ["" : 18]>
g (float[2, 3] x) => (float[2, 7] y)
<int64[4] p = {1, 1, 1, 1}, int64[2] a = {1, -1}>
{
  y = Pad(x, p, , a)
}
)",
                    "pad_twice.onnx", "axis 1 is given twice");
  expectImportError(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[2, 3] x) => (float[2, 2] y)
<int64[4] p = {0, -1, 0, 0}>
{
  y = Pad(x, p)
}
)",
                    "pad_crop.onnx", "negative pads (cropping) are not supported");
}

// MobileNetV3's activations: HardSigmoid is Mul, Add, Clip; HardSwish x times that.
TEST(OnnxImport, HardSigmoidAndHardSwishDecompose) {
  auto model = test::parseOnnxText(R"(
<ir_version: 8, opset_import: ["" : 14]>
g (float[2, 3] x) => (float[2, 3] s, float[2, 3] w)
{
  s = HardSigmoid<alpha = 0.25, beta = 0.4>(x)
  w = HardSwish(x)
}
)");
  auto g = importOnnxFile(test::writeModel(model, "hard.onnx"));
  verifyGraph(*g);
  const Node* s = g->value("s")->producer();
  EXPECT_EQ(s->op(), "Clip");
  EXPECT_EQ(s->f("max"), 1.0);
  const Node* add = s->input(0)->producer();
  EXPECT_EQ(add->op(), "Add");
  EXPECT_FLOAT_EQ(add->input(1)->data().getDouble(0), 0.4f);
  EXPECT_FLOAT_EQ(add->input(0)->producer()->input(1)->data().getDouble(0), 0.25f);
  const Node* w = g->value("w")->producer();
  EXPECT_EQ(w->op(), "Mul");
  EXPECT_EQ(w->input(0), g->value("x"));
  EXPECT_EQ(w->input(1)->producer()->op(), "Clip");
}

// ---- malformed input: one clear line naming the culprit ----

TEST(OnnxImportErrors, NotAnOnnxFile) {
  std::string path = test::tempPath("not_onnx.onnx");
  test::writeFile(path, "this is plainly not a protobuf \xff\xff\xff\xff");
  std::string msg = importError(path);
  EXPECT_TRUE(contains(msg, path + ": not an ONNX model")) << msg;
}

TEST(OnnxImportErrors, TruncatedFile) {
  auto model = test::parseOnnxText(kDynamicMlp);
  std::string bytes = model.SerializeAsString();
  std::string path = test::tempPath("truncated.onnx");
  test::writeFile(path, bytes.substr(0, bytes.size() / 2));
  std::string msg = importError(path, batched(2));
  EXPECT_TRUE(contains(msg, path + ": not an ONNX model")) << msg;
}

TEST(OnnxImportErrors, MissingFile) {
  std::string msg = importError("/nonexistent/model.onnx");
  EXPECT_TRUE(contains(msg, "/nonexistent/model.onnx: cannot open file")) << msg;
}

TEST(OnnxImportErrors, UnsupportedOpNamesNodeOpAndOpset) {
  auto model = test::parseOnnxText(R"(
<ir_version: 8, opset_import: ["" : 17]>
g (float[2, 3] x) => (float[2, 3] y) { y = Selu(x) }
)");
  model.mutable_graph()->mutable_node(0)->set_name("act3");
  std::string msg = importError(test::writeModel(model, "unsupported.onnx"));
  EXPECT_TRUE(contains(msg, "node 'act3' (op Selu, opset 17) is not supported")) << msg;
  EXPECT_TRUE(contains(msg, "supported ops: Add, AveragePool, BatchNormalization")) << msg;
}

TEST(OnnxImportErrors, UnsupportedOpset) {
  auto model = test::parseOnnxText(R"(
<ir_version: 3, opset_import: ["" : 7]>
g (float[2, 3] x) => (float[2, 3] y) { y = Relu(x) }
)");
  std::string msg = importError(test::writeModel(model, "opset7.onnx"));
  EXPECT_TRUE(contains(msg, "opset 7 is not supported (supported: 11 to 21)")) << msg;
}

TEST(OnnxImportErrors, ShapeThatCannotBeInferredNamesNodeAndInputShapes) {
  auto model = test::parseOnnxText(R"(
<ir_version: 8, opset_import: ["" : 17]>
g (float[2, 3] x, float[4, 5] w) => (float[2, 5] y) { y = MatMul(x, w) }
)");
  model.mutable_graph()->mutable_node(0)->set_name("proj");
  std::string msg = importError(test::writeModel(model, "badshape.onnx"));
  EXPECT_TRUE(contains(msg, "node 'proj' (MatMul)")) << msg;
  EXPECT_TRUE(contains(msg, "f32[2,3], f32[4,5]")) << msg;
}

TEST(OnnxImportErrors, RuntimeReshapeShapeIsNamed) {
  auto model = test::parseOnnxText(R"(
<ir_version: 8, opset_import: ["" : 17]>
g (float[2, 3] x, int64[2] shape) => (float[3, 2] y) { y = Reshape(x, shape) }
)");
  std::string msg = importError(test::writeModel(model, "dynreshape.onnx"));
  EXPECT_TRUE(contains(msg, "input 'shape' ('shape') must be a compile-time constant")) << msg;
}

TEST(OnnxImportErrors, MissingExternalDataFile) {
  auto model = test::parseOnnxText(R"(
<ir_version: 8, opset_import: ["" : 17]>
g (float[2, 4] x) => (float[2, 4] y) { y = Add(x, w) }
)");
  auto* w = model.mutable_graph()->add_initializer();
  w->set_name("w");
  w->set_data_type(onnx::TensorProto::FLOAT);
  w->add_dims(4);
  w->set_data_location(onnx::TensorProto::EXTERNAL);
  auto* loc = w->add_external_data();
  loc->set_key("location");
  loc->set_value("weights_that_are_not_there.bin");
  std::string msg = importError(test::writeModel(model, "extdata.onnx"));
  EXPECT_TRUE(contains(msg, "tensor 'w': external data file")) << msg;
  EXPECT_TRUE(contains(msg, "weights_that_are_not_there.bin' not found")) << msg;
}

TEST(OnnxImport, ReadsExternalData) {
  auto model = test::parseOnnxText(R"(
<ir_version: 8, opset_import: ["" : 17]>
g (float[2, 2] x) => (float[2, 2] y) { y = Add(x, w) }
)");
  std::vector<float> values = {1.5f, -2.0f};
  std::string blob(16, '\0');
  std::memcpy(blob.data() + 8, values.data(), 8);
  test::writeFile(test::tempPath("ext.bin"), blob);
  auto* w = model.mutable_graph()->add_initializer();
  w->set_name("w");
  w->set_data_type(onnx::TensorProto::FLOAT);
  w->add_dims(2);
  w->set_data_location(onnx::TensorProto::EXTERNAL);
  for (auto [k, v] : {std::pair{"location", "ext.bin"}, {"offset", "8"}, {"length", "8"}}) {
    auto* e = w->add_external_data();
    e->set_key(k);
    e->set_value(v);
  }
  auto g = importOnnxFile(test::writeModel(model, "ext.onnx"));
  EXPECT_EQ(g->value("w")->data().toDoubles(), (std::vector<double>{1.5, -2.0}));
}

}  // namespace
}  // namespace ds
