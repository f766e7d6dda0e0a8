// Helpers shared by the tests: ONNX models from ONNX's text syntax, temp files,
// and running the project's command-line tools.
#pragma once

#include <gtest/gtest.h>
#include <onnx/defs/parser.h>
#include <onnx/onnx_pb.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace ds::test {

inline onnx::ModelProto parseOnnxText(const std::string& text) {
  onnx::ModelProto model;
  auto status = onnx::OnnxParser::Parse(model, text.c_str());
  EXPECT_TRUE(status.IsOK()) << status.ErrorMessage();
  return model;
}

inline std::string tempPath(const std::string& name) {
  auto dir = std::filesystem::path(::testing::TempDir()) / "dscompile_tests";
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

inline std::string writeModel(const onnx::ModelProto& model, const std::string& name) {
  std::string path = tempPath(name);
  std::ofstream out(path, std::ios::binary);
  model.SerializeToOstream(&out);
  return path;
}

inline void writeFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary);
  out << contents;
}

struct CommandResult {
  int exit_code;
  std::string output;  // stdout and stderr together
};

inline CommandResult runCommand(const std::string& cmd) {
  CommandResult r{-1, ""};
  FILE* pipe = popen((cmd + " 2>&1").c_str(), "r");
  if (!pipe) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) r.output.append(buf.data(), n);
  int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// The project's tools: those of this build, or of the directory the environment
// variable DS_BINARY_DIR names (bench/gpu_check.sh runs a packed build elsewhere).
inline std::string binary(const std::string& name) {
  const char* dir = std::getenv("DS_BINARY_DIR");
  return std::string(dir && *dir ? dir : DS_BINARY_DIR) + "/" + name;
}

inline bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// `text` with every `from` replaced by `to` (test graphs written as templates).
inline std::string replaceAll(std::string text, const std::string& from, const std::string& to) {
  for (size_t at = 0; (at = text.find(from, at)) != std::string::npos; at += to.size())
    text.replace(at, from.size(), to);
  return text;
}

// dsrun's training summary from "loss" on (the losses, the last lr and the gradient
// norm), to compare two runs; the whole output when it has none.
inline std::string trainedLosses(const std::string& output) {
  const size_t at = output.find("; loss ");
  return at == std::string::npos ? output : output.substr(at, output.find('\n', at) - at);
}

}  // namespace ds::test
