// Element types of IR values and their properties.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace ds {

enum class DType : uint8_t { F32, F16, BF16, F64, I64, I32, I8, U8, Bool };

inline constexpr int kNumDTypes = 9;

std::string_view dtypeName(DType t);  // "f32", "i64", ...
std::optional<DType> parseDType(std::string_view name);
size_t dtypeSize(DType t);
bool isFloat(DType t);
bool isInteger(DType t);  // signed or unsigned integers, not bool

}  // namespace ds
