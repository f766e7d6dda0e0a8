#include "frontend/onnx_export.h"

#include <onnx/onnx_pb.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <string_view>

#include "frontend/onnx_import.h"
#include "frontend/onnx_internal.h"
#include "ir/error.h"
#include "ir/graph.h"
#include "runtime/shards.h"

namespace ds {
namespace {

// Plan tensors whose values training changes and the ONNX file holds as
// initializers: parameters (whole or ZeRO shards of them) and buffers.
constexpr std::string_view kMasterSuffix = ".master";

std::vector<int> trainedTensors(const PlanFile& plan) {
  std::vector<int> out;
  for (int i = 0; i < plan.plan.tensors_size(); ++i) {
    auto role = static_cast<Role>(plan.plan.tensors(i).role());
    if (role == Role::Parameter || role == Role::Buffer) out.push_back(i);
  }
  return out;
}

// The f32 master copies of 16-bit parameters (optimizer state named
// "<parameter>.master", whole or ZeRO shards): exported in place of the 16-bit
// working copies, as DeepSpeed's zero_to_fp32 exports the fp32 master weights.
std::vector<int> masterCopies(const PlanFile& plan) {
  std::vector<int> out;
  for (int i = 0; i < plan.plan.tensors_size(); ++i) {
    const planpb::TensorInfo& t = plan.plan.tensors(i);
    if (static_cast<Role>(t.role()) != Role::OptimizerState) continue;
    const std::vector<std::string> names = wholeNames(t);
    if (!names.empty() && names.front().ends_with(kMasterSuffix)) out.push_back(i);
  }
  return out;
}

// The initializer names those tensors hold.
std::set<std::string> trainedNames(const PlanFile& plan) {
  std::set<std::string> out;
  for (int i : trainedTensors(plan))
    for (const std::string& name : wholeNames(plan.plan.tensors(i))) out.insert(name);
  return out;
}

// Replaces whatever form the initializer's value had (typed fields, external
// data) by little-endian raw_data, the form every ONNX reader accepts.
void setRawData(onnx::TensorProto* init, const uint8_t* data, size_t bytes) {
  onnx::TensorProto replaced;
  replaced.set_name(init->name());
  replaced.set_data_type(init->data_type());
  *replaced.mutable_dims() = init->dims();
  if (bytes > 0) replaced.set_raw_data(data, bytes);
  *init = std::move(replaced);
}

// The embedded model, or the file plan.model names for plans compiled without one.
onnx::ModelProto sourceModel(const PlanFile& plan) {
  const planpb::Plan& p = plan.plan;
  if (p.onnx_bytes() == 0)
    return readOnnxModel(p.model(),
                         " (the plan embeds no ONNX model, so --export-onnx re-reads the model "
                         "it was compiled from; recompile the plan)");
  DS_CHECK(p.onnx_offset() + p.onnx_bytes() <= plan.blob.size(),
           "damaged plan: the embedded ONNX model lies outside the blob");
  onnx::ModelProto model;
  DS_CHECK(p.onnx_bytes() <= static_cast<uint64_t>(std::numeric_limits<int>::max()) &&
               model.ParseFromArray(plan.blob.data() + p.onnx_offset(),
                                    static_cast<int>(p.onnx_bytes())) &&
               model.has_graph(),
           "the plan's embedded model of ", p.model(),
           ": not an ONNX model (the bytes do not parse as an ONNX ModelProto)");
  return model;
}

void writeAtomically(const std::string& path, const onnx::ModelProto& model) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    DS_CHECK(out.good(), "--export-onnx ", path, ": cannot write file");
    DS_CHECK(model.SerializeToOstream(&out) && out.flush().good(), "--export-onnx ", path,
             ": write failed (disk full?)");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  DS_CHECK(!ec, "--export-onnx ", path, ": cannot rename ", tmp, ": ", ec.message());
}

}  // namespace

void embedOnnxModel(const std::string& model_path, PlanFile* plan) {
  onnx::ModelProto model = readOnnxModel(model_path);
  std::string base_dir = std::filesystem::path(model_path).parent_path().string();
  const std::set<std::string> trained = trainedNames(*plan);
  for (onnx::TensorProto& init : *model.mutable_graph()->mutable_initializer()) {
    if (trained.count(init.name())) {
      setRawData(&init, nullptr, 0);  // the plan's initial data holds the value
    } else if (init.data_location() == onnx::TensorProto::EXTERNAL) {
      Tensor t = tensorFromOnnx(init, base_dir.empty() ? "." : base_dir);
      setRawData(&init, t.raw(), t.bytes());  // self-contained: no file beside the plan
    }
  }
  std::string bytes;
  DS_CHECK(model.SerializeToString(&bytes), model_path,
           ": the model is too large to embed in the plan");
  while (plan->blob.size() % kPlanAlignment) plan->blob.push_back(0);
  plan->blob.reserve(plan->blob.size() + bytes.size());  // no more than it needs
  plan->plan.set_onnx_offset(plan->blob.size());
  plan->plan.set_onnx_bytes(bytes.size());
  plan->blob.insert(plan->blob.end(), bytes.begin(), bytes.end());
}

void checkOnnxExportable(const PlanFile& plan) {
  sourceModel(plan);
}

void exportOnnx(const Executor& exec, const std::string& out_path) {
  const PlanFile& plan = exec.plan();
  std::map<std::string, Tensor> trained = gatherWholeTensors(exec, trainedTensors(plan));
  std::map<std::string, Tensor> masters = gatherWholeTensors(exec, masterCopies(plan));
  if (exec.rank() != 0) return;
  onnx::ModelProto model = sourceModel(plan);
  for (onnx::TensorProto& init : *model.mutable_graph()->mutable_initializer()) {
    auto it = trained.find(init.name());
    if (it == trained.end()) continue;
    auto master = masters.find(init.name() + std::string(kMasterSuffix));
    const Tensor& value = master != masters.end() ? master->second : it->second;
    Shape dims(init.dims().begin(), init.dims().end());
    DS_CHECK(dims == value.shape(), "--export-onnx: initializer '", init.name(), "' has shape ",
             shapeToString(dims), " but the plan's tensor is ", value.type().toString());
    // The file keeps the model's own element types (a 16-bit plan trains f32 ones).
    const std::optional<DType> declared = dtypeFromOnnx(init.data_type());
    DS_CHECK(declared.has_value(), "--export-onnx: initializer '", init.name(),
             "' has an element type dscompile does not know");
    const Tensor typed = value.dtype() == *declared ? value : value.castTo(*declared);
    setRawData(&init, typed.raw(), typed.bytes());
    trained.erase(it);
  }
  DS_CHECK(trained.empty(), "--export-onnx: plan tensor '",
           trained.empty() ? "" : trained.begin()->first,
           "' (a parameter or buffer) is not an initializer of the ONNX model, so its trained "
           "value would be lost");
  writeAtomically(out_path, model);
}

}  // namespace ds
