#include "runtime/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <map>
#include <set>
#include <sstream>
#include <tuple>
#include <utility>

#include "ir/error.h"
#include "ir/graph.h"
#include "runtime/checkpoint_files.h"
#include "runtime/checkpoint_reshard.h"
#include "runtime/comm/communicator.h"
#include "runtime/shards.h"

namespace ds {
namespace {

namespace fs = std::filesystem;
using namespace checkpoint_files;

constexpr int kFormatVersion = 1;
constexpr const char* kFormat = "dscompile-checkpoint";
constexpr const char* kManifest = "checkpoint.json";
constexpr const char* kLatest = "latest";

std::string stepName(int64_t step) {
  std::ostringstream out;
  out << "step-" << std::setw(8) << std::setfill('0') << step;
  return out.str();
}

[[noreturn]] void failIo(const std::string& what, const fs::path& path) {
  throw makeError("checkpoint: cannot ", what, " ", path.string(), ": ", std::strerror(errno));
}

// A new file written in pieces and fsynced on commit(), so a rename that follows
// publishes complete data even if the machine crashes right after.
class DurableFile {
 public:
  explicit DurableFile(fs::path path) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) failIo("create", path_);
  }
  ~DurableFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  DurableFile(const DurableFile&) = delete;
  DurableFile& operator=(const DurableFile&) = delete;

  void append(const uint8_t* p, size_t n) {
    while (n > 0) {
      ssize_t w = ::write(fd_, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) failIo("write", path_);
      p += w;
      n -= static_cast<size_t>(w);
    }
  }
  void commit() {
    int fd = std::exchange(fd_, -1);
    if (::fsync(fd) != 0) {
      int error = errno;
      ::close(fd);
      errno = error;
      failIo("sync", path_);
    }
    if (::close(fd) != 0) failIo("close", path_);
  }

 private:
  fs::path path_;
  int fd_ = -1;
};

void writeDurably(const fs::path& path, const std::string& text) {
  DurableFile file(path);
  file.append(reinterpret_cast<const uint8_t*>(text.data()), text.size());
  file.commit();
}

// Makes a rename or creation inside `dir` durable.
void syncDirectory(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) failIo("open directory", dir);
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) failIo("sync directory", dir);
}

void renameOrFail(const fs::path& from, const fs::path& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) failIo("rename " + from.string() + " to", to);
}

std::string typeString(const PlanFile& plan, int index) {
  return plan.tensorType(index).toString();
}

std::string roleString(const PlanFile& plan, int index) {
  return roleName(static_cast<Role>(plan.plan.tensors(index).role()));
}

nlohmann::json tensorTable(const PlanFile& plan) {
  nlohmann::json table = nlohmann::json::array();
  uint64_t offset = 0;
  for (int i : checkpointTensors(plan)) {
    uint64_t bytes = plan.tensorType(i).bytes();
    nlohmann::json entry = {{"name", plan.plan.tensors(i).name()},
                            {"type", typeString(plan, i)},
                            {"role", roleString(plan, i)},
                            {"dtype", plan.plan.tensors(i).dtype()},
                            {"offset", offset},
                            {"bytes", bytes}};
    if (isSharded(plan.plan.tensors(i))) entry["shard"] = shardJson(plan.plan.tensors(i));
    table.push_back(std::move(entry));
    offset += bytes;
  }
  return table;
}

nlohmann::json manifestFor(const PlanFile& plan, const TrainPosition& pos) {
  return {{"format", kFormat},
          {"version", kFormatVersion},
          {"model", plan.plan.model()},
          {"plan_fingerprint", planFingerprint(plan)},
          {"step", pos.step},
          {"samples_seen", pos.samples_seen},
          {"seed", pos.seed},
          {"skipped_steps", pos.skipped_steps},
          {"loss_scaler", pos.loss_scaler},
          {"scheduler", "none saved: the learning rate is a function of the step and the config"},
          {"config", plan.config()},
          {"tensors", tensorTable(plan)}};
}

struct TensorsFile {
  uint64_t bytes = 0, hash = 0;
  bool ok = false;
};

// Writes this rank's tensors into `tmp`, one tensor at a time so a save needs no
// second copy of the model state in memory.
TensorsFile writeTensorsFile(const fs::path& tmp, const Executor& exec) {
  const PlanFile& plan = exec.plan();
  DurableFile file(tmp / tensorsFileName(exec.rank(), std::max(1, plan.plan.world_size())));
  Fnv1a hash;
  TensorsFile out;
  for (int i : checkpointTensors(plan)) {
    Tensor t = exec.readTensor(i);
    hash.add(t.raw(), t.bytes());
    file.append(t.raw(), t.bytes());
    out.bytes += t.bytes();
  }
  file.commit();
  out.hash = hash.h;
  out.ok = true;
  return out;
}

