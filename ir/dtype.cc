#include "ir/dtype.h"

#include <array>

namespace ds {
namespace {

struct DTypeInfo {
  DType type;
  std::string_view name;
  size_t size;
  bool is_float;
};

constexpr std::array<DTypeInfo, kNumDTypes> kDTypes = {{
    {DType::F32, "f32", 4, true},
    {DType::F16, "f16", 2, true},
    {DType::BF16, "bf16", 2, true},
    {DType::F64, "f64", 8, true},
    {DType::I64, "i64", 8, false},
    {DType::I32, "i32", 4, false},
    {DType::I8, "i8", 1, false},
    {DType::U8, "u8", 1, false},
    {DType::Bool, "bool", 1, false},
}};

static_assert(static_cast<int>(DType::Bool) + 1 == kNumDTypes, "kDTypes must list every DType");

constexpr const DTypeInfo& info(DType t) {
  return kDTypes[static_cast<size_t>(t)];
}

}  // namespace

std::string_view dtypeName(DType t) {
  return info(t).name;
}
size_t dtypeSize(DType t) {
  return info(t).size;
}
bool isFloat(DType t) {
  return info(t).is_float;
}
bool isInteger(DType t) {
  return !info(t).is_float && t != DType::Bool;
}

std::optional<DType> parseDType(std::string_view name) {
  for (const auto& d : kDTypes)
    if (d.name == name) return d.type;
  return std::nullopt;
}

}  // namespace ds
