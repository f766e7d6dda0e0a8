// CIFAR-10 binary batches: decoding, per-epoch shuffling, augmentation, errors, and
// dsrun training from them. Tests write small files in the CIFAR-10 site's format.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "ir/error.h"
#include "runtime/cifar10.h"
#include "tests/test_util.h"

namespace ds {
namespace {

// Record i: label i % 10, pixel (c, y, x) = (i + c * 7 + y * 3 + x) % 256.
std::string writeFakeCifar(const std::string& name, int records) {
  std::string dir = test::tempPath(name);
  std::filesystem::create_directories(dir);
  std::string bytes;
  for (int i = 0; i < records; ++i) {
    bytes += static_cast<char>(i % 10);
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 32; ++y)
        for (int x = 0; x < 32; ++x) bytes += static_cast<char>((i + c * 7 + y * 3 + x) % 256);
  }
  test::writeFile(dir + "/data_batch_1.bin", bytes);
  return dir;
}

float expectedPixel(int record, int c, int y, int x) {
  return (static_cast<float>((record + c * 7 + y * 3 + x) % 256) / 255.0f - 0.5f) / 0.5f;
}

TEST(Cifar10, DecodesNormalisesAndShufflesEachEpoch) {
  Cifar10 data(writeFakeCifar("cifar_plain", 20), {.seed = 3, .augment = false});
  ASSERT_EQ(data.size(), 20);
  Tensor images, labels;
  data.batch(0, 20, &images, &labels);  // exactly epoch 0
  std::set<int64_t> seen;
  std::vector<int64_t> epoch0;
  for (int64_t i = 0; i < 20; ++i) {
    // The record is identified through its pixel (0,0,0) = record % 256.
    float p = images.as<float>()[static_cast<size_t>(i * 3072)];
    int record = static_cast<int>(std::lround((p * 0.5f + 0.5f) * 255.0f));
    EXPECT_EQ(labels.as<int64_t>()[static_cast<size_t>(i)], record % 10);
    EXPECT_FLOAT_EQ(images.as<float>()[static_cast<size_t>(i * 3072 + 2 * 1024 + 5 * 32 + 7)],
                    expectedPixel(record, 2, 5, 7));
    seen.insert(record);
    epoch0.push_back(record);
  }
  EXPECT_EQ(seen.size(), 20u) << "an epoch visits every sample once";
  Tensor again, again_labels;
  data.batch(20, 20, &again, &again_labels);  // epoch 1
  std::vector<int64_t> epoch1;
  for (int64_t i = 0; i < 20; ++i)
    epoch1.push_back(
        std::lround((again.as<float>()[static_cast<size_t>(i * 3072)] * 0.5f + 0.5f) * 255.0f));
  EXPECT_NE(epoch0, epoch1) << "each epoch is reshuffled";
  EXPECT_EQ(std::set<int64_t>(epoch1.begin(), epoch1.end()).size(), 20u);
  Tensor same, same_labels;
  Cifar10(writeFakeCifar("cifar_plain2", 20), {.seed = 3, .augment = false})
      .batch(0, 20, &same, &same_labels);
  EXPECT_EQ(same, images) << "the same seed gives the same epoch";
}

TEST(Cifar10, AugmentationIsACropOfThePaddedImageMaybeFlipped) {
  Cifar10 plain(writeFakeCifar("cifar_aug", 10), {.seed = 1, .augment = false});
  Cifar10 augmented(writeFakeCifar("cifar_aug", 10), {.seed = 1, .augment = true});
  Tensor p, pl, a, al;
  plain.batch(0, 10, &p, &pl);
  augmented.batch(0, 10, &a, &al);
  EXPECT_EQ(pl, al) << "augmentation does not change the order";
  int shifted = 0;
  for (int64_t i = 0; i < 10; ++i) {
    int record = static_cast<int>(
        std::lround((p.as<float>()[static_cast<size_t>(i * 3072)] * 0.5f + 0.5f) * 255.0f));
    const float* img = a.as<float>().data() + i * 3072;
    // Find the crop offset and flip that explain the augmented image.
    bool explained = false;
    for (int dy = -4; dy <= 4 && !explained; ++dy) {
      for (int dx = -4; dx <= 4 && !explained; ++dx) {
        for (int flip = 0; flip < 2 && !explained; ++flip) {
          bool all = true;
          for (int c = 0; c < 3 && all; ++c)
            for (int y = 0; y < 32 && all; ++y)
              for (int x = 0; x < 32 && all; ++x) {
                int sy = y + dy, sx = (flip ? 31 - x : x) + dx;
                bool in = sy >= 0 && sy < 32 && sx >= 0 && sx < 32;
                float want = in ? expectedPixel(record, c, sy, sx) : -1.0f;  // zero padding
                all = img[(c * 32 + y) * 32 + x] == want;
              }
          explained = all;
          shifted += all && (dy != 0 || dx != 0 || flip);
        }
      }
    }
    EXPECT_TRUE(explained) << "sample " << i;
  }
  EXPECT_GT(shifted, 5);
}

TEST(Cifar10, BadFilesNameTheFile) {
  std::string dir = test::tempPath("cifar_bad");
  std::filesystem::create_directories(dir);
  test::writeFile(dir + "/data_batch_1.bin", std::string(3000, '\x01'));
  try {
    Cifar10 data(dir);
    FAIL() << "accepted a truncated batch";
  } catch (const Error& e) {
    EXPECT_TRUE(test::contains(e.what(), "data_batch_1.bin: 3000 bytes is not a whole number"))
        << e.what();
  }
  try {
    Cifar10 data(test::tempPath("cifar_missing"));
    FAIL() << "accepted a directory without batches";
  } catch (const Error& e) {
    EXPECT_TRUE(test::contains(e.what(), "no data_batch_*.bin files")) << e.what();
  }
}

TEST(Cifar10, DsrunTrainsFromCifar) {
  std::string dir = writeFakeCifar("cifar_train", 64);
  std::string model = test::tempPath("cifar_resnet18.onnx");
  auto gen =
      test::runCommand(test::binary("dsmodel") + " resnet18 --stem cifar --classes 10 -o " + model);
  ASSERT_EQ(gen.exit_code, 0) << gen.output;
  std::string plan = test::tempPath("cifar_resnet18.plan");
  auto compile = test::runCommand(test::binary("dscompile") + " " + model +
                                  " --batch 4 --loss cross_entropy -o " + plan);
  ASSERT_EQ(compile.exit_code, 0) << compile.output;
  std::string metrics = test::tempPath("cifar_metrics.jsonl");
  auto run = test::runCommand(test::binary("dsrun") + " " + plan + " --data cifar10:" + dir +
                              " --steps 2 --metrics " + metrics);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  std::ifstream in(metrics);
  int lines = 0;
  for (std::string line; std::getline(in, line);) ++lines;
  EXPECT_EQ(lines, 2);
}

}  // namespace
}  // namespace ds
