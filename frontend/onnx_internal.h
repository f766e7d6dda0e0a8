// Internals shared by the ONNX importer's files; not part of the frontend API.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "ir/graph.h"

namespace onnx {
class NodeProto;
class AttributeProto;
}  // namespace onnx

namespace ds {

std::optional<DType> dtypeFromOnnx(int32_t elem_type);
const char* onnxTypeName(int32_t elem_type);
Attribute attributeFromOnnx(const onnx::AttributeProto& a, const std::string& base_dir);

// One ONNX node being converted into canonical IR nodes.
struct OnnxNode {
  const onnx::NodeProto& proto;
  int64_t opset;
  Graph& graph;
  std::string name;                  // node name, or a generated one
  std::vector<Value*> inputs;        // nullptr for omitted optional inputs
  AttributeMap attrs;                // converted ONNX attributes
  std::vector<std::string> outputs;  // ONNX output names ("" when omitted)

  std::string describe() const;
  // Data of input i, which must be a compile-time constant; `what` names it in errors.
  // A float initializer read so becomes a constant (it is not trained).
  const Tensor& constantInput(size_t i, const char* what) const;
  bool hasInput(size_t i) const { return i < inputs.size() && inputs[i] != nullptr; }
  // Adds one IR node with the ONNX outputs' names; returns its outputs.
  std::vector<Value*> emit(const std::string& op, std::vector<Value*> ins, AttributeMap attrs,
                           size_t num_outputs);
};

// Converts one ONNX node; returns the IR value of each ONNX output (nullptr when unused).
using OnnxConverter = std::function<std::vector<Value*>(OnnxNode&)>;
const std::map<std::string, OnnxConverter>& onnxConverters();

}  // namespace ds
