// Plan files: a versioned header (ir/plan.proto) followed by the tensor-data blob.
//
// Layout: 8-byte magic "DSPLAN\0\1", u32 format version, u64 header length, the
// serialized planpb::Plan, then the blob. Loading a plan of another version or a
// damaged file is a one-line ds::Error naming the file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ir/attribute.h"
#include "ir/plan.pb.h"
#include "ir/tensor.h"

namespace ds {

inline constexpr uint32_t kPlanFormatVersion = 1;
inline constexpr int64_t kPlanAlignment = 256;  // arena and persistent offsets

// Reused memory (device or host arena) versus memory held for the whole run.
inline bool isArena(int storage) {
  return storage == planpb::ARENA || storage == planpb::HOST_ARENA;
}
inline bool isPersistentStorage(int storage) {
  return storage == planpb::PERSISTENT || storage == planpb::HOST_PERSISTENT;
}

struct PlanFile {
  planpb::Plan plan;
  std::vector<uint8_t> blob;  // initial tensor data

  TensorType tensorType(int index) const;
  // Appends `data` to the blob as the initial value of tensor `index`.
  void setInit(int index, const Tensor& data);
  // The effective DeepSpeed config dscompile compiled with (planpb::Plan::config_json);
  // an empty object when the plan has none.
  nlohmann::json config() const;
};

// Attribute conversion between the IR and plan steps.
void toPlanAttr(const std::string& name, const Attribute& value, planpb::Attr* out);
Attribute fromPlanAttr(const planpb::Attr& attr);

void writePlanFile(const std::string& path, const PlanFile& file);
PlanFile readPlanFile(const std::string& path);

// Per tensor of `plan`: whether it is an intermediate of a run, in the (device)
// arena and neither fed nor an output, so that no one outside the backend sees its
// bytes between two steps (which a backend may lay out or fuse away:
// kernels/cpu/layout.h, kernels/cpu/fusion.h).
std::vector<bool> runIntermediates(const planpb::Plan& plan);

// A readable dump: header, memory, tensors, and each rank's steps.
std::string printPlan(const PlanFile& file, bool with_tensors = true);

}  // namespace ds
