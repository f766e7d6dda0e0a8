// Layers shared by several model builders, emitted through OnnxBuilder.
#pragma once

#include <cstdint>
#include <string>

#include "models/onnx_builder.h"

namespace ds {

// nn.Linear(in, out) as Gemm(x, <prefix>.weight [out, in], <prefix>.bias, transB=1),
// initialised like PyTorch's default: weight and bias ~ U(-1/sqrt(in), 1/sqrt(in)).
// The result is named `output`, or after the prefix when that is empty.
std::string linearGemm(OnnxBuilder& builder, const std::string& x, const std::string& prefix,
                       int64_t in, int64_t out, uint64_t seed, const std::string& output = "");

}  // namespace ds
