// Typed node attributes: the ONNX attribute kinds the IR needs.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include "ir/tensor.h"

namespace ds {

enum class AttrKind : uint8_t { Int, Float, String, Ints, Floats, Strings, Tensor };

using Attribute = std::variant<int64_t, double, std::string, std::vector<int64_t>,
                               std::vector<double>, std::vector<std::string>, Tensor>;

// Index of each kind in the variant matches AttrKind.
inline AttrKind attrKind(const Attribute& a) {
  return static_cast<AttrKind>(a.index());
}
const char* attrKindName(AttrKind k);

// Ordered so that printing is deterministic.
using AttributeMap = std::map<std::string, Attribute>;

}  // namespace ds
