#include "runtime/checkpoint_reshard.h"

#include <map>
#include <set>
#include <string>
#include <vector>

#include "ir/error.h"
#include "runtime/checkpoint_files.h"
#include "runtime/shards.h"

namespace ds {
namespace {

namespace fs = std::filesystem;
using namespace checkpoint_files;

// Names a one-rank plan gives a gradient accumulator: zero at every checkpoint.
bool isAccumulator(const std::string& name) {
  return name.size() > 9 && name.compare(name.size() - 9, 9, ".grad_acc") == 0;
}

// The whole tensors a checkpoint's table holds (its tensors' or their pieces' names).
std::set<std::string> savedWholeNames(const nlohmann::json& table) {
  std::set<std::string> out;
  for (const nlohmann::json& t : table) {
    if (!t.contains("shard"))
      out.insert(t.value("name", ""));
    else
      for (const ShardPiece& p : shardFromJson(t["shard"]).pieces) out.insert(p.name);
  }
  return out;
}

// Every saved rank's file put back together as whole tensors.
std::map<std::string, Tensor> wholeTensorsOf(const CheckpointInfo& info) {
  const fs::path dir(info.dir);
  std::vector<std::vector<uint8_t>> files;
  for (const nlohmann::json& f : tensorsFiles(info.manifest))
    files.push_back(readTensorsFile(dir, f));
  std::map<std::string, Tensor> whole;
  for (const nlohmann::json& entry : info.manifest.at("tensors")) {
    DS_CHECK(entry.contains("dtype"), "checkpoint ", info.dir,
             ": written by an older dsrun; it restores only into the plan that saved it");
    const auto dtype = static_cast<DType>(entry.at("dtype").get<int>());
    if (!entry.contains("shard")) {
      std::vector<uint8_t> bytes = slice(files.at(0), entry, dir);
      const size_t n = bytes.size() / dtypeSize(dtype);
      // Whole tensors keep their shape in the name table only as text; the plan
      // reshapes on restore (same element count).
      whole[entry.at("name").get<std::string>()] =
          Tensor(TensorType{dtype, {static_cast<int64_t>(n)}}, std::move(bytes));
      continue;
    }
    const ShardLayout layout = shardFromJson(entry.at("shard"));
    DS_CHECK(static_cast<int64_t>(files.size()) == layout.world_size, "checkpoint ", info.dir,
             ": tensor '", entry.value("name", ""), "' is sharded over ", layout.world_size,
             " ranks but ", files.size(), " files are saved");
    std::vector<uint8_t> flat;
    for (const std::vector<uint8_t>& file : files) {
      std::vector<uint8_t> shard = slice(file, entry, dir);
      flat.insert(flat.end(), shard.begin(), shard.end());
    }
    const auto n = static_cast<int64_t>(flat.size() / dtypeSize(dtype));
    unpackShards(layout, Tensor(TensorType{dtype, {n}}, std::move(flat)), &whole);
  }
  return whole;
}

// Whole tensor `name` as `type`: saved whole tensors come back flat. A gradient
// accumulator is zero between steps, whatever dtype another plan summed it in
// (data_types.grad_accum_dtype differs between stages 0 and 1 for bf16).
Tensor asType(const std::map<std::string, Tensor>& whole, const std::string& name,
              const TensorType& type) {
  auto it = whole.find(name);
  if (it == whole.end() || isAccumulator(name)) return Tensor(type);
  DS_CHECK(it->second.dtype() == type.dtype && it->second.numel() == type.numel(), "checkpoint: '",
           name, "' is ", it->second.type().toString(), ", the plan needs ", type.toString());
  return Tensor(type,
                std::vector<uint8_t>(it->second.raw(), it->second.raw() + it->second.bytes()));
}

}  // namespace

// A checkpoint of another world size or ZeRO stage restores through whole tensors
// when it holds every one the plan needs (accumulators excepted: zero between steps).
void checkReshardable(const fs::path& dir, const nlohmann::json& m, const PlanFile& plan) {
  const std::set<std::string> saved = savedWholeNames(m.value("tensors", nlohmann::json::array()));
  for (int i : checkpointTensors(plan))
    for (const std::string& name : wholeNames(plan.plan.tensors(i)))
      if (!saved.count(name) && !isAccumulator(name))
        throw makeError("checkpoint ", dir.string(), " (model '", m.value("model", ""),
                        "') does not fit this plan (model '", plan.plan.model(), "'): tensor '",
                        name, "' is not saved");
}

void restoreResharded(const CheckpointInfo& info, Executor& exec) {
  const std::map<std::string, Tensor> saved = wholeTensorsOf(info);
  std::map<std::string, Tensor> whole;  // shaped as the plan's pieces need them
  const PlanFile& plan = exec.plan();
  for (int i : checkpointTensors(plan)) {
    const planpb::TensorInfo& t = plan.plan.tensors(i);
    if (!isSharded(t)) {
      exec.writeTensor(i, asType(saved, t.name(), plan.tensorType(i)));
      continue;
    }
    const ShardLayout layout = shardLayoutOf(t);
    const auto dtype = static_cast<DType>(t.dtype());
    for (const ShardPiece& p : layout.pieces)
      if (saved.count(p.name)) whole[p.name] = asType(saved, p.name, {dtype, p.shape});
    exec.writeTensor(i, packShard(layout, dtype, exec.rank(), whole, /*missing_is_zero=*/true));
  }
}

}  // namespace ds
