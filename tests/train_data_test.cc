// Training data: --data synthetic (seeded, labels in range, sample k independent
// of how batches split the stream) and bad data inputs — a missing file, samples
// of the wrong shape, labels outside the loss's classes — each a one-line error
// naming the feed (and the sample), exit code 2.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "ir/error.h"
#include "ir/plan.h"
#include "runtime/npy.h"
#include "runtime/synthetic_data.h"
#include "tests/training_fixtures.h"

namespace ds {
namespace {

namespace fs = std::filesystem;
using test::contains;

using test::expectOneLineError;
using test::tool;

// x[batch,8] -> Gemm -> logits[batch,4]; trained with cross-entropy (4 classes).
const std::string& mlpPlan() {
  static const std::string plan = [] {
    std::string w;
    for (int i = 0; i < 32; ++i) w += (i ? ", " : "") + std::to_string(0.1 * std::sin(i));
    std::string model = test::writeModel(test::parseOnnxText(R"(
<ir_version: 8, opset_import: ["" : 17]>
mlp (float[batch, 8] x) => (float[batch, 4] logits)
<float[8, 4] w = {)" + w + R"(}, float[4] b = {0, 0, 0, 0}>
{
  h = MatMul(x, w)
  logits = Add(h, b)
}
)"),
                                         test::scratchName("data_mlp.onnx"));
    std::string out = test::scratch("data_mlp.plan");
    auto r = tool("dscompile", model + " --batch 4 --loss cross_entropy -o " + out);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return out;
  }();
  return plan;
}

TEST(SyntheticData, SeededSamplesOfThePlanShapesWithLabelsInRange) {
  PlanFile plan = readPlanFile(mlpPlan());
  SyntheticData data(plan, 11);
  Tensor x = data.batch("x", 0, 1000), labels = data.batch("label", 0, 1000);
  ASSERT_EQ(x.type().toString(), "f32[1000,8]");
  ASSERT_EQ(labels.type().toString(), "i64[1000]");
  double sum = 0, sq = 0;
  for (double v : x.toDoubles()) sum += v, sq += v * v;
  EXPECT_NEAR(sum / 8000, 0.0, 0.05);
  EXPECT_NEAR(sq / 8000, 1.0, 0.05);  // standard normal
  std::vector<int> counts(4, 0);
  for (int64_t v : labels.toInts()) {
    ASSERT_TRUE(v >= 0 && v < 4) << v;
    ++counts[static_cast<size_t>(v)];
  }
  for (int c : counts) EXPECT_GT(c, 200);  // every class, about uniformly
  // Sample k is the same whatever batch it is read in, and for the same seed only.
  Tensor part = data.batch("x", 3, 2);
  std::vector<double> xs = x.toDoubles();
  EXPECT_EQ(std::vector<double>(xs.begin() + 24, xs.begin() + 40), part.toDoubles());
  EXPECT_EQ(SyntheticData(plan, 11).batch("x", 3, 2), part);
  EXPECT_NE(SyntheticData(plan, 12).batch("x", 3, 2), part);
}

TEST(SyntheticData, DsrunTrainsOnIt) {
  std::string metrics = test::scratch("synthetic.jsonl");
  auto r = tool("dsrun", mlpPlan() + " --data synthetic --steps 3 --metrics " + metrics);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "dsrun: trained 3 steps")) << r.output;
}

// Per-token labels: the loss reads them flattened to rows (a Reshape), as it reads a
// sequence model's [N, T, C] logits; their range is still the loss's classes.
TEST(SyntheticData, PerTokenLabelsTakeTheirRangeThroughTheLossReshape) {
  std::string model = test::writeModel(test::parseOnnxText(R"(
<ir_version: 8, opset_import: ["" : 17]>
seq (float[batch, 3, 4] x) => (float[batch, 3, 5] logits)
<float[4, 5] w = {1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0}>
{
  logits = MatMul(x, w)
}
)"),
                                       test::scratchName("data_seq.onnx"));
  std::string plan = test::scratch("data_seq.plan");
  auto r = tool("dscompile", model + " --batch 2 --loss cross_entropy -o " + plan);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  SyntheticData data(readPlanFile(plan), 5);
  Tensor labels = data.batch("label", 0, 400);
  ASSERT_EQ(labels.type().toString(), "i64[400,3]");
  std::vector<int> counts(5, 0);
  for (int64_t v : labels.toInts()) {
    ASSERT_TRUE(v >= 0 && v < 5) << v;
    ++counts[static_cast<size_t>(v)];
  }
  for (int c : counts) EXPECT_GT(c, 150);
  r = tool("dsrun", plan + " --data synthetic --steps 2");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  // And a fed label outside the classes is the same one-line error as for rows.
  std::string x = test::scratch("seq_x.npy"), label = test::scratch("seq_label.npy");
  writeNpy(x, Tensor(TensorType{DType::F32, {2, 3, 4}}));
  writeNpy(label, Tensor::fromInts(DType::I64, {2, 3}, {0, 1, 2, 3, 7, 4}));
  expectOneLineError(tool("dsrun", plan + " --feed x=" + x + " --feed label=" + label),
                     "sample 1 has value 7, outside [0, 5)");
}