std::string hexOf(uint64_t h) {
  Fnv1a f;
  f.h = h;
  return f.hex();
}

void writeManifest(const fs::path& tmp, const PlanFile& plan, const TrainPosition& pos,
                   const std::vector<TensorsFile>& files) {
  nlohmann::json manifest = manifestFor(plan, pos);
  nlohmann::json list = nlohmann::json::array();
  for (size_t r = 0; r < files.size(); ++r)
    list.push_back({{"name", tensorsFileName(static_cast<int>(r), static_cast<int>(files.size()))},
                    {"bytes", files[r].bytes},
                    {"fnv1a", hexOf(files[r].hash)}});
  manifest["world_size"] = files.size();
  manifest["tensors_files"] = list;
  writeDurably(tmp / kManifest, manifest.dump(1) + "\n");
  syncDirectory(tmp);
}

// Removes step directories other than `keep` and temporaries of interrupted saves.
void removeOthers(const fs::path& dir, const std::string& keep) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    std::string name = entry.path().filename().string();
    bool stale_tmp = name.rfind(".step-", 0) == 0 && entry.is_directory();
    bool old_step = name.rfind("step-", 0) == 0 && name != keep && entry.is_directory();
    if (stale_tmp || old_step) fs::remove_all(entry.path(), ec);  // best effort: already safe
  }
}

std::string readLatest(const fs::path& dir) {
  std::ifstream in(dir / kLatest);
  std::string name;
  if (!in || !std::getline(in, name)) return "";
  DS_CHECK(name.rfind("step-", 0) == 0 && name.find('/') == std::string::npos, "checkpoint ",
           dir.string(), ": ", kLatest, " names '", name, "', not a step directory");
  return name;
}

// DIR itself when it holds a manifest, else the directory DIR/latest names.
fs::path resolveCheckpoint(const std::string& dir) {
  fs::path p(dir);
  if (fs::exists(p / kManifest)) return p;
  DS_CHECK(fs::is_directory(p), "checkpoint ", dir, ": no such directory");
  std::string latest = readLatest(p);
  DS_CHECK(!latest.empty(), "checkpoint ", dir, ": holds no checkpoint (no ", kLatest, " file)");
  DS_CHECK(fs::exists(p / latest / kManifest), "checkpoint ", dir, ": ", kLatest, " names ", latest,
           ", which has no ", kManifest);
  return p / latest;
}

nlohmann::json readManifest(const fs::path& path) {
  std::ifstream in(path);
  DS_CHECK(in.good(), "checkpoint ", path.string(), ": cannot read");
  nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  DS_CHECK(!j.is_discarded() && j.is_object() && j.value("format", "") == kFormat, "checkpoint ",
           path.string(), ": not a dscompile checkpoint manifest");
  DS_CHECK(j.value("version", 0) == kFormatVersion, "checkpoint ", path.string(), ": version ",
           j.value("version", 0), " is not supported (this dsrun reads version ", kFormatVersion,
           ")");
  return j;
}

// The first difference between the checkpoint's tensor table and the plan's.
std::string firstDifference(const nlohmann::json& saved, const nlohmann::json& want) {
  for (size_t i = 0; i < std::max(saved.size(), want.size()); ++i) {
    if (i >= saved.size()) return "tensor '" + want[i].value("name", "") + "' is not saved";
    if (i >= want.size()) return "tensor '" + saved[i].value("name", "") + "' is not in the plan";
    for (const char* key : {"name", "type", "role"})
      if (saved[i].value(key, "") != want[i].value(key, ""))
        return "tensor " + std::to_string(i) + " is " + saved[i].value("name", "") + " " +
               saved[i].value("type", "") + " (" + saved[i].value("role", "") +
               ") in the checkpoint, " + want[i].value("name", "") + " " +
               want[i].value("type", "") + " (" + want[i].value("role", "") + ") in the plan";
  }
  return "the tables are equal but their fingerprints differ";
}

// The optimizer a config steps, by its state: Adam and AdamW keep the same moments.
// Empty when the config has none.
std::string optimizerFamily(const nlohmann::json& config) {
  if (!config.is_object() || !config.contains("optimizer")) return "";
  const std::string type = config["optimizer"].value("type", std::string());
  return type == "AdamW" ? "Adam" : type;
}

