// dsrun --data imagefolder (runtime/image_folder.h) against torchvision: the
// classes and samples torchvision's ImageFolder finds, and each sample's pixels as
// torchvision's resized_crop (PIL's bilinear), hflip, to_tensor and normalize make
// them for the crop and flip the loader drew (tests/imagefolder_oracle.py).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/image_folder.h"
#include "runtime/npy.h"
#include "tests/training_fixtures.h"

namespace ds {
namespace {

namespace fs = std::filesystem;

const std::string kPython = "/usr/bin/python3";
const std::string kOracle = DS_SOURCE_DIR "/tests/imagefolder_oracle.py";

// Two classes: cat (5 JPEGs, one 20x90, one 400x600, one CMYK), dog (2 JPEGs, one grayscale, and
// 3 PNGs, one named .jpeg and two in a subdirectory); and a .gif and a .txt that
// torchvision skips.
std::string makeFolder(const std::string& name) {
  const std::string dir = test::freshDir(name);
  const test::CommandResult r = test::runCommand(kPython + " " + kOracle + " make " + dir);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return dir;
}

TEST(ImageFolder, ListsClassesAndSamplesAsTorchvisionDoes) {
  const std::string dir = makeFolder("imagefolder_list");
  const test::CommandResult listed = test::runCommand(kPython + " " + kOracle + " list " + dir);
  ASSERT_EQ(listed.exit_code, 0) << listed.output;
  const nlohmann::json expected = nlohmann::json::parse(listed.output);
  ImageFolder data(dir, {.seed = 3, .augment = false});
  EXPECT_EQ(data.classNames(), (std::vector<std::string>{"cat", "dog"}));
  EXPECT_EQ(data.classes(), 2);
  ASSERT_EQ(data.size(), static_cast<int64_t>(expected.size()));
  ASSERT_EQ(data.size(), 10);
  for (int64_t i = 0; i < data.size(); ++i) {
    EXPECT_EQ(data.samplePath(i), expected[static_cast<size_t>(i)][0].get<std::string>());
    EXPECT_EQ(data.sampleLabel(i), expected[static_cast<size_t>(i)][1].get<int64_t>());
  }
  // Each epoch is an order of all ten; the label is the sample's.
  Tensor images, labels;
  data.batch(0, {DType::F32, {20, 3, 8, 8}}, &images, &labels);
  for (int epoch = 0; epoch < 2; ++epoch) {
    std::set<std::string> seen;
    for (int64_t i = 10 * epoch; i < 10 * epoch + 10; ++i) {
      const fs::path path = data.pathAt(i);
      seen.insert(path.string());
      EXPECT_EQ(labels.as<int64_t>()[static_cast<size_t>(i)],
                path.string().find("/dog/") != std::string::npos ? 1 : 0)
          << path;
    }
    EXPECT_EQ(seen.size(), 10u);
  }
}

// The batch against torchvision for the crops and flips the loader drew: whole
// images without augmentation, random ones with it.
TEST(ImageFolder, SamplesAreTorchvisionsTransformsOfTheirCrops) {
  const std::string dir = makeFolder("imagefolder_pixels");
  for (bool augment : {false, true}) {
    SCOPED_TRACE(augment ? "augmented" : "whole images");
    ImageFolder data(dir, {.seed = 11, .augment = augment});
    const int64_t n = 20, height = 24, width = 20;
    Tensor images, labels;
    data.batch(0, {DType::F32, {n, 3, height, width}}, &images, &labels);
    nlohmann::json spec = {
        {"height", height}, {"width", width}, {"samples", nlohmann::json::array()}};
    int flips = 0, crops = 0;
    for (int64_t i = 0; i < n; ++i) {
      const RgbImage image = readImage(data.pathAt(i));
      bool flip = false;
      const CropBox box = data.cropAt(i, image.height, image.width, &flip);
      flips += flip;
      crops += box.height < image.height || box.width < image.width;
      spec["samples"].push_back({{"path", data.pathAt(i)},
                                 {"top", box.top},
                                 {"left", box.left},
                                 {"box_height", box.height},
                                 {"box_width", box.width},
                                 {"flip", flip}});
    }
    if (augment) {
      EXPECT_GT(flips, 0);
      EXPECT_GT(crops, 0);
    }
    const std::string spec_path = test::scratch("imagefolder_spec.json");
    const std::string expected_path = test::scratch("imagefolder_expected.npy");
    test::writeFile(spec_path, spec.dump());
    const test::CommandResult r =
        test::runCommand(kPython + " " + kOracle + " transform " + spec_path + " " + expected_path);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const Tensor expected = readNpy(expected_path);
    ASSERT_EQ(expected.type(), images.type());
    double worst = 0;
    for (int64_t i = 0; i < images.numel(); ++i)
      worst = std::max(worst, std::fabs(images.getDouble(i) - expected.getDouble(i)));
    EXPECT_LE(worst, 1e-5);
  }
}

// torchvision's ranges: area 8% to 100% of the image, aspect ratio 3/4 to 4/3 (up
// to rounding to whole pixels), inside the image; extreme images take the central
// fallback.
TEST(ImageFolder, RandomResizedCropsStayInTorchvisionsRanges) {
  for (auto [height, width] : {std::pair<int64_t, int64_t>{375, 500}, {64, 64}, {20, 90}}) {
    for (uint64_t key = 0; key < 500; ++key) {
      const CropBox b = randomResizedCrop(height, width, key);
      ASSERT_TRUE(b.top >= 0 && b.left >= 0 && b.height > 0 && b.width > 0 &&
                  b.top + b.height <= height && b.left + b.width <= width)
          << height << "x" << width << " key " << key;
      const double area =
          static_cast<double>(b.height * b.width) / static_cast<double>(height * width);
      const double ratio = static_cast<double>(b.width) / static_cast<double>(b.height);
      const bool fallback = b.top == (height - b.height) / 2 && b.left == (width - b.width) / 2 &&
                            (b.height == height || b.width == width);
      if (fallback) continue;
      EXPECT_GE(area, 0.08 * 0.8) << key;
      EXPECT_GE(ratio, 0.75 * 0.8) << key;
      EXPECT_LE(ratio, 4.0 / 3.0 * 1.25) << key;
    }
  }
}

TEST(ImageFolder, BadFoldersAreErrorsNamingTheCulprit) {
  const std::string dir = makeFolder("imagefolder_bad");
  test::writeFile(dir + "/dog/scan.bmp", "BM");
  try {
    ImageFolder data(dir);
    ADD_FAILURE() << "a BMP was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("scan.bmp: --data imagefolder decodes JPEG and PNG "
                                         "images only"),
              std::string::npos)
        << e.what();
  }
  fs::remove(dir + "/dog/scan.bmp");
  fs::create_directories(dir + "/empty");
  try {
    ImageFolder data(dir);
    ADD_FAILURE() << "an empty class was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("class 'empty' has no .jpg, .jpeg or .png images"),
              std::string::npos)
        << e.what();
  }
  fs::remove(dir + "/empty");
  // A damaged file, and one cut short (PIL: "image file is truncated").
  const std::string whole = test::readBytes(dir + "/cat/img0.jpg");
  test::writeFile(dir + "/cat/img0.jpg", whole.substr(0, whole.size() / 2));
  test::writeFile(dir + "/dog/img0.jpg", "not a jpeg");
  for (const char* file : {"cat/img0.jpg", "dog/img0.jpg"}) {
    EXPECT_THROW(readImage(dir + "/" + file), Error) << file;
    try {
      readImage(dir + "/" + file);
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::string(file) + ": not an image dsrun can decode"),
                std::string::npos)
          << e.what();
    }
  }
  try {
    readImage(dir + "/cat/img0.jpg");
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("image file is truncated"), std::string::npos) << e.what();
  }
  ImageFolder data(dir, {.seed = 0, .augment = false});
  Tensor images, labels;
  EXPECT_THROW(data.batch(0, {DType::F32, {10, 3, 8, 8}}, &images, &labels), Error);
  // Only f32 images: a 16-bit input is refused before anything is written.
  EXPECT_THROW(data.checkImageInput("x", {DType::BF16, {2, 3, 8, 8}}), Error);
  EXPECT_THROW(data.batch(0, {DType::BF16, {2, 3, 8, 8}}, &images, &labels), Error);
  EXPECT_THROW(ImageFolder(dir + "/cat"), Error);  // no class directories
}

