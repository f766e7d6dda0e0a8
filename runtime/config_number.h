// A number of a DeepSpeed config, checked where it is read: the one-line errors name
// the key path. "auto" is a value the Hugging Face integration fills in from its
// trainer's arguments before DeepSpeed sees the config; dscompile has no such
// arguments, so it says which key needs a number.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "ir/error.h"

namespace ds {

inline double configNumber(const nlohmann::json& value, const std::string& key_path) {
  DS_CHECK(!(value.is_string() && value == "auto"), key_path,
           ": \"auto\" (which the Hugging Face trainer fills in from its arguments) has "
           "nothing to be filled from here; give a number");
  DS_CHECK(value.is_number(), key_path, ": must be a number, is ", value.dump());
  return value.get<double>();
}

}  // namespace ds
