// Every dsmodel family imports, verifies, keeps its parameter count, and its text
// IR round-trips (print -> parse -> print is the identity).
#include <gtest/gtest.h>

#include <sstream>

#include "frontend/onnx_import.h"
#include "frontend/summary.h"
#include "ir/text.h"
#include "ir/verifier.h"
#include "models/models.h"
#include "tests/test_util.h"

namespace ds {
namespace {

std::unique_ptr<Graph> importBuilt(const onnx::ModelProto& model, const std::string& name) {
  std::string path = test::tempPath(name + ".onnx");
  saveModel(model, path);
  ImportOptions options;
  options.batch = 2;
  auto graph = importOnnxFile(path, options);
  verifyGraph(*graph);
  return graph;
}

// Reports the first differing line instead of two whole dumps.
void expectSameText(const std::string& got, const std::string& want) {
  std::istringstream a(got), b(want);
  std::string la, lb;
  for (int line = 1; std::getline(b, lb); ++line) {
    ASSERT_TRUE(std::getline(a, la)) << "reprint ends before line " << line;
    ASSERT_EQ(la, lb) << "first difference at line " << line;
  }
  EXPECT_FALSE(std::getline(a, la)) << "reprint has extra lines";
}

void expectRoundTrip(const Graph& graph) {
  std::string text = printGraph(graph);
  auto parsed = parseGraph(text);
  expectSameText(printGraph(*parsed), text);
}

TEST(ModelImport, MlpRoundTrips) {
  auto g = importBuilt(buildMlp({}), "mlp");
  EXPECT_EQ(graphStats(*g).num_params, 784 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10);
  expectRoundTrip(*g);
}

struct ResNetCase {
  int depth;
  ResNetStem stem;
  int64_t classes;
  int64_t params;  // torchvision.models.resnet<depth>(num_classes=classes)
};

class ModelImportResNet : public ::testing::TestWithParam<ResNetCase> {};

TEST_P(ModelImportResNet, ImportsWithTorchvisionParameterCountAndRoundTrips) {
  const ResNetCase& c = GetParam();
  ResNetOptions options;
  options.depth = c.depth;
  options.stem = c.stem;
  options.classes = c.classes;
  auto g = importBuilt(buildResNet(options), "resnet" + std::to_string(c.depth));
  EXPECT_EQ(graphStats(*g).num_params, c.params);
  EXPECT_EQ(g->outputs()[0]->shape(), (Shape{2, c.classes}));
  for (Value* v : g->sources()) {
    bool running_stat = v->name().find("running_") != std::string::npos;
    EXPECT_EQ(v->role() == Role::Buffer, running_stat) << v->name();
  }
  expectRoundTrip(*g);
}

INSTANTIATE_TEST_SUITE_P(AllDepths, ModelImportResNet,
                         ::testing::Values(ResNetCase{18, ResNetStem::kImageNet, 10, 11'181'642},
                                           ResNetCase{34, ResNetStem::kImageNet, 10, 21'289'802},
                                           ResNetCase{50, ResNetStem::kImageNet, 10, 23'528'522},
                                           ResNetCase{101, ResNetStem::kImageNet, 10, 42'520'650},
                                           ResNetCase{152, ResNetStem::kImageNet, 10, 58'164'298},
                                           ResNetCase{18, ResNetStem::kCifar, 10, 11'173'962}),
                         [](const ::testing::TestParamInfo<ResNetCase>& info) {
                           return "resnet" + std::to_string(info.param.depth) +
                                  (info.param.stem == ResNetStem::kCifar ? "_cifar" : "_imagenet");
                         });

TEST(ModelImport, GptConstantsStayConstantAndRoundTrip) {
  GptOptions options{.layers = 2, .d_model = 64, .heads = 4, .vocab = 100, .seq = 16, .seed = 0};
  auto g = importBuilt(buildGpt(options), "gpt_tiny");
  EXPECT_EQ(g->value("attn.causal_mask")->role(), Role::Constant);
  EXPECT_EQ(g->value("wte.weight")->role(), Role::Parameter);
  EXPECT_EQ(g->outputs()[0]->shape(), (Shape{2, 16, 100}));
  expectRoundTrip(*g);
}

TEST(ModelImport, Gpt2SmallHasGpt2ParameterCount) {
  auto g = importBuilt(buildGpt(gptPreset("small")), "gpt2_small");
  EXPECT_EQ(graphStats(*g).num_params, 124'439'808);
  expectRoundTrip(*g);
}

}  // namespace
}  // namespace ds
