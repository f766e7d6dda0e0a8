// Shared layers (see layers.h).
#include "models/layers.h"

#include "models/init.h"

namespace ds {

std::string linearGemm(OnnxBuilder& builder, const std::string& x, const std::string& prefix,
                       int64_t in, int64_t out, uint64_t seed, const std::string& output) {
  const double bound = linearInitBound(in);
  const std::string weight = prefix + ".weight";
  const std::string bias = prefix + ".bias";
  builder.addFloat(weight, {out, in}, uniformValues(seed, weight, out * in, bound));
  builder.addFloat(bias, {out}, uniformValues(seed, bias, out, bound));
  return builder.add("Gemm", {x, weight, bias}, output.empty() ? prefix : output,
                     {floatAttr("alpha", 1.0f), floatAttr("beta", 1.0f), intAttr("transB", 1)});
}

}  // namespace ds
