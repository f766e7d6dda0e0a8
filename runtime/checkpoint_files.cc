#include "runtime/checkpoint_files.h"

#include <fstream>
#include <iterator>

#include "ir/error.h"

namespace ds::checkpoint_files {

namespace fs = std::filesystem;

nlohmann::json shardJson(const planpb::TensorInfo& t) {
  nlohmann::json pieces = nlohmann::json::array();
  for (const planpb::ShardPiece& p : t.shard().pieces())
    pieces.push_back({{"name", p.name()},
                      {"shape", std::vector<int64_t>(p.shape().begin(), p.shape().end())},
                      {"offset", p.offset()}});
  return {{"world_size", t.shard().world_size()}, {"pieces", pieces}};
}

ShardLayout shardFromJson(const nlohmann::json& j) {
  ShardLayout layout;
  layout.world_size = j.at("world_size").get<int64_t>();
  for (const nlohmann::json& p : j.at("pieces"))
    layout.pieces.push_back({p.at("name").get<std::string>(), p.at("shape").get<Shape>(),
                             p.at("offset").get<int64_t>()});
  return layout;
}

std::string tensorsFileName(int rank, int world) {
  return world == 1 ? kTensorsFile : "tensors.rank-" + std::to_string(rank) + ".bin";
}

// The manifest's tensors files, one per saved rank.
nlohmann::json tensorsFiles(const nlohmann::json& m) {
  if (m.contains("tensors_files")) return m.at("tensors_files");
  nlohmann::json one = m.at("tensors_file");
  one["name"] = kTensorsFile;
  return nlohmann::json::array({one});
}

std::vector<uint8_t> readTensorsFile(const fs::path& dir, const nlohmann::json& file) {
  fs::path path = dir / file.value("name", "");
  std::ifstream in(path, std::ios::binary);
  DS_CHECK(in.good(), "checkpoint ", dir.string(), ": cannot read ", file.value("name", ""));
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  Fnv1a hash;
  hash.add(bytes.data(), bytes.size());
  DS_CHECK(
      bytes.size() == file.value("bytes", uint64_t{0}) && hash.hex() == file.value("fnv1a", ""),
      "checkpoint ", path.string(), ": damaged (", bytes.size(), " bytes, checksum ", hash.hex(),
      "; the manifest says ", file.value("bytes", uint64_t{0}), " bytes, ", file.value("fnv1a", ""),
      ")");
  return bytes;
}

std::vector<uint8_t> slice(const std::vector<uint8_t>& bytes, const nlohmann::json& entry,
                           const fs::path& dir) {
  auto offset = entry.value("offset", uint64_t{0}), size = entry.value("bytes", uint64_t{0});
  DS_CHECK(offset + size <= bytes.size(), "checkpoint ", dir.string(), ": tensor '",
           entry.value("name", ""), "' lies outside its file");
  return {bytes.begin() + static_cast<long>(offset),
          bytes.begin() + static_cast<long>(offset + size)};
}

}  // namespace ds::checkpoint_files
