// ONNX import: ModelProto (default domain, opsets 11 to 21) to an IR Graph.
//
// The importer binds symbolic batch dimensions to the micro-batch size, turns
// ONNX's opset-dependent forms into the IR's canonical ones (axes, shapes, split
// sizes and similar constant inputs become attributes), and folds what is constant
// once shapes are bound, so graphs from torch.onnx.export come out without Shape
// arithmetic. Every failure is a ds::Error whose one line names the culprit.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "ir/graph.h"

namespace onnx {
class ModelProto;
class TensorProto;
}  // namespace onnx

namespace ds {

struct ImportOptions {
  // Value for symbolic batch dimensions (axis 0 of graph inputs); nullopt leaves
  // none allowed.
  std::optional<int64_t> batch;
  // Graph inputs supplied as compile-time constants (conformance tests, shape inputs).
  std::map<std::string, Tensor> constant_inputs;
  // Graph inputs whose name is listed here become labels rather than inputs.
  std::vector<std::string> labels;
};

// Reads and imports a model file; external data is looked up beside it.
// Parses the ONNX model file at `path` straight from the file (a large model's
// bytes are not held twice); throws naming the file (with `why` appended when it
// cannot be opened) unless it parses as an ONNX ModelProto.
onnx::ModelProto readOnnxModel(const std::string& path, const std::string& why = "");

std::unique_ptr<Graph> importOnnxFile(const std::string& path, const ImportOptions& options = {});
std::unique_ptr<Graph> importOnnxModel(const onnx::ModelProto& model, const ImportOptions& options,
                                       const std::string& base_dir, const std::string& origin);

// Converts an ONNX TensorProto (typed fields, raw_data or external data under base_dir).
Tensor tensorFromOnnx(const onnx::TensorProto& proto, const std::string& base_dir);

// The ONNX ops the importer accepts, sorted (for error messages and docs).
std::vector<std::string> supportedOnnxOps();

}  // namespace ds