// Optimizer state belongs to its optimizer: Adam's exp_avg is not Lion's, though
// both carry the name.
void checkSameOptimizer(const fs::path& dir, const nlohmann::json& m, const PlanFile& plan) {
  const std::string saved = optimizerFamily(m.value("config", nlohmann::json()));
  const std::string wanted = optimizerFamily(plan.config());
  DS_CHECK(saved.empty() || wanted.empty() || saved == wanted, "checkpoint ", dir.string(),
           ": its optimizer state is ", saved, "'s and this plan steps ", wanted,
           "; resume with a plan compiled for ", saved);
}

void checkFits(const fs::path& dir, const nlohmann::json& m, const PlanFile& plan) {
  std::string fingerprint = planFingerprint(plan);
  if (m.value("plan_fingerprint", "") == fingerprint) return;
  throw makeError("checkpoint ", dir.string(), " (model '", m.value("model", ""), "', tensors ",
                  m.value("plan_fingerprint", ""), ") does not fit this plan (model '",
                  plan.plan.model(), "', tensors ", fingerprint, "): ",
                  firstDifference(m.value("tensors", nlohmann::json::array()), tensorTable(plan)));
}

}  // namespace

std::vector<int> checkpointTensors(const PlanFile& plan) {
  const planpb::Plan& p = plan.plan;
  std::vector<bool> feed(static_cast<size_t>(p.tensors_size()), false);
  for (int f : p.feeds()) feed[static_cast<size_t>(f)] = true;
  std::vector<int> out;
  std::set<std::tuple<int, int64_t, size_t>> chosen;  // storage, offset, size of those chosen
  for (int i = 0; i < p.tensors_size(); ++i) {
    const planpb::TensorInfo& t = p.tensors(i);
    auto role = static_cast<Role>(t.role());
    bool fixed = role == Role::Constant || role == Role::Input || role == Role::Label;
    if (!isPersistentStorage(t.storage()) || fixed || feed[static_cast<size_t>(i)]) continue;
    // A state update's new value lives in the state's own memory: an alias of a
    // tensor already chosen (sources come first in the table), saved once.
    if (!chosen.insert({t.storage(), t.offset(), plan.tensorType(i).bytes()}).second) continue;
    out.push_back(i);
  }
  return out;
}

std::string planFingerprint(const PlanFile& plan) {
  Fnv1a hash;
  for (int i : checkpointTensors(plan))
    hash.add(plan.plan.tensors(i).name() + "|" + typeString(plan, i) + "|" + roleString(plan, i) +
             "\n");
  return hash.hex();
}

