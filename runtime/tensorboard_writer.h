// TensorBoard event files, as TensorFlow's and PyTorch's SummaryWriter write them: a
// file events.out.tfevents.<seconds>.<host>.<pid>.<n> of TFRecord records (the
// length, a masked CRC-32C of it, an Event proto, a masked CRC-32C of that), the first
// Event naming the file version, then one Event per scalar
// (runtime/tensorboard_event.proto).
#pragma once

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>

namespace ds {

// CRC-32C (Castagnoli) of n bytes, ISA-L's; and TFRecord's masking of it.
uint32_t crc32c(const void* data, size_t n);
uint32_t maskedCrc32c(const void* data, size_t n);

class TensorBoardWriter {
 public:
  // A new event file in `directory` (which must exist); an unwritable one is an error.
  explicit TensorBoardWriter(const std::string& directory);

  // One scalar at `step`, written through to the file.
  void addScalar(const std::string& tag, float value, int64_t step);
  const std::string& path() const { return path_; }

 private:
  void writeRecord(const std::string& record);
  std::string path_;
  std::ofstream out_;
};

}  // namespace ds
