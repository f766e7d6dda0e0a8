// The DeepSpeed configuration keys dscompile knows, as a tree, and the validator
// that walks a user's config against it:
//  * a key that is not a DeepSpeed key is an error with a did-you-mean suggestion;
//  * a real DeepSpeed key dscompile does not implement is a warning naming it;
//  * a value of the wrong type is an error with the key's JSON path.
// Semantics (ranges, consistency) are checked where values are read (ds_config.cc).
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ds {

// Validates `config`; returns warnings ("zero_optimization.round_robin_gradients:
// not implemented by dscompile, ignored"), throws ds::Error on errors.
std::vector<std::string> validateConfigKeys(const nlohmann::json& config);

// Levenshtein distance; exposed for tests.
size_t editDistance(const std::string& a, const std::string& b);

}  // namespace ds
