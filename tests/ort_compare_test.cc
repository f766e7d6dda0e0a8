// Registers tests/ort_compare.py with ctest: dscompile + dsrun on the MLP, ResNet-18,
// GPT, MobileNet V2 and V3 and DenseNet-121 models (dsmodel's and PyTorch's exports)
// against ONNX Runtime (and onnx's reference evaluator for training-mode
// BatchNormalization), end to end. The script needs the project venv
// (scripts/setup.sh); without it the test is skipped.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>

#include "tests/test_util.h"

namespace ds {
namespace {

TEST(OrtCompare, ModelsMatchOnnxRuntime) {
  const std::string python = DS_SOURCE_DIR "/.venv/bin/python";
  if (!std::filesystem::exists(python))
    GTEST_SKIP() << python << " missing (scripts/setup.sh creates the venv)";
  test::CommandResult r =
      test::runCommand(python + " " DS_SOURCE_DIR "/tests/ort_compare.py --bin " DS_BINARY_DIR);
  std::printf("%s", r.output.c_str());
  EXPECT_EQ(r.exit_code, 0) << "tests/ort_compare.py failed; its output is above";
}

}  // namespace
}  // namespace ds
