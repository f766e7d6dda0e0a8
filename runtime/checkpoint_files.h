// Internal to checkpoints (runtime/checkpoint.h): the tensors files and the
// manifest's tensor table entries, shared by saving, restoring and re-sharding.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ir/graph.h"
#include "ir/plan.h"

namespace ds::checkpoint_files {

inline constexpr const char* kTensorsFile = "tensors.bin";

// FNV-1a, 64 bits: detects truncated or damaged files; not a cryptographic hash.
struct Fnv1a {
  uint64_t h = 0xcbf29ce484222325ull;
  void add(const uint8_t* p, size_t n) {
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  }
  void add(const std::string& s) { add(reinterpret_cast<const uint8_t*>(s.data()), s.size()); }
  std::string hex() const {
    std::ostringstream out;
    out << std::hex << std::setw(16) << std::setfill('0') << h;
    return out.str();
  }
};

// A sharded tensor's layout in the manifest, and back.
nlohmann::json shardJson(const planpb::TensorInfo& t);
ShardLayout shardFromJson(const nlohmann::json& j);

// The tensors file of `rank` in a plan of `world` ranks.
std::string tensorsFileName(int rank, int world);

// The manifest's tensors files, one per saved rank.
nlohmann::json tensorsFiles(const nlohmann::json& manifest);

// A tensors file, checked against its size and checksum in the manifest.
std::vector<uint8_t> readTensorsFile(const std::filesystem::path& dir, const nlohmann::json& file);

// The bytes of one tensor-table entry within a tensors file.
std::vector<uint8_t> slice(const std::vector<uint8_t>& bytes, const nlohmann::json& entry,
                           const std::filesystem::path& dir);

}  // namespace ds::checkpoint_files
