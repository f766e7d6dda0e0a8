// NumPy .npy files (format versions 1-3, C order, little-endian), the exchange
// format of dsrun's --feed and --dump-outputs. The format is a short text header
// and the raw array; no Debian C++ package reads it for an arbitrary dtype.
#pragma once

#include <string>

#include "ir/tensor.h"

namespace ds {

// Throws ds::Error naming the file for anything but a C-order array of a dtype the
// IR has (f32, f64, f16, i64, i32, i8, u8, bool; bf16 has no NumPy type).
Tensor readNpy(const std::string& path);
void writeNpy(const std::string& path, const Tensor& tensor);

}  // namespace ds
