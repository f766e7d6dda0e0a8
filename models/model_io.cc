// Saving and loading models, with ONNX external data for models over protobuf's
// 2 GiB limit, and parameter accounting (see models.h).
#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "ir/error.h"
#include "models/models.h"

namespace ds {

namespace {

constexpr uint64_t kExternalAlignment = 4096;

std::string ioError() {
  return errno != 0 ? std::strerror(errno) : "I/O error";
}

std::ofstream openForWriting(const std::string& path) {
  errno = 0;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  DS_CHECK(out.good(), "cannot write '", path, "': ", ioError());
  return out;
}

void addExternalEntry(onnx::TensorProto* tensor, const std::string& key, const std::string& value) {
  auto* entry = tensor->add_external_data();
  entry->set_key(key);
  entry->set_value(value);
}

// The graph without its initializers (which the caller re-adds as it sees fit).
onnx::GraphProto graphWithoutInitializers(const onnx::GraphProto& graph) {
  onnx::GraphProto out;
  out.set_name(graph.name());
  out.set_doc_string(graph.doc_string());
  *out.mutable_node() = graph.node();
  *out.mutable_sparse_initializer() = graph.sparse_initializer();
  *out.mutable_input() = graph.input();
  *out.mutable_output() = graph.output();
  *out.mutable_value_info() = graph.value_info();
  *out.mutable_quantization_annotation() = graph.quantization_annotation();
  return out;
}

// The model with every field but the graph's initializers copied.
onnx::ModelProto modelWithoutInitializers(const onnx::ModelProto& model) {
  onnx::ModelProto out;
  out.set_ir_version(model.ir_version());
  *out.mutable_opset_import() = model.opset_import();
  out.set_producer_name(model.producer_name());
  out.set_producer_version(model.producer_version());
  out.set_domain(model.domain());
  out.set_model_version(model.model_version());
  out.set_doc_string(model.doc_string());
  *out.mutable_metadata_props() = model.metadata_props();
  *out.mutable_training_info() = model.training_info();
  *out.mutable_functions() = model.functions();
  *out.mutable_graph() = graphWithoutInitializers(model.graph());
  return out;
}

void writeProto(const onnx::ModelProto& model, const std::string& path) {
  const size_t size = model.ByteSizeLong();
  DS_CHECK(size < static_cast<size_t>(INT_MAX), "cannot write '", path, "': the model is ", size,
           " bytes, over protobuf's 2 GiB limit; lower the external data threshold");
  std::ofstream out = openForWriting(path);
  errno = 0;
  DS_CHECK(model.SerializeToOstream(&out) && out.flush().good(), "cannot write '", path,
           "': ", ioError());
}

// Moves the raw_data of every initializer into `data_path`; returns the slimmed model.
onnx::ModelProto writeExternalData(const onnx::ModelProto& model, const std::string& data_path,
                                   const std::string& location) {
  onnx::ModelProto header = modelWithoutInitializers(model);
  std::ofstream data = openForWriting(data_path);
  uint64_t offset = 0;
  const std::string padding(kExternalAlignment, '\0');
  for (const onnx::TensorProto& tensor : model.graph().initializer()) {
    onnx::TensorProto* slim = header.mutable_graph()->add_initializer();
    if (!tensor.has_raw_data()) {  // typed-field tensors stay inline
      *slim = tensor;
      continue;
    }
    slim->set_name(tensor.name());
    slim->set_data_type(tensor.data_type());
    *slim->mutable_dims() = tensor.dims();
    slim->set_doc_string(tensor.doc_string());
    const uint64_t aligned =
        (offset + kExternalAlignment - 1) / kExternalAlignment * kExternalAlignment;
    data.write(padding.data(), static_cast<std::streamsize>(aligned - offset));
    const std::string& raw = tensor.raw_data();
    data.write(raw.data(), static_cast<std::streamsize>(raw.size()));
    slim->set_data_location(onnx::TensorProto::EXTERNAL);
    addExternalEntry(slim, "location", location);
    addExternalEntry(slim, "offset", std::to_string(aligned));
    addExternalEntry(slim, "length", std::to_string(raw.size()));
    offset = aligned + raw.size();
  }
  errno = 0;
  DS_CHECK(data.flush().good(), "cannot write '", data_path, "': ", ioError());
  return header;
}

}  // namespace

void saveModel(const onnx::ModelProto& model, const std::string& path,
               uint64_t external_threshold) {
  if (initializerBytes(model) <= external_threshold) {
    writeProto(model, path);
    return;
  }
  const std::string data_path = path + ".data";
  const std::string location = std::filesystem::path(data_path).filename().string();
  // Probe the model path first so an unwritable destination fails before the big write.
  openForWriting(path);
  writeProto(writeExternalData(model, data_path, location), path);
}

onnx::ModelProto loadModel(const std::string& path) {
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  DS_CHECK(in.good(), "cannot read '", path, "': ", ioError());
  onnx::ModelProto model;
  DS_CHECK(model.ParseFromIstream(&in), "'", path, "' is not a valid ONNX model");
  return model;
}

bool isParameter(const onnx::TensorProto& tensor) {
  if (tensor.data_type() != onnx::TensorProto::FLOAT) return false;
  const std::string& name = tensor.name();
  return name.ends_with(".weight") || name.ends_with(".bias");
}

int64_t countParameters(const onnx::ModelProto& model) {
  int64_t total = 0;
  for (const onnx::TensorProto& tensor : model.graph().initializer()) {
    if (!isParameter(tensor)) continue;
    int64_t count = 1;
    for (int64_t d : tensor.dims()) count *= d;
    total += count;
  }
  return total;
}

uint64_t initializerBytes(const onnx::ModelProto& model) {
  uint64_t total = 0;
  for (const onnx::TensorProto& tensor : model.graph().initializer()) {
    total += tensor.raw_data().size();
  }
  return total;
}

}  // namespace ds
