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
};

// Every pass, in pipeline order.
const std::vector<PassInfo>& allPasses();
const PassInfo& findPass(const std::string& name);  // throws listing the known names

struct PassRunOptions {
  bool verify_each = true;
  std::vector<std::string> dump_after;  // pass names, or "all"
  std::ostream* dump = nullptr;
};

void runPasses(Graph& graph, const std::vector<std::string>& names, const PassRunOptions& options);

}  // namespace ds
