// Named graph passes and the runner that applies them in order, verifying after
// each one (always in tests) and dumping the IR after the ones asked for.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "ir/graph.h"

namespace ds {

struct PassInfo {
  const char* name;     // kebab-case; a --dump-after token
  const char* summary;  // one line for --help
  bool (*run)(Graph&);  // returns whether the graph changed
  bool optional;        // an optimisation --disable-pass may skip
};

// Every pass in pipeline order: the clean-up passes, then the training passes
// (frontend/compile.cc runs these within addTraining, mixed precision and autodiff
// between them).
const std::vector<PassInfo>& allPasses();
const PassInfo& findPass(const std::string& name);  // throws listing the known names
// Checks --disable-pass names: known, optional passes.
void checkDisabledPasses(const std::vector<std::string>& names);

struct PassRunOptions {
  bool verify_each = true;
  std::vector<std::string> dump_after;  // pass names, or "all"
  std::vector<std::string> disabled;    // passes skipped (dscompile --disable-pass)
  std::ostream* dump = nullptr;
};

void runPasses(Graph& graph, const std::vector<std::string>& names, const PassRunOptions& options);

}  // namespace ds
