// Removes this process's scratch files (tests/training_fixtures.h: scratchName, named
// "p<pid>_...") from the test temp dir when the test program ends, so repeated runs
// (ctest starts one process per test) do not fill the disk.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

namespace ds::test {
namespace {

class ScratchCleanup : public ::testing::Environment {
 public:
  void TearDown() override {
    const std::filesystem::path dir =
        std::filesystem::path(::testing::TempDir()) / "dscompile_tests";
    const std::string mine = "p" + std::to_string(::getpid()) + "_";
    std::error_code ec;
    std::vector<std::filesystem::path> doomed;
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec))
      if (entry.path().filename().string().rfind(mine, 0) == 0) doomed.push_back(entry.path());
    for (const auto& path : doomed) std::filesystem::remove_all(path, ec);
  }
};

[[maybe_unused]] ::testing::Environment* const kScratchCleanup =
    ::testing::AddGlobalTestEnvironment(new ScratchCleanup);

}  // namespace
}  // namespace ds::test
