// ONNX TensorProto and element-type conversion: typed fields, raw_data and
// external data files beside the model.
#include <onnx/onnx_pb.h>

#include <filesystem>
#include <fstream>

#include "frontend/onnx_import.h"
#include "frontend/onnx_internal.h"
#include "ir/error.h"

namespace ds {

std::optional<DType> dtypeFromOnnx(int32_t elem_type) {
  switch (elem_type) {
    case onnx::TensorProto::FLOAT:
      return DType::F32;
    case onnx::TensorProto::FLOAT16:
      return DType::F16;
    case onnx::TensorProto::BFLOAT16:
      return DType::BF16;
    case onnx::TensorProto::DOUBLE:
      return DType::F64;
    case onnx::TensorProto::INT64:
      return DType::I64;
    case onnx::TensorProto::INT32:
      return DType::I32;
    case onnx::TensorProto::INT8:
      return DType::I8;
    case onnx::TensorProto::UINT8:
      return DType::U8;
    case onnx::TensorProto::BOOL:
      return DType::Bool;
    default:
      return std::nullopt;
  }
}

const char* onnxTypeName(int32_t elem_type) {
  return onnx::TensorProto::DataType_IsValid(elem_type)
             ? onnx::TensorProto::DataType_Name(static_cast<onnx::TensorProto::DataType>(elem_type))
                   .c_str()
             : "INVALID";
}

namespace {

// Guards allocations against corrupt dims: 2^40 elements is far beyond any model.
constexpr int64_t kMaxElements = int64_t{1} << 40;

std::vector<uint8_t> readExternal(const onnx::TensorProto& p, const std::string& base_dir) {
  std::string location;
  int64_t offset = 0, length = -1;
  for (const auto& kv : p.external_data()) {
    if (kv.key() == "location") location = kv.value();
    if (kv.key() == "offset") offset = std::stoll(kv.value());
    if (kv.key() == "length") length = std::stoll(kv.value());
  }
  DS_CHECK(!location.empty(), "tensor '", p.name(), "': external data without a location");
  std::filesystem::path path = std::filesystem::path(base_dir) / location;
  std::ifstream in(path, std::ios::binary);
  DS_CHECK(in.good(), "tensor '", p.name(), "': external data file '", path.string(),
           "' not found");
  in.seekg(0, std::ios::end);
  auto file_size = static_cast<int64_t>(in.tellg());
  if (length < 0) length = file_size - offset;
  DS_CHECK(offset >= 0 && offset + length <= file_size, "tensor '", p.name(),
           "': external data file '", path.string(), "' is ", file_size,
           " bytes, too short for offset ", offset, " + length ", length);
  DS_CHECK(length == static_cast<int64_t>(dtypeSize(*dtypeFromOnnx(p.data_type()))) *
                         numElements(Shape(p.dims().begin(), p.dims().end())),
           "tensor '", p.name(), "': external data length ", length, " does not match its shape");
  std::vector<uint8_t> bytes(static_cast<size_t>(length));
  in.seekg(offset);
  in.read(reinterpret_cast<char*>(bytes.data()), length);
  return bytes;
}

template <typename Field>
void copyTyped(Tensor& t, const Field& field, bool as_int) {
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (as_int)
      t.setInt(i, static_cast<int64_t>(field.Get(static_cast<int>(i))));
    else
      t.setDouble(i, static_cast<double>(field.Get(static_cast<int>(i))));
  }
}

}  // namespace

Tensor tensorFromOnnx(const onnx::TensorProto& p, const std::string& base_dir) {
  auto dtype = dtypeFromOnnx(p.data_type());
  DS_CHECK(dtype.has_value(), "tensor '", p.name(), "': element type ", onnxTypeName(p.data_type()),
           " is not supported");
  TensorType type{*dtype, Shape(p.dims().begin(), p.dims().end())};
  int64_t numel = 1;
  for (int64_t d : type.shape) {
    DS_CHECK(d >= 0 && (d == 0 || numel <= kMaxElements / d), "tensor '", p.name(),
             "' has an invalid shape ", shapeToString(type.shape));
    numel *= d;
  }
  std::vector<uint8_t> bytes;
  if (p.data_location() == onnx::TensorProto::EXTERNAL) {
    bytes = readExternal(p, base_dir);
  } else if (p.has_raw_data()) {
    bytes.assign(p.raw_data().begin(), p.raw_data().end());
  } else {
    int typed_count =
        p.float_data_size() + p.double_data_size() + p.int64_data_size() + p.int32_data_size();
    DS_CHECK(typed_count == numel, "tensor '", p.name(), "' ", type.toString(), " holds ",
             typed_count, " values");
    Tensor t(type);
    auto expect = [&](int size) {
      DS_CHECK(size == t.numel(), "tensor '", p.name(), "' ", type.toString(),
               " holds its values in the wrong field for its type");
    };
    if (*dtype == DType::F32) {
      expect(p.float_data_size());
      copyTyped(t, p.float_data(), false);
    } else if (*dtype == DType::F64) {
      expect(p.double_data_size());
      copyTyped(t, p.double_data(), false);
    } else if (*dtype == DType::I64) {
      expect(p.int64_data_size());
      copyTyped(t, p.int64_data(), true);
    } else if (*dtype == DType::F16 || *dtype == DType::BF16) {
      expect(p.int32_data_size());  // bit patterns, one per int32
      for (int64_t i = 0; i < t.numel(); ++i)
        t.as<uint16_t>()[i] = static_cast<uint16_t>(p.int32_data(static_cast<int>(i)));
    } else {
      expect(p.int32_data_size());
      copyTyped(t, p.int32_data(), true);
    }
    return t;
  }
  DS_CHECK(bytes.size() == type.bytes(), "tensor '", p.name(), "' ", type.toString(), " needs ",
           type.bytes(), " bytes, has ", bytes.size());
  return Tensor(type, std::move(bytes));
}

}  // namespace ds
