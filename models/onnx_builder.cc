// OnnxBuilder: protobuf plumbing for the model builders (see onnx_builder.h).
#include "models/onnx_builder.h"

#include <cstring>
#include <utility>

#include "ir/error.h"

namespace ds {

namespace {

constexpr int64_t kIrVersion = 8;
constexpr int64_t kOpsetVersion = 17;

void setValueInfo(onnx::ValueInfoProto* info, const std::string& name,
                  onnx::TensorProto::DataType type, const std::vector<Dim>& shape) {
  info->set_name(name);
  auto* tensor_type = info->mutable_type()->mutable_tensor_type();
  tensor_type->set_elem_type(type);
  auto* tensor_shape = tensor_type->mutable_shape();
  for (const Dim& dim : shape) {
    auto* out = tensor_shape->add_dim();
    if (dim.param.empty()) {
      out->set_dim_value(dim.size);
    } else {
      out->set_dim_param(dim.param);
    }
  }
}

template <typename T>
void setRawData(onnx::TensorProto* tensor, const std::vector<T>& values) {
  std::string raw(values.size() * sizeof(T), '\0');
  if (!values.empty()) std::memcpy(raw.data(), values.data(), raw.size());
  tensor->set_raw_data(std::move(raw));
}

}  // namespace

onnx::AttributeProto intAttr(const std::string& name, int64_t value) {
  onnx::AttributeProto attr;
  attr.set_name(name);
  attr.set_type(onnx::AttributeProto::INT);
  attr.set_i(value);
  return attr;
}

onnx::AttributeProto floatAttr(const std::string& name, float value) {
  onnx::AttributeProto attr;
  attr.set_name(name);
  attr.set_type(onnx::AttributeProto::FLOAT);
  attr.set_f(value);
  return attr;
}

onnx::AttributeProto intsAttr(const std::string& name, const std::vector<int64_t>& values) {
  onnx::AttributeProto attr;
  attr.set_name(name);
  attr.set_type(onnx::AttributeProto::INTS);
  for (int64_t v : values) attr.add_ints(v);
  return attr;
}

int64_t elementCount(const std::vector<int64_t>& dims) {
  int64_t count = 1;
  for (int64_t d : dims) count *= d;
  return count;
}

OnnxBuilder::OnnxBuilder(const std::string& graph_name) {
  model_.set_ir_version(kIrVersion);
  model_.set_producer_name("dsmodel");
  model_.set_producer_version("0.1.0");
  auto* opset = model_.add_opset_import();
  opset->set_domain("");
  opset->set_version(kOpsetVersion);
  model_.mutable_graph()->set_name(graph_name);
}

void OnnxBuilder::addInput(const std::string& name, onnx::TensorProto::DataType type,
                           const std::vector<Dim>& shape) {
  DS_CHECK(used_names_.insert(name).second, "duplicate value name '", name, "'");
  setValueInfo(model_.mutable_graph()->add_input(), name, type, shape);
}

void OnnxBuilder::addOutput(const std::string& name, onnx::TensorProto::DataType type,
                            const std::vector<Dim>& shape) {
  setValueInfo(model_.mutable_graph()->add_output(), name, type, shape);
}

onnx::TensorProto* OnnxBuilder::newInitializer(const std::string& name,
                                               onnx::TensorProto::DataType type,
                                               const std::vector<int64_t>& dims) {
  DS_CHECK(used_names_.insert(name).second, "duplicate initializer name '", name, "'");
  onnx::TensorProto* tensor = model_.mutable_graph()->add_initializer();
  tensor->set_name(name);
  tensor->set_data_type(type);
  for (int64_t d : dims) tensor->add_dims(d);
  return tensor;
}

const std::string& OnnxBuilder::addFloat(const std::string& name, const std::vector<int64_t>& dims,
                                         const std::vector<float>& values) {
  DS_CHECK(elementCount(dims) == static_cast<int64_t>(values.size()), "initializer '", name,
           "': ", values.size(), " values for ", elementCount(dims), " elements");
  onnx::TensorProto* tensor = newInitializer(name, onnx::TensorProto::FLOAT, dims);
  setRawData(tensor, values);
  return tensor->name();
}

const std::string& OnnxBuilder::addInt64(const std::string& name, const std::vector<int64_t>& dims,
                                         const std::vector<int64_t>& values) {
  DS_CHECK(elementCount(dims) == static_cast<int64_t>(values.size()), "initializer '", name,
           "': ", values.size(), " values for ", elementCount(dims), " elements");
  onnx::TensorProto* tensor = newInitializer(name, onnx::TensorProto::INT64, dims);
  setRawData(tensor, values);
  return tensor->name();
}

namespace {

template <typename T>
onnx::AttributeProto tensorAttr(const std::string& name, onnx::TensorProto::DataType type,
                                const std::vector<int64_t>& dims, const std::vector<T>& values) {
  DS_CHECK(elementCount(dims) == static_cast<int64_t>(values.size()), "constant '", name,
           "': ", values.size(), " values for ", elementCount(dims), " elements");
  onnx::AttributeProto attr;
  attr.set_name("value");
  attr.set_type(onnx::AttributeProto::TENSOR);
  onnx::TensorProto* tensor = attr.mutable_t();
  tensor->set_name(name);
  tensor->set_data_type(type);
  for (int64_t d : dims) tensor->add_dims(d);
  setRawData(tensor, values);
  return attr;
}

}  // namespace

std::string OnnxBuilder::addFloatConstant(const std::string& name, const std::vector<int64_t>& dims,
                                          const std::vector<float>& values) {
  return add("Constant", {}, name, {tensorAttr(name, onnx::TensorProto::FLOAT, dims, values)});
}

std::string OnnxBuilder::addInt64Constant(const std::string& name, const std::vector<int64_t>& dims,
                                          const std::vector<int64_t>& values) {
  return add("Constant", {}, name, {tensorAttr(name, onnx::TensorProto::INT64, dims, values)});
}

std::string OnnxBuilder::uniqueName(const std::string& wanted) {
  std::string name = wanted;
  for (int i = 1; used_names_.count(name) != 0; ++i) name = wanted + "_" + std::to_string(i);
  used_names_.insert(name);
  return name;
}

std::string OnnxBuilder::add(const std::string& op, const std::vector<std::string>& inputs,
                             const std::string& name,
                             const std::vector<onnx::AttributeProto>& attrs) {
  return addMulti(op, inputs, name, {""}, attrs).front();
}

std::vector<std::string> OnnxBuilder::addMulti(const std::string& op,
                                               const std::vector<std::string>& inputs,
                                               const std::string& name,
                                               const std::vector<std::string>& output_suffixes,
                                               const std::vector<onnx::AttributeProto>& attrs) {
  onnx::NodeProto* node = model_.mutable_graph()->add_node();
  node->set_op_type(op);
  for (const std::string& input : inputs) node->add_input(input);
  std::vector<std::string> outputs;
  for (const std::string& suffix : output_suffixes) {
    outputs.push_back(uniqueName(name + suffix));
    node->add_output(outputs.back());
  }
  node->set_name(outputs.front());
  for (const onnx::AttributeProto& attr : attrs) *node->add_attribute() = attr;
  return outputs;
}

onnx::ModelProto OnnxBuilder::release() {
  onnx::ModelProto out = std::move(model_);
  model_.Clear();
  used_names_.clear();
  return out;
}

}  // namespace ds
