// CIFAR-10 in the binary format of the CIFAR-10 site (data_batch_1.bin ...
// data_batch_5.bin: records of 1 label byte and 3072 pixel bytes, R, G and B
// planes of 32x32), served as the reference workload's training data: reshuffled
// every epoch from a seed, RandomCrop(32, padding 4) and RandomHorizontalFlip,
// then Normalize(mean 0.5, std 0.5).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ir/tensor.h"
#include "runtime/image_dataset.h"

namespace ds {

struct Cifar10Options {
  uint64_t seed = 0;
  bool augment = true;
};

class Cifar10 : public ImageDataset {
 public:
  // Reads every data_batch_*.bin in `dir`; throws naming the directory or file.
  Cifar10(const std::string& dir, Cifar10Options options = {});

  std::string name() const override { return "--data cifar10"; }
  int64_t size() const override { return static_cast<int64_t>(labels_.size()); }
  int64_t classes() const override { return 10; }
  // f32[batch,3,32,32] only.
  void checkImageInput(const std::string& feed, const TensorType& type) const override;
  void batch(int64_t first, const TensorType& images_type, Tensor* images,
             Tensor* labels) const override;
  // Samples [first, first + count): images f32[count,3,32,32] and labels i64[count].
  void batch(int64_t first, int64_t count, Tensor* images, Tensor* labels) const;

 private:
  int64_t sampleAt(int64_t position) const;  // dataset index of a stream position
  void decode(int64_t index, int64_t position, float* out) const;

  Cifar10Options options_;
  std::vector<uint8_t> pixels_;  // size × 3072
  std::vector<uint8_t> labels_;
  mutable int64_t cached_epoch_ = -1;
  mutable std::vector<int64_t> order_;
};

}  // namespace ds
