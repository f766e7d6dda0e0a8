#include "ir/plan.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "ir/error.h"
#include "ir/graph.h"
#include "ir/plan_verifier.h"

namespace ds {
namespace {

constexpr char kMagic[8] = {'D', 'S', 'P', 'L', 'A', 'N', '\0', '\1'};

template <typename T>
void writeRaw(std::ostream& out, const T& v) {
  out.write(reinterpret_cast<const char*>(&v), sizeof(T));
}

template <typename T>
bool readRaw(std::istream& in, T* v) {
  return static_cast<bool>(in.read(reinterpret_cast<char*>(v), sizeof(T)));
}

void checkTensors(const PlanFile& f, const std::string& path) {
  const auto& p = f.plan;
  for (int i = 0; i < p.tensors_size(); ++i) {
    const auto& t = p.tensors(i);
    DS_CHECK(t.dtype() >= 0 && t.dtype() < kNumDTypes, path, ": damaged plan (tensor ", i,
             " has dtype ", t.dtype(), ")");
    int64_t limit = t.storage() == planpb::ARENA             ? p.arena_bytes()
                    : t.storage() == planpb::PERSISTENT      ? p.persistent_bytes()
                    : t.storage() == planpb::HOST_ARENA      ? p.host_arena_bytes()
                    : t.storage() == planpb::HOST_PERSISTENT ? p.host_persistent_bytes()
                                                             : -1;
    auto bytes = static_cast<int64_t>(f.tensorType(i).bytes());
    DS_CHECK(t.offset() >= 0 && t.offset() + bytes <= limit, path, ": damaged plan (tensor '",
             t.name(), "' lies outside its memory region)");
    DS_CHECK(!t.has_init() || (t.init_offset() + t.init_bytes() <= f.blob.size() &&
                               static_cast<int64_t>(t.init_bytes()) ==
                                   bytes * std::max(1, t.shard().world_size())),
             path, ": damaged plan (initial data of tensor '", t.name(), "' is truncated)");
  }
  for (const auto& rank : p.ranks())
    for (const auto& step : rank.steps())
      for (auto list : {&step.inputs(), &step.outputs()})
        for (int idx : *list)
          DS_CHECK(idx >= -1 && idx < p.tensors_size(), path, ": damaged plan (step '", step.node(),
                   "' names tensor ", idx, ")");
}

}  // namespace

TensorType PlanFile::tensorType(int index) const {
  const auto& t = plan.tensors(index);
  return {static_cast<DType>(t.dtype()), Shape(t.shape().begin(), t.shape().end())};
}

nlohmann::json PlanFile::config() const {
  const std::string& text = plan.config_json();
  if (text.empty()) return nlohmann::json::object();
  nlohmann::json config = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  DS_CHECK(config.is_object(), "damaged plan: its config is not a JSON object");
  return config;
}

void PlanFile::setInit(int index, const Tensor& data) {
  auto* t = plan.mutable_tensors(index);
  while (blob.size() % kPlanAlignment) blob.push_back(0);
  t->set_has_init(true);
  t->set_init_offset(blob.size());
  t->set_init_bytes(data.bytes());
  blob.insert(blob.end(), data.raw(), data.raw() + data.bytes());
}

void writePlanFile(const std::string& path, const PlanFile& file) {
  // Written beside the target and renamed, so a reader never sees half a plan.
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    DS_CHECK(out.good(), path, ": cannot write plan file");
    std::string header;
    DS_CHECK(file.plan.SerializeToString(&header), path, ": plan header too large");
    out.write(kMagic, sizeof(kMagic));
    writeRaw(out, kPlanFormatVersion);
    writeRaw(out, static_cast<uint64_t>(header.size()));
    out << header;
    out.write(reinterpret_cast<const char*>(file.blob.data()),
              static_cast<std::streamsize>(file.blob.size()));
    DS_CHECK(out.good(), path, ": write failed");
  }
  std::filesystem::rename(tmp, path);
}

PlanFile readPlanFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  DS_CHECK(in.good(), path, ": cannot open plan file");
  char magic[8];
  DS_CHECK(in.read(magic, 8) && std::memcmp(magic, kMagic, 8) == 0, path,
           ": not a dscompile plan (bad magic)");
  uint32_t version = 0;
  uint64_t header_size = 0;
  DS_CHECK(readRaw(in, &version) && readRaw(in, &header_size), path, ": damaged plan (truncated)");
  DS_CHECK(version == kPlanFormatVersion, path, ": plan format version ", version,
           " is not supported by this dsrun (version ", kPlanFormatVersion,
           "); recompile the model with this dscompile");
  auto start = in.tellg();
  in.seekg(0, std::ios::end);
  auto file_size = static_cast<uint64_t>(in.tellg());
  DS_CHECK(header_size <= file_size - static_cast<uint64_t>(start), path,
           ": damaged plan (truncated header)");
  in.seekg(start);
  std::string header(header_size, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_size));
  PlanFile f;
  DS_CHECK(f.plan.ParseFromString(header), path, ": damaged plan (header does not parse)");
  DS_CHECK(f.plan.config_json().empty() ||
               nlohmann::json::parse(f.plan.config_json(), nullptr, false).is_object(),
           path, ": damaged plan (its config is not a JSON object)");
  f.blob.resize(file_size - static_cast<uint64_t>(start) - header_size);
  in.read(reinterpret_cast<char*>(f.blob.data()), static_cast<std::streamsize>(f.blob.size()));
  DS_CHECK(in.good() || f.blob.empty(), path, ": damaged plan (truncated data)");
  checkTensors(f, path);
  try {
    verifyPlanCollectives(f);
    verifyPlanStreams(f);
    verifyPlanMemoryOrder(f);
  } catch (const Error& e) {
    throw makeError(path, ": ", e.what());
  }
  return f;
}

std::vector<bool> runIntermediates(const planpb::Plan& plan) {
  std::vector<bool> intermediate(static_cast<size_t>(plan.tensors_size()));
  for (int t = 0; t < plan.tensors_size(); ++t)
    intermediate[static_cast<size_t>(t)] = plan.tensors(t).storage() == planpb::ARENA;
  for (const auto* outside : {&plan.feeds(), &plan.outputs()})
    for (int t : *outside) intermediate[static_cast<size_t>(t)] = false;
  return intermediate;
}

}  // namespace ds
