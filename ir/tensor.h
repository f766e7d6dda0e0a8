// TensorType (dtype + static shape) and Tensor, a host-memory array used for
// initialisers, constants and tensor-valued attributes.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "ir/dtype.h"
#include "ir/float16.h"

namespace ds {

using Shape = std::vector<int64_t>;

int64_t numElements(const Shape& shape);
std::string shapeToString(const Shape& shape);  // "[2,3]"

struct TensorType {
  DType dtype = DType::F32;
  Shape shape;

  int64_t rank() const { return static_cast<int64_t>(shape.size()); }
  int64_t numel() const { return numElements(shape); }
  size_t bytes() const { return static_cast<size_t>(numel()) * dtypeSize(dtype); }
  std::string toString() const;  // "f32[2,3]"
  bool operator==(const TensorType&) const = default;
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(TensorType type);  // zero-filled
  Tensor(TensorType type, std::vector<uint8_t> bytes);

  static Tensor fromInts(DType dtype, Shape shape, const std::vector<int64_t>& values);
  static Tensor fromDoubles(DType dtype, Shape shape, const std::vector<double>& values);
  static Tensor scalarInt(DType dtype, int64_t v) { return fromInts(dtype, {}, {v}); }

  const TensorType& type() const { return type_; }
  DType dtype() const { return type_.dtype; }
  const Shape& shape() const { return type_.shape; }
  int64_t numel() const { return type_.numel(); }
  size_t bytes() const { return data_.size(); }

  const uint8_t* raw() const { return data_.data(); }
  uint8_t* raw() { return data_.data(); }
  template <typename T>
  std::span<const T> as() const {
    return {reinterpret_cast<const T*>(data_.data()), data_.size() / sizeof(T)};
  }
  template <typename T>
  std::span<T> as() {
    return {reinterpret_cast<T*>(data_.data()), data_.size() / sizeof(T)};
  }

  // Element access converting from/to any dtype (f16 and bf16 included).
  double getDouble(int64_t i) const;
  int64_t getInt(int64_t i) const;
  void setDouble(int64_t i, double v);
  void setInt(int64_t i, int64_t v);
  std::vector<int64_t> toInts() const;
  std::vector<double> toDoubles() const;

  Tensor reshaped(Shape shape) const;
  Tensor castTo(DType dtype) const;
  bool operator==(const Tensor& o) const { return type_ == o.type_ && data_ == o.data_; }

 private:
  TensorType type_;
  std::vector<uint8_t> data_;
};

}  // namespace ds
