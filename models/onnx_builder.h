// A small helper that emits ONNX nodes, initializers and graph inputs/outputs.
//
// The model builders (mlp.cc, resnet.cc, gpt.cc) describe networks as a sequence of
// add() calls instead of hand-filling protobuf messages; the builder keeps value
// names unique and writes every initializer as raw_data.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include <onnx/onnx_pb.h>

namespace ds {

// Attribute constructors for OnnxBuilder::add.
onnx::AttributeProto intAttr(const std::string& name, int64_t value);
onnx::AttributeProto floatAttr(const std::string& name, float value);
onnx::AttributeProto intsAttr(const std::string& name, const std::vector<int64_t>& values);

// One dimension of a graph input/output: a fixed size or a symbolic name.
struct Dim {
  int64_t size = 0;
  std::string param;                   // non-empty: symbolic dimension (dim_param)
  Dim(int64_t fixed) : size(fixed) {}  // NOLINT: implicit so {batch, 3, 32, 32} reads well
  Dim(const char* symbolic) : param(symbolic) {}  // NOLINT
};

class OnnxBuilder {
 public:
  // Starts a model at ir_version 8 importing the default domain at opset 17.
  explicit OnnxBuilder(const std::string& graph_name);

  // Declares a graph input / output with element type and shape.
  void addInput(const std::string& name, onnx::TensorProto::DataType type,
                const std::vector<Dim>& shape);
  void addOutput(const std::string& name, onnx::TensorProto::DataType type,
                 const std::vector<Dim>& shape);

  // Adds initializers stored as little-endian raw_data; returns the name.
  const std::string& addFloat(const std::string& name, const std::vector<int64_t>& dims,
                              const std::vector<float>& values);
  const std::string& addInt64(const std::string& name, const std::vector<int64_t>& dims,
                              const std::vector<int64_t>& values);

  // Adds a Constant node (a non-trainable tensor: masks, scales, shapes); returns its output.
  // Initializers are trainable parameters to the importer, so constants must not be ones.
  std::string addFloatConstant(const std::string& name, const std::vector<int64_t>& dims,
                               const std::vector<float>& values);
  std::string addInt64Constant(const std::string& name, const std::vector<int64_t>& dims,
                               const std::vector<int64_t>& values);

  // Adds a node with one output named after `name` (made unique); returns the output.
  std::string add(const std::string& op, const std::vector<std::string>& inputs,
                  const std::string& name, const std::vector<onnx::AttributeProto>& attrs = {});
  // Adds a node whose outputs are `name` + each suffix (made unique); returns them.
  std::vector<std::string> addMulti(const std::string& op, const std::vector<std::string>& inputs,
                                    const std::string& name,
                                    const std::vector<std::string>& output_suffixes,
                                    const std::vector<onnx::AttributeProto>& attrs = {});

  // Hands over the finished model; the builder is empty afterwards.
  onnx::ModelProto release();

 private:
  std::string uniqueName(const std::string& wanted);
  onnx::TensorProto* newInitializer(const std::string& name, onnx::TensorProto::DataType type,
                                    const std::vector<int64_t>& dims);

  onnx::ModelProto model_;
  std::set<std::string> used_names_;
};

// Number of elements of a tensor with these dims.
int64_t elementCount(const std::vector<int64_t>& dims);

}  // namespace ds
