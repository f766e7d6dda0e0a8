// torchvision's ImageFolder with the ImageNet training transforms, for dsrun
// --data imagefolder:DIR. The layout is DIR/<class>/.../<image>.jpg; classes are
// the subdirectories sorted by name, numbered from 0, and samples are the JPEG and
// PNG files under each (.jpg, .jpeg, .png; any case), ordered as
// torchvision.datasets.ImageFolder lists them (directories by path, files by name).
// Other files are skipped, except the other image formats torchvision takes (.bmp,
// .webp, ...), which are an error naming the file. Files are decoded by content, as
// PIL opens them: JPEG through libjpeg-turbo (grayscale and CMYK converted as PIL's
// convert("RGB") does; a truncated file is an error, as in PIL), PNG through libpng.
//
// Each sample, as torchvision.transforms does with PIL images:
//   RandomResizedCrop(H x W of the plan's input; scale (0.08, 1), ratio (3/4, 4/3)),
//   RandomHorizontalFlip, ToTensor, Normalize(ImageNet's mean and std).
// The crop is resized with PIL's bilinear filter (antialiased when it shrinks, in
// PIL's 8-bit fixed point), so a crop box gives PIL's pixels. Without augmentation,
// the crop is the whole image and there is no flip. The randomness is a pure
// function of (seed, stream position), so resumed runs continue exactly; the
// order is reshuffled every epoch. A batch is decoded on OpenMP's threads. An
// ImageFolder is not shared between threads (dsrun makes one per rank): batch()
// keeps the epoch's order as it goes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/image_dataset.h"

namespace ds {

struct ImageFolderOptions {
  uint64_t seed = 0;
  bool augment = true;
};

// A crop of an image: rows [top, top + height), columns [left, left + width).
struct CropBox {
  int64_t top = 0, left = 0, height = 0, width = 0;
};

// A decoded image: 8-bit RGB, rows of width x 3 bytes.
struct RgbImage {
  int64_t height = 0, width = 0;
  std::vector<uint8_t> pixels;
};

// Decodes the JPEG or PNG file at `path` to RGB, as PIL's open(path).convert("RGB");
// throws naming the file when it cannot.
RgbImage readImage(const std::string& path);

// PIL's Image.resize((width, height), BILINEAR) of `box` of `image`.
RgbImage resizeBilinear(const RgbImage& image, const CropBox& box, int64_t height, int64_t width);

// torchvision's RandomResizedCrop.get_params for an image of height x width, its
// uniform numbers drawn from the counter-based stream `key` (kernels/dropout_rng.h).
CropBox randomResizedCrop(int64_t height, int64_t width, uint64_t key);

class ImageFolder : public ImageDataset {
 public:
  // Lists the samples under `dir`; throws naming the directory or file.
  ImageFolder(const std::string& dir, ImageFolderOptions options = {});

  std::string name() const override { return "--data imagefolder"; }
  int64_t size() const override { return static_cast<int64_t>(samples_.size()); }
  int64_t classes() const override { return static_cast<int64_t>(class_names_.size()); }
  const std::vector<std::string>& classNames() const { return class_names_; }
  void batch(int64_t first, const TensorType& images_type, Tensor* images,
             Tensor* labels) const override;

  // Sample `index` in the dataset's order (torchvision's): its file and label.
  const std::string& samplePath(int64_t index) const {
    return samples_[static_cast<size_t>(index)].path;
  }
  int64_t sampleLabel(int64_t index) const { return samples_[static_cast<size_t>(index)].label; }
  // Stream position `position`: its file, and the crop and flip of its image of
  // height x width (the whole image, unflipped, without augmentation).
  const std::string& pathAt(int64_t position) const;
  CropBox cropAt(int64_t position, int64_t height, int64_t width, bool* flip) const;

 private:
  struct Sample {
    std::string path;
    int64_t label;
  };
  int64_t sampleAt(int64_t position) const;

  ImageFolderOptions options_;
  std::vector<std::string> class_names_;
  std::vector<Sample> samples_;
  mutable int64_t cached_epoch_ = -1;
  mutable std::vector<int64_t> order_;
};

}  // namespace ds