// The losses dsrun writes to --metrics, by step.
std::vector<double> lossesOf(const std::string& metrics) {
  std::vector<double> losses;
  std::ifstream in(metrics);
  for (std::string line; std::getline(in, line);)
    losses.push_back(nlohmann::json::parse(line)["loss"].get<double>());
  return losses;
}

// dsrun trains the CNN from the folder: finite losses, the same again from the same
// seed, and a run resumed from a checkpoint continues them exactly (its crops and
// order are functions of the seed and the stream position).
TEST(ImageFolder, DsrunTrainsFromAFolderAndResumesExactly) {
  const std::string dir = makeFolder("imagefolder_dsrun");
  const std::string plan =
      test::compileText(test::bnCnnText(), "imagefolder_cnn", "--batch 2 --loss cross_entropy");
  const std::string data = plan + " --data imagefolder:" + dir;
  std::vector<std::vector<double>> runs;
  for (int run = 0; run < 2; ++run) {
    const std::string metrics = test::scratch("imagefolder_metrics.jsonl");
    const test::CommandResult r = test::tool("dsrun", data + " --steps 6 --metrics " + metrics);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    runs.push_back(lossesOf(metrics));
    ASSERT_EQ(runs.back().size(), 6u);
    for (double loss : runs.back()) EXPECT_TRUE(std::isfinite(loss));
  }
  EXPECT_EQ(runs[0], runs[1]);
  const std::string checkpoint = test::freshDir("imagefolder_checkpoint");
  const std::string resumed = test::scratch("imagefolder_resumed.jsonl");
  ASSERT_EQ(test::tool("dsrun", data + " --steps 4 --save " + checkpoint).exit_code, 0);
  const test::CommandResult r =
      test::tool("dsrun", data + " --steps 6 --resume " + checkpoint + " --metrics " + resumed);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(lossesOf(resumed), std::vector<double>(runs[0].begin() + 4, runs[0].end()));
  test::expectOneLineError(test::tool("dsrun", plan + " --data imagefolder:" + dir + "/nowhere"),
                           "not a directory");
}

}  // namespace
}  // namespace ds
