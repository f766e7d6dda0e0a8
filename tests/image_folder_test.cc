// dsrun --data imagefolder (runtime/image_folder.h) against torchvision: the
// classes and samples torchvision's ImageFolder finds, and each sample's pixels as
// torchvision's resized_crop (PIL's bilinear), hflip, to_tensor and normalize make
// them for the crop and flip the loader drew (tests/imagefolder_oracle.py).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
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

// Two classes of JPEGs: cat (3, one 20x90), dog (2, one grayscale); and a text file.
std::string makeFolder(const std::string& name) {
  const std::string dir = test::freshDir(name);
  const test::CommandResult r = test::runCommand(kPython + " " + kOracle + " make " + dir);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return dir;
}

TEST(ImageFolder, ListsClassesAndSamplesAsTorchvisionDoes) {
  const std::string dir = makeFolder("imagefolder_list");
  ImageFolder data(dir, {.seed = 3, .augment = false});
  EXPECT_EQ(data.classNames(), (std::vector<std::string>{"cat", "dog"}));
  EXPECT_EQ(data.size(), 5);
  EXPECT_EQ(data.classes(), 2);
  // Each epoch is an order of all five; the label is the class directory's index.
  Tensor images, labels;
  data.batch(0, {DType::F32, {10, 3, 8, 8}}, &images, &labels);
  for (int epoch = 0; epoch < 2; ++epoch) {
    std::set<std::string> seen;
    for (int64_t i = 5 * epoch; i < 5 * epoch + 5; ++i) {
      const fs::path path = data.pathAt(i);
      seen.insert(path.string());
      EXPECT_EQ(labels.as<int64_t>()[static_cast<size_t>(i)],
                path.parent_path().filename() == "cat" ? 0 : 1)
          << path;
    }
    EXPECT_EQ(seen.size(), 5u);
  }
}

// The batch against torchvision for the crops and flips the loader drew: whole
// images without augmentation, random ones with it.
TEST(ImageFolder, SamplesAreTorchvisionsTransformsOfTheirCrops) {
  const std::string dir = makeFolder("imagefolder_pixels");
  for (bool augment : {false, true}) {
    SCOPED_TRACE(augment ? "augmented" : "whole images");
    ImageFolder data(dir, {.seed = 11, .augment = augment});
    const int64_t n = 15, height = 24, width = 20;
    Tensor images, labels;
    data.batch(0, {DType::F32, {n, 3, height, width}}, &images, &labels);
    nlohmann::json spec = {
        {"height", height}, {"width", width}, {"samples", nlohmann::json::array()}};
    int flips = 0, crops = 0;
    for (int64_t i = 0; i < n; ++i) {
      const RgbImage image = readJpeg(data.pathAt(i));
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
  test::writeFile(dir + "/dog/scan.png", "png");
  try {
    ImageFolder data(dir);
    ADD_FAILURE() << "a PNG was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("scan.png: only JPEG images"), std::string::npos)
        << e.what();
  }
  fs::remove(dir + "/dog/scan.png");
  fs::create_directories(dir + "/empty");
  try {
    ImageFolder data(dir);
    ADD_FAILURE() << "an empty class was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("class 'empty' has no .jpg or .jpeg images"),
              std::string::npos)
        << e.what();
  }
  fs::remove(dir + "/empty");
  test::writeFile(dir + "/dog/img0.jpg", "not a jpeg");
  ImageFolder data(dir, {.seed = 0, .augment = false});
  Tensor images, labels;
  try {
    data.batch(0, {DType::F32, {5, 3, 8, 8}}, &images, &labels);
    ADD_FAILURE() << "a damaged JPEG was decoded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("img0.jpg: not a JPEG image dsrun can decode"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(ImageFolder(dir + "/cat"), Error);  // no class directories
}

// dsrun trains the CNN from the folder: two steps of finite loss, and the same
// two steps again from the same seed.
TEST(ImageFolder, DsrunTrainsFromAFolder) {
  const std::string dir = makeFolder("imagefolder_dsrun");
  const std::string plan =
      test::compileText(test::bnCnnText(), "imagefolder_cnn", "--batch 2 --loss cross_entropy");
  std::vector<std::vector<double>> losses;
  for (int run = 0; run < 2; ++run) {
    const std::string metrics = test::scratch("imagefolder_metrics.jsonl");
    const test::CommandResult r = test::tool(
        "dsrun", plan + " --data imagefolder:" + dir + " --steps 3 --metrics " + metrics);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    std::ifstream in(metrics);
    losses.emplace_back();
    for (std::string line; std::getline(in, line);) {
      losses.back().push_back(nlohmann::json::parse(line)["loss"].get<double>());
      EXPECT_TRUE(std::isfinite(losses.back().back())) << line;
    }
    EXPECT_EQ(losses.back().size(), 3u);
  }
  EXPECT_EQ(losses[0], losses[1]);
  test::expectOneLineError(test::tool("dsrun", plan + " --data imagefolder:" + dir + "/nowhere"),
                           "not a directory");
}

}  // namespace
}  // namespace ds
