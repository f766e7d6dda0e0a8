#include "runtime/cifar10.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "ir/error.h"

namespace ds {
namespace {

constexpr int64_t kSide = 32, kPixels = 3 * kSide * kSide, kRecord = 1 + kPixels, kPad = 4;

// SplitMix64: a fixed, portable generator, so epochs and crops are the same on
// every machine and standard library.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

Cifar10::Cifar10(const std::string& dir, Cifar10Options options) : options_(options) {
  std::vector<std::filesystem::path> files;
  for (int i = 1; i <= 5; ++i) {
    auto path = std::filesystem::path(dir) / ("data_batch_" + std::to_string(i) + ".bin");
    if (std::filesystem::exists(path)) files.push_back(path);
  }
  DS_CHECK(!files.empty(), "--data cifar10:", dir, ": no data_batch_*.bin files");
  for (const auto& path : files) {
    std::ifstream in(path, std::ios::binary);
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                               std::istreambuf_iterator<char>());
    DS_CHECK(!bytes.empty() && bytes.size() % kRecord == 0, path.string(), ": ", bytes.size(),
             " bytes is not a whole number of CIFAR-10 records (", kRecord, " bytes each)");
    for (size_t r = 0; r < bytes.size(); r += kRecord) {
      DS_CHECK(bytes[r] < 10, path.string(), ": record ", r / kRecord, " has label ", int{bytes[r]},
               " (CIFAR-10 labels are 0-9)");
      labels_.push_back(bytes[r]);
      pixels_.insert(pixels_.end(), bytes.begin() + static_cast<long>(r) + 1,
                     bytes.begin() + static_cast<long>(r + kRecord));
    }
  }
}

int64_t Cifar10::sampleAt(int64_t position) const {
  int64_t epoch = position / size();
  if (epoch != cached_epoch_) {  // Fisher-Yates with the epoch's own stream
    order_.resize(static_cast<size_t>(size()));
    for (int64_t i = 0; i < size(); ++i) order_[static_cast<size_t>(i)] = i;
    uint64_t state = mix(options_.seed ^ mix(static_cast<uint64_t>(epoch)));
    for (int64_t i = size() - 1; i > 0; --i) {
      state = mix(state);
      auto j = static_cast<int64_t>(state % static_cast<uint64_t>(i + 1));
      std::swap(order_[static_cast<size_t>(i)], order_[static_cast<size_t>(j)]);
    }
    cached_epoch_ = epoch;
  }
  return order_[static_cast<size_t>(position % size())];
}

void Cifar10::decode(int64_t index, int64_t position, float* out) const {
  const uint8_t* src = pixels_.data() + index * kPixels;
  int64_t dy = kPad, dx = kPad;  // crop offset into the zero-padded 40x40 image
  bool flip = false;
  if (options_.augment) {
    uint64_t r = mix(options_.seed ^ mix(static_cast<uint64_t>(position) + 0x5bd1e995ull));
    dy = static_cast<int64_t>(r % (2 * kPad + 1));
    dx = static_cast<int64_t>((r >> 8) % (2 * kPad + 1));
    flip = ((r >> 16) & 1) != 0;
  }
  for (int64_t c = 0; c < 3; ++c) {
    for (int64_t y = 0; y < kSide; ++y) {
      for (int64_t x = 0; x < kSide; ++x) {
        int64_t sy = y + dy - kPad, sx = (flip ? kSide - 1 - x : x) + dx - kPad;
        bool inside = sy >= 0 && sy < kSide && sx >= 0 && sx < kSide;
        float v = inside ? src[(c * kSide + sy) * kSide + sx] / 255.0f : 0.0f;
        out[(c * kSide + y) * kSide + x] = (v - 0.5f) / 0.5f;  // Normalize(0.5, 0.5)
      }
    }
  }
}

void Cifar10::checkImageInput(const std::string& feed, const TensorType& type) const {
  DS_CHECK(type.dtype == DType::F32 && type.rank() == 4 && type.shape[1] == 3 &&
               type.shape[2] == kSide && type.shape[3] == kSide,
           name(), ": input '", feed, "' must be f32[batch,3,32,32], is ", type.toString());
}

void Cifar10::batch(int64_t first, const TensorType& images_type, Tensor* images,
                    Tensor* labels) const {
  checkImageInput("(images)", images_type);
  batch(first, images_type.shape[0], images, labels);
}

void Cifar10::batch(int64_t first, int64_t count, Tensor* images, Tensor* labels) const {
  *images = Tensor({DType::F32, {count, 3, kSide, kSide}});
  *labels = Tensor({DType::I64, {count}});
  for (int64_t i = 0; i < count; ++i) {
    int64_t index = sampleAt(first + i);
    decode(index, first + i, images->as<float>().data() + i * kPixels);
    labels->as<int64_t>()[static_cast<size_t>(i)] = labels_[static_cast<size_t>(index)];
  }
}

}  // namespace ds