namespace {

// Every rank learns whether every rank succeeded; a failure anywhere fails the save
// everywhere (the failing rank with its own message), so no rank hangs or commits.
void agreeOrFail(Communicator* comm, const std::string& error, const std::string& step) {
  int64_t ok = error.empty() ? 1 : 0;
  std::vector<int64_t> all(static_cast<size_t>(comm ? comm->size() : 1), ok);
  if (comm) comm->allGather(&ok, all.data(), 1, DType::I64, {"checkpoint " + step, ""});
  if (!error.empty()) throw makeError(error);
  for (size_t r = 0; r < all.size(); ++r)
    DS_CHECK(all[r] == 1, "checkpoint: rank ", r, " failed to save ", step,
             "; nothing was committed");
}

template <typename Fn>
std::string attempt(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

std::string saveCheckpoint(const std::string& dir, const Executor& exec,
                           const TrainPosition& position) {
  const PlanFile& plan = exec.plan();
  Communicator* comm = exec.communicator();
  const int world = std::max(1, plan.plan.world_size());
  const bool leader = exec.rank() == 0;
  fs::path root(dir);
  const std::string name = stepName(position.step);
  fs::path tmp = root / ("." + name + ".tmp"), final_dir = root / name;
  // 1. Rank 0 makes the temporary directory every rank writes into.
  agreeOrFail(comm, !leader ? "" : attempt([&] {
                std::error_code ec;
                fs::create_directories(root, ec);
                if (ec) throw makeError("checkpoint: cannot create ", dir, ": ", ec.message());
                DS_CHECK(readLatest(root) != name, "checkpoint ", dir, ": ", name,
                         " is the latest checkpoint already; refusing to overwrite it");
                fs::remove_all(tmp, ec);  // left by an interrupted save
                if (!fs::create_directory(tmp, ec) || ec)
                  throw makeError("checkpoint: cannot create ", tmp.string(), ": ", ec.message());
              }),
              name);
  // 2. Every rank writes its own tensors (its shards), durably.
  TensorsFile mine;
  std::string error = attempt([&] { mine = writeTensorsFile(tmp, exec); });
  std::vector<TensorsFile> files(static_cast<size_t>(world));
  uint64_t record[3] = {mine.bytes, mine.hash, mine.ok ? 1u : 0u};
  std::vector<uint64_t> records(3 * static_cast<size_t>(world));
  if (comm)
    comm->allGather(record, records.data(), 3, DType::I64, {"checkpoint " + name, ""});
  else
    std::copy(record, record + 3, records.begin());
  for (size_t r = 0; r < files.size(); ++r)
    files[r] = {records[3 * r], records[3 * r + 1], records[3 * r + 2] == 1};
  if (!error.empty()) throw makeError(error);
  for (size_t r = 0; r < files.size(); ++r)
    DS_CHECK(files[r].ok, "checkpoint: rank ", r, " failed to write its tensors for ", name);
  // 3. Rank 0 writes the manifest and commits; the others wait for the outcome.
  agreeOrFail(comm, !leader ? "" : attempt([&] {
                writeManifest(tmp, plan, position, files);
                std::error_code ec;
                fs::remove_all(final_dir,
                               ec);  // an uncommitted copy of this step: latest never named it
                renameOrFail(tmp, final_dir);
                syncDirectory(root);
                // The commit point: until this rename, DIR/latest names the previous checkpoint.
                writeDurably(root / (std::string(kLatest) + ".tmp"), name + "\n");
                renameOrFail(root / (std::string(kLatest) + ".tmp"), root / kLatest);
                syncDirectory(root);
                removeOthers(root, name);
              }),
              name);
  return final_dir.string();
}

int64_t latestCheckpointStep(const std::string& dir) {
  if (!fs::is_directory(dir)) return -1;
  std::string latest = readLatest(dir);
  return latest.empty() ? -1 : std::stoll(latest.substr(5));
}

CheckpointInfo readCheckpoint(const std::string& dir, const PlanFile& plan) {
  fs::path path = resolveCheckpoint(dir);
  nlohmann::json m = readManifest(path / kManifest);
  checkSameOptimizer(path, m, plan);
  const bool same_layout = m.value("plan_fingerprint", "") == planFingerprint(plan) &&
                           m.value("world_size", 1) == std::max(1, plan.plan.world_size());
  if (!same_layout && !m.at("tensors").empty() && m.at("tensors")[0].contains("dtype"))
    checkReshardable(path, m, plan);
  else
    checkFits(path, m, plan);
  CheckpointInfo info{path.string(), {}, m, !same_layout};
  info.position.step = m.value("step", int64_t{-1});
  info.position.samples_seen = m.value("samples_seen", int64_t{-1});
  info.position.seed = m.value("seed", uint64_t{0});
  info.position.skipped_steps = m.value("skipped_steps", int64_t{0});
  info.position.loss_scaler = m.value("loss_scaler", nlohmann::json());
  DS_CHECK(info.position.step >= 0 && info.position.samples_seen >= 0, "checkpoint ", path.string(),
           ": the manifest has no step or data position");
  return info;
}

void restoreCheckpoint(const CheckpointInfo& info, Executor& exec) {
  if (info.reshard) return restoreResharded(info, exec);
  const fs::path dir(info.dir);
  const nlohmann::json files = tensorsFiles(info.manifest);
  DS_CHECK(static_cast<int>(files.size()) > exec.rank(), "checkpoint ", info.dir,
           ": no tensors for rank ", exec.rank());
  std::vector<uint8_t> bytes = readTensorsFile(dir, files[static_cast<size_t>(exec.rank())]);
  const std::vector<int> indices = checkpointTensors(exec.plan());
  const nlohmann::json& table = info.manifest.at("tensors");
  for (size_t k = 0; k < indices.size(); ++k) {
    TensorType type = exec.plan().tensorType(indices[k]);
    std::vector<uint8_t> data = slice(bytes, table[k], dir);
    DS_CHECK(data.size() == type.bytes(), "checkpoint ", info.dir, ": tensor '",
             table[k].value("name", ""), "' has ", data.size(), " bytes, the plan needs ",
             type.bytes());
    exec.writeTensor(indices[k], Tensor(type, std::move(data)));
  }
}

}  // namespace ds
