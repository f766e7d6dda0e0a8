// What every tool's main() does around its own work: parse the command line (a bad
// flag is one line "TOOL: error: ... (see --help)" and exit code 2; --help exits 0),
// then run, turning a ds::Error into one line "TOOL: error: ..." and exit code 2.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <iostream>

#include "ir/error.h"

namespace ds::tools {

// `after_parse` (may be empty) reads what parsing leaves in `app` (flag counts).
inline int runCli(const char* tool, CLI::App& app, int argc, char** argv,
                  const std::function<void()>& after_parse, const std::function<int()>& run) {
  try {
    app.parse(argc, argv);
    if (after_parse) after_parse();
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    std::cerr << tool << ": error: " << e.what() << " (see --help)\n";
    return kUserErrorExitCode;
  }
  try {
    return run();
  } catch (const Error& e) {
    std::cerr << tool << ": error: " << e.what() << "\n";
    return kUserErrorExitCode;
  }
}

}  // namespace ds::tools
