// MLP builder: Gemm/Relu stack with nn.Sequential parameter names (see models.h).
#include "ir/error.h"
#include "models/layers.h"
#include "models/models.h"

namespace ds {

onnx::ModelProto buildMlp(const MlpOptions& options) {
  DS_CHECK(options.in > 0, "mlp: --in must be positive, got ", options.in);
  DS_CHECK(options.classes > 0, "mlp: --classes must be positive, got ", options.classes);
  for (int64_t width : options.hidden) {
    DS_CHECK(width > 0, "mlp: --hidden widths must be positive, got ", width);
  }
  OnnxBuilder builder("mlp");
  builder.addInput("input", onnx::TensorProto::FLOAT, {"batch", options.in});
  std::string x = "input";
  int64_t width = options.in;
  int layer = 0;  // index in nn.Sequential: Linear, ReLU, Linear, ReLU, ..., Linear
  for (int64_t hidden : options.hidden) {
    const std::string prefix = "layers." + std::to_string(layer);
    x = linearGemm(builder, x, prefix, width, hidden, options.seed);
    x = builder.add("Relu", {x}, "layers." + std::to_string(layer + 1));
    width = hidden;
    layer += 2;
  }
  const std::string prefix = "layers." + std::to_string(layer);
  linearGemm(builder, x, prefix, width, options.classes, options.seed, "logits");
  builder.addOutput("logits", onnx::TensorProto::FLOAT, {"batch", options.classes});
  return builder.release();
}

}  // namespace ds
