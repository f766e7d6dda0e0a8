#include "ir/attribute.h"

namespace ds {

static_assert(std::variant_size_v<Attribute> == 7, "AttrKind must list every Attribute kind");

const char* attrKindName(AttrKind k) {
  switch (k) {
    case AttrKind::Int:
      return "int";
    case AttrKind::Float:
      return "float";
    case AttrKind::String:
      return "string";
    case AttrKind::Ints:
      return "ints";
    case AttrKind::Floats:
      return "floats";
    case AttrKind::Strings:
      return "strings";
    case AttrKind::Tensor:
      return "tensor";
  }
  return "?";
}

}  // namespace ds
