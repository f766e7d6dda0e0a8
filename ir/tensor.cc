#include "ir/tensor.h"

#include <bit>
#include <cmath>

#include "ir/error.h"

namespace ds {

int64_t numElements(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shapeToString(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ",";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::string TensorType::toString() const {
  return std::string(dtypeName(dtype)) + shapeToString(shape);
}

Tensor::Tensor(TensorType type) : type_(std::move(type)), data_(type_.bytes(), 0) {}

Tensor::Tensor(TensorType type, std::vector<uint8_t> bytes)
    : type_(std::move(type)), data_(std::move(bytes)) {
  DS_CHECK(data_.size() == type_.bytes(), "tensor ", type_.toString(), " needs ", type_.bytes(),
           " bytes, got ", data_.size());
}

Tensor Tensor::fromInts(DType dtype, Shape shape, const std::vector<int64_t>& values) {
  Tensor t(TensorType{dtype, std::move(shape)});
  DS_CHECK(static_cast<int64_t>(values.size()) == t.numel(), "tensor ", t.type().toString(),
           " given ", values.size(), " values");
  for (size_t i = 0; i < values.size(); ++i) t.setInt(static_cast<int64_t>(i), values[i]);
  return t;
}

Tensor Tensor::fromDoubles(DType dtype, Shape shape, const std::vector<double>& values) {
  Tensor t(TensorType{dtype, std::move(shape)});
  DS_CHECK(static_cast<int64_t>(values.size()) == t.numel(), "tensor ", t.type().toString(),
           " given ", values.size(), " values");
  for (size_t i = 0; i < values.size(); ++i) t.setDouble(static_cast<int64_t>(i), values[i]);
  return t;
}

double Tensor::getDouble(int64_t i) const {
  switch (dtype()) {
    case DType::F32:
      return as<float>()[i];
    case DType::F16:
      return halfToFloat(as<uint16_t>()[i]);
    case DType::BF16:
      return bf16ToFloat(as<uint16_t>()[i]);
    case DType::F64:
      return as<double>()[i];
    case DType::I64:
      return static_cast<double>(as<int64_t>()[i]);
    case DType::I32:
      return as<int32_t>()[i];
    case DType::I8:
      return as<int8_t>()[i];
    case DType::U8:
      return as<uint8_t>()[i];
    case DType::Bool:
      return as<uint8_t>()[i] ? 1.0 : 0.0;
  }
  return 0;
}

int64_t Tensor::getInt(int64_t i) const {
  switch (dtype()) {
    case DType::I64:
      return as<int64_t>()[i];
    case DType::I32:
      return as<int32_t>()[i];
    case DType::I8:
      return as<int8_t>()[i];
    case DType::U8:
      return as<uint8_t>()[i];
    case DType::Bool:
      return as<uint8_t>()[i] ? 1 : 0;
    default:
      return static_cast<int64_t>(getDouble(i));
  }
}

void Tensor::setDouble(int64_t i, double v) {
  switch (dtype()) {
    case DType::F32:
      as<float>()[i] = static_cast<float>(v);
      return;
    case DType::F16:
      as<uint16_t>()[i] = floatToHalf(static_cast<float>(v));
      return;
    case DType::BF16:
      as<uint16_t>()[i] = floatToBf16(static_cast<float>(v));
      return;
    case DType::F64:
      as<double>()[i] = v;
      return;
    case DType::Bool:
      as<uint8_t>()[i] = v != 0.0;
      return;
    default:
      setInt(i, static_cast<int64_t>(v));
      return;
  }
}

void Tensor::setInt(int64_t i, int64_t v) {
  switch (dtype()) {
    case DType::I64:
      as<int64_t>()[i] = v;
      return;
    case DType::I32:
      as<int32_t>()[i] = static_cast<int32_t>(v);
      return;
    case DType::I8:
      as<int8_t>()[i] = static_cast<int8_t>(v);
      return;
    case DType::U8:
      as<uint8_t>()[i] = static_cast<uint8_t>(v);
      return;
    case DType::Bool:
      as<uint8_t>()[i] = v != 0;
      return;
    default:
      setDouble(i, static_cast<double>(v));
      return;
  }
}

std::vector<int64_t> Tensor::toInts() const {
  std::vector<int64_t> out(static_cast<size_t>(numel()));
  for (int64_t i = 0; i < numel(); ++i) out[i] = getInt(i);
  return out;
}

std::vector<double> Tensor::toDoubles() const {
  std::vector<double> out(static_cast<size_t>(numel()));
  for (int64_t i = 0; i < numel(); ++i) out[i] = getDouble(i);
  return out;
}

Tensor Tensor::reshaped(Shape shape) const {
  DS_CHECK(numElements(shape) == numel(), "cannot reshape ", type_.toString(), " to ",
           shapeToString(shape));
  return Tensor(TensorType{dtype(), std::move(shape)}, data_);
}

Tensor Tensor::castTo(DType to) const {
  Tensor out(TensorType{to, shape()});
  // Between f32 and 16 bits (mixed precision's copies of a model's weights): the same
  // conversions as below, a whole buffer at a time.
  const int64_t n = numel();
  const auto* from_f32 = reinterpret_cast<const float*>(raw());
  const auto* from_16 = reinterpret_cast<const uint16_t*>(raw());
  auto* to_f32 = reinterpret_cast<float*>(out.raw());
  auto* to_16 = reinterpret_cast<uint16_t*>(out.raw());
  if (dtype() == DType::F32 && to == DType::F16) {
    floatsToHalves(from_f32, to_16, n);
    return out;
  }
  if (dtype() == DType::F16 && to == DType::F32) {
    halvesToFloats(from_16, to_f32, n);
    return out;
  }
  if (dtype() == DType::F32 && to == DType::BF16) {
    for (int64_t i = 0; i < n; ++i) to_16[i] = floatToBf16(from_f32[i]);
    return out;
  }
  if (dtype() == DType::BF16 && to == DType::F32) {
    for (int64_t i = 0; i < n; ++i) to_f32[i] = bf16ToFloat(from_16[i]);
    return out;
  }
  bool exact_ints = !isFloat(to) && !isFloat(dtype());
  for (int64_t i = 0; i < numel(); ++i) {
    if (exact_ints)
      out.setInt(i, getInt(i));
    else
      out.setDouble(i, getDouble(i));
  }
  return out;
}

}  // namespace ds
