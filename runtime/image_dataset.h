// A labelled image dataset dsrun trains from (--data cifar10:DIR, imagefolder:DIR):
// an endless stream of augmented samples, reshuffled every epoch from a seed, that
// fills a plan's one image input and its one label input.
#pragma once

#include <cstdint>
#include <string>

#include "ir/tensor.h"

namespace ds {

class ImageDataset {
 public:
  virtual ~ImageDataset() = default;
  // How messages name it: "--data cifar10".
  virtual std::string name() const = 0;
  virtual int64_t size() const = 0;
  virtual int64_t classes() const = 0;
  // Throws naming `feed` unless the dataset can fill an image input of `type`
  // (f32[batch, 3, H, W]; CIFAR-10 only 32x32).
  virtual void checkImageInput(const std::string& feed, const TensorType& type) const;
  // Samples [first, first + n) of the stream, n = images_type.shape[0] (epoch e
  // covers [e·size, (e+1)·size)): images of `images_type` and labels i64[n].
  virtual void batch(int64_t first, const TensorType& images_type, Tensor* images,
                     Tensor* labels) const = 0;
};

}  // namespace ds
