// One error type for the compiler: a message that already names the culprit
// (file, node, op, config key path, feed name). Tools catch it at the top level,
// print the single line and exit with code 2 (kUserErrorExitCode).
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace ds {

inline constexpr int kUserErrorExitCode = 2;

class Error : public std::runtime_error {
 public:
  explicit Error(std::string message) : std::runtime_error(std::move(message)) {}
};

// Builds a message from streamable parts: throw makeError("node ", name, ": bad axis ", axis).
template <typename... Parts>
Error makeError(Parts&&... parts) {
  std::ostringstream os;
  (os << ... << std::forward<Parts>(parts));
  return Error(os.str());
}

#define DS_CHECK(cond, ...)                          \
  do {                                               \
    if (!(cond)) throw ::ds::makeError(__VA_ARGS__); \
  } while (0)

}  // namespace ds
