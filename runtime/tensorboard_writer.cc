#include "runtime/tensorboard_writer.h"

#include <isa-l/crc.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <filesystem>

#include "ir/error.h"
#include "runtime/tensorboard_event.pb.h"

namespace ds {
namespace {

double secondsSinceEpoch() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string hostName() {
  char name[HOST_NAME_MAX + 1] = {};
  return gethostname(name, sizeof name - 1) == 0 ? std::string(name) : std::string("localhost");
}

// TFRecord's length field: little-endian 64 bits.
std::string littleEndian64(uint64_t v) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return bytes;
}

std::string littleEndian32(uint32_t v) {
  return littleEndian64(v).substr(0, 4);
}

}  // namespace

uint32_t crc32c(const void* data, size_t n) {
  // ISA-L's iSCSI CRC is CRC-32C without the standard's initial and final inversion.
  uint32_t crc = 0xffffffffu;
  auto* bytes = static_cast<unsigned char*>(const_cast<void*>(data));
  for (size_t done = 0; done < n;) {
    const int chunk = static_cast<int>(std::min<size_t>(n - done, INT_MAX));
    crc = crc32_iscsi(bytes + done, chunk, crc);
    done += static_cast<size_t>(chunk);
  }
  return crc ^ 0xffffffffu;
}

uint32_t maskedCrc32c(const void* data, size_t n) {
  const uint32_t crc = crc32c(data, n);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

TensorBoardWriter::TensorBoardWriter(const std::string& directory) {
  const double now = secondsSinceEpoch();
  // PyTorch's SummaryWriter's name: seconds, host, process and a writer number, so
  // that two writers of one process never share a file.
  static std::atomic<int> writers{0};
  path_ = (std::filesystem::path(directory) /
           ("events.out.tfevents." + std::to_string(static_cast<int64_t>(now)) + "." + hostName() +
            "." + std::to_string(::getpid()) + "." + std::to_string(writers++)))
              .string();
  out_.open(path_, std::ios::binary | std::ios::app);
  DS_CHECK(out_.good(), "tensorboard: cannot write ", path_);
  tensorboard::Event version;
  version.set_wall_time(now);
  version.set_file_version("brain.Event:2");
  writeRecord(version.SerializeAsString());
}

void TensorBoardWriter::addScalar(const std::string& tag, float value, int64_t step) {
  tensorboard::Event event;
  event.set_wall_time(secondsSinceEpoch());
  event.set_step(step);
  tensorboard::SummaryValue* v = event.mutable_summary()->add_value();
  v->set_tag(tag);
  v->set_simple_value(value);
  writeRecord(event.SerializeAsString());
}

void TensorBoardWriter::writeRecord(const std::string& record) {
  const std::string length = littleEndian64(record.size());
  out_ << length << littleEndian32(maskedCrc32c(length.data(), length.size())) << record
       << littleEndian32(maskedCrc32c(record.data(), record.size()));
  out_.flush();
  DS_CHECK(out_.good(), "tensorboard: cannot write ", path_);
}

}  // namespace ds