TEST(SyntheticData, IntegerInputsOfUnknownRangeAreAnError) {
  std::string model = test::writeModel(test::parseOnnxText(R"(
<ir_version: 8, opset_import: ["" : 17]>
m (float[batch, 4] x, int64[batch, 4] k) => (float[batch, 4] logits)
<float[4, 4] w = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1}>
{
  kf = Cast<to = 1>(k)
  s = Add(x, kf)
  logits = MatMul(s, w)
}
)"),
                                       test::scratchName("data_int_input.onnx"));
  std::string plan = test::scratch("data_int_input.plan");
  ASSERT_EQ(tool("dscompile", model + " --batch 2 --loss cross_entropy -o " + plan).exit_code, 0);
  expectOneLineError(tool("dsrun", plan + " --data synthetic --steps 1"),
                     "--data synthetic: input 'k' (i64[2,4]) is not read by a loss or a Gather");
}

TEST(BadData, MissingFileWrongShapeAndLabelsOutOfRangeAreOneLineErrors) {
  std::string x = test::scratch("bad_x.npy"), label = test::scratch("bad_label.npy");
  writeNpy(x, Tensor(TensorType{DType::F32, {12, 8}}));
  writeNpy(label, Tensor::fromInts(DType::I64, {12}, {0, 1, 2, 3, 0, 9, 1, 2, 3, 0, 1, 2}));
  expectOneLineError(tool("dsrun", mlpPlan() + " --feed x=" + test::scratch("nope.npy") +
                                       " --feed label=" + label),
                     "--feed x: " + test::scratch("nope.npy") + ": cannot open file");
  std::string narrow = test::scratch("bad_x7.npy");
  writeNpy(narrow, Tensor(TensorType{DType::F32, {12, 7}}));
  expectOneLineError(tool("dsrun", mlpPlan() + " --feed x=" + narrow + " --feed label=" + label),
                     "--feed x: samples must be f32 of shape [8], got f32[12,7]");
  expectOneLineError(tool("dsrun", mlpPlan() + " --feed x=" + x + " --feed label=" + label),
                     "--feed label: sample 5 has value 9, outside [0, 4)");
  // ignore_index is not set by --loss cross_entropy, so -1 is out of range too.
  writeNpy(label, Tensor::fromInts(DType::I64, {12}, {0, 1, 2, 3, 0, 1, 1, 2, 3, 0, 1, -1}));
  expectOneLineError(tool("dsrun", mlpPlan() + " --feed x=" + x + " --feed label=" + label),
                     "--feed label: sample 11 has value -1");
}

// A model's own loss may ignore a label value; that value is accepted, others are not.
TEST(BadData, LabelsEqualToTheLossIgnoreIndexAreAccepted) {
  std::string model = test::writeModel(test::parseOnnxText(R"(
<ir_version: 8, opset_import: ["" : 17]>
m (float[batch, 4] x, int64[batch] y) => (float loss)
<float[4, 3] w = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2}>
{
  logits = MatMul(x, w)
  loss = SoftmaxCrossEntropyLoss<ignore_index = -100, reduction = "mean">(logits, y)
}
)"),
                                       test::scratchName("ignore_index.onnx"));
  std::string plan = test::scratch("ignore_index.plan");
  ASSERT_EQ(tool("dscompile", model + " --batch 2 --loss output --label y -o " + plan).exit_code,
            0);
  std::string x = test::scratch("ignore_x.npy"), y = test::scratch("ignore_y.npy");
  writeNpy(x, Tensor::fromDoubles(DType::F32, {4, 4}, std::vector<double>(16, 1.0)));
  writeNpy(y, Tensor::fromInts(DType::I64, {4}, {0, -100, 2, 1}));
  auto r = tool("dsrun", plan + " --feed x=" + x + " --feed y=" + y + " --steps 2");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  writeNpy(y, Tensor::fromInts(DType::I64, {4}, {0, -1, 2, 1}));
  expectOneLineError(tool("dsrun", plan + " --feed x=" + x + " --feed y=" + y + " --steps 2"),
                     "--feed y: sample 1 has value -1, outside [0, 3) that node "
                     "'SoftmaxCrossEntropyLoss_1' (SoftmaxCrossEntropyLoss) accepts (ignore_index "
                     "-100)");
}

TEST(BadData, CifarNeedsAModelWithTenClasses) {
  std::string dir = test::scratch("cifar_for_5");
  fs::create_directories(dir);
  test::writeFile(dir + "/data_batch_1.bin", std::string(3073 * 2, '\1'));
  std::string model = test::scratch("five_classes.onnx");
  ASSERT_EQ(tool("dsmodel", "resnet18 --stem cifar --classes 5 -o " + model).exit_code, 0);
  std::string plan = test::scratch("five_classes.plan");
  ASSERT_EQ(tool("dscompile", model + " --batch 2 --loss cross_entropy -o " + plan).exit_code, 0);
  expectOneLineError(
      tool("dsrun", plan + " --data cifar10:" + dir + " --steps 1"),
      "(SoftmaxCrossEntropyLoss) takes 5 classes but the dataset's labels go up to 9");
}

TEST(BadData, CifarLabelsOutOfRangeNameTheRecord) {
  std::string dir = test::scratch("bad_cifar");
  fs::create_directories(dir);
  std::string bytes;
  for (int i = 0; i < 4; ++i) bytes += static_cast<char>(i == 3 ? 12 : i) + std::string(3072, '\0');
  test::writeFile(dir + "/data_batch_1.bin", bytes);
  std::string model = test::scratch("bad_cifar_model.onnx");
  ASSERT_EQ(tool("dsmodel", "resnet18 --stem cifar --classes 10 -o " + model).exit_code, 0);
  std::string plan = test::scratch("bad_cifar.plan");
  ASSERT_EQ(tool("dscompile", model + " --batch 2 --loss cross_entropy -o " + plan).exit_code, 0);
  expectOneLineError(tool("dsrun", plan + " --data cifar10:" + dir + " --steps 1"),
                     "record 3 has label 12");
}

}  // namespace
}  // namespace ds
