// ResNet builder: torchvision's resnet18..152 layout, parameter names and
// initialisation, with BatchNormalization in training form as torch 1.13 exports it.
#include <array>

#include "ir/error.h"
#include "models/init.h"
#include "models/layers.h"
#include "models/models.h"

namespace ds {

namespace {

struct ResNetLayout {
  bool bottleneck;
  std::array<int, 4> blocks;  // blocks per stage (layer1..layer4)
};

ResNetLayout layoutFor(int depth) {
  switch (depth) {
    case 18:
      return {false, {2, 2, 2, 2}};
    case 34:
      return {false, {3, 4, 6, 3}};
    case 50:
      return {true, {3, 4, 6, 3}};
    case 101:
      return {true, {3, 4, 23, 3}};
    case 152:
      return {true, {3, 8, 36, 3}};
    default:
      throw makeError("resnet: depth must be 18, 34, 50, 101 or 152, got ", depth);
  }
}

// Emits the network while tracking channels and spatial size (height = width).
class ResNetEmitter {
 public:
  ResNetEmitter(OnnxBuilder& builder, const ResNetOptions& options)
      : builder_(builder), seed_(options.seed), size_(options.image) {}

  // Conv without bias, weight ~ N(0, sqrt(2 / fan_out)) (torchvision's kaiming_normal_).
  std::string conv(const std::string& x, const std::string& prefix, int64_t in, int64_t out,
                   int64_t kernel, int64_t stride, int64_t pad) {
    const std::string weight = prefix + ".weight";
    const int64_t count = out * in * kernel * kernel;
    builder_.addFloat(
        weight, {out, in, kernel, kernel},
        normalValues(seed_, weight, count, kaimingNormalFanOutStd(out * kernel * kernel)));
    size_ = (size_ + 2 * pad - kernel) / stride + 1;
    DS_CHECK(size_ >= 1, "resnet: --image is too small: '", prefix, "' has no output pixels");
    return builder_.add(
        "Conv", {x, weight}, prefix,
        {intsAttr("dilations", {1, 1}), intAttr("group", 1),
         intsAttr("kernel_shape", {kernel, kernel}), intsAttr("pads", {pad, pad, pad, pad}),
         intsAttr("strides", {stride, stride})});
  }

  // Training-mode BatchNormalization: outputs Y plus the updated running stats.
  std::string batchNorm(const std::string& x, const std::string& prefix, int64_t channels) {
    builder_.addFloat(prefix + ".weight", {channels}, constantValues(channels, 1.0f));
    builder_.addFloat(prefix + ".bias", {channels}, constantValues(channels, 0.0f));
    builder_.addFloat(prefix + ".running_mean", {channels}, constantValues(channels, 0.0f));
    builder_.addFloat(prefix + ".running_var", {channels}, constantValues(channels, 1.0f));
    const auto outputs = builder_.addMulti(
        "BatchNormalization",
        {x, prefix + ".weight", prefix + ".bias", prefix + ".running_mean",
         prefix + ".running_var"},
        prefix, {"", ".running_mean_out", ".running_var_out"},
        {floatAttr("epsilon", 1e-5f), floatAttr("momentum", 0.9f), intAttr("training_mode", 1)});
    return outputs.front();
  }

  std::string relu(const std::string& x, const std::string& name) {
    return builder_.add("Relu", {x}, name);
  }

  std::string stem(const std::string& x, ResNetStem stem) {
    const bool imagenet = stem == ResNetStem::kImageNet;
    std::string y = imagenet ? conv(x, "conv1", 3, 64, 7, 2, 3) : conv(x, "conv1", 3, 64, 3, 1, 1);
    y = relu(batchNorm(y, "bn1", 64), "relu");
    channels_ = 64;
    if (!imagenet) return y;
    size_ = (size_ + 2 - 3) / 2 + 1;
    DS_CHECK(size_ >= 1, "resnet: --image is too small for the max pool");
    return builder_.add("MaxPool", {y}, "maxpool",
                        {intAttr("ceil_mode", 0), intsAttr("kernel_shape", {3, 3}),
                         intsAttr("pads", {1, 1, 1, 1}), intsAttr("strides", {2, 2})});
  }

  // torchvision BasicBlock (expansion 1) or Bottleneck v1.5 (expansion 4, stride on the 3x3).
  std::string block(const std::string& x, const std::string& prefix, int64_t planes, int64_t stride,
                    bool bottleneck) {
    const int64_t in = channels_;
    const int64_t out = bottleneck ? planes * 4 : planes;
    const int64_t size_in = size_;
    std::string y;
    if (bottleneck) {
      y = relu(batchNorm(conv(x, prefix + ".conv1", in, planes, 1, 1, 0), prefix + ".bn1", planes),
               prefix + ".relu");
      y = conv(y, prefix + ".conv2", planes, planes, 3, stride, 1);
      y = relu(batchNorm(y, prefix + ".bn2", planes), prefix + ".relu");
      y = batchNorm(conv(y, prefix + ".conv3", planes, out, 1, 1, 0), prefix + ".bn3", out);
    } else {
      y = conv(x, prefix + ".conv1", in, planes, 3, stride, 1);
      y = relu(batchNorm(y, prefix + ".bn1", planes), prefix + ".relu");
      y = batchNorm(conv(y, prefix + ".conv2", planes, planes, 3, 1, 1), prefix + ".bn2", planes);
    }
    std::string identity = x;
    if (stride != 1 || in != out) {
      const int64_t size_out = size_;
      size_ = size_in;
      identity = conv(x, prefix + ".downsample.0", in, out, 1, stride, 0);
      identity = batchNorm(identity, prefix + ".downsample.1", out);
      DS_CHECK(size_ == size_out, "resnet: downsample size mismatch in '", prefix, "'");
    }
    channels_ = out;
    return relu(builder_.add("Add", {y, identity}, prefix + ".add"), prefix + ".relu");
  }

  int64_t channels() const { return channels_; }

 private:
  OnnxBuilder& builder_;
  uint64_t seed_;
  int64_t size_;
  int64_t channels_ = 3;
};

}  // namespace

onnx::ModelProto buildResNet(const ResNetOptions& options) {
  const ResNetLayout layout = layoutFor(options.depth);
  DS_CHECK(options.classes > 0, "resnet: --classes must be positive, got ", options.classes);
  DS_CHECK(options.image > 0, "resnet: --image must be positive, got ", options.image);
  OnnxBuilder builder("resnet" + std::to_string(options.depth));
  builder.addInput("input", onnx::TensorProto::FLOAT, {"batch", 3, options.image, options.image});
  ResNetEmitter emit(builder, options);
  std::string x = emit.stem("input", options.stem);
  for (int stage = 0; stage < 4; ++stage) {
    const int64_t planes = int64_t{64} << stage;
    for (int i = 0; i < layout.blocks[stage]; ++i) {
      const std::string prefix = "layer" + std::to_string(stage + 1) + "." + std::to_string(i);
      const int64_t stride = (stage > 0 && i == 0) ? 2 : 1;
      x = emit.block(x, prefix, planes, stride, layout.bottleneck);
    }
  }
  x = builder.add("GlobalAveragePool", {x}, "avgpool");
  x = builder.add("Flatten", {x}, "flatten", {intAttr("axis", 1)});
  linearGemm(builder, x, "fc", emit.channels(), options.classes, options.seed, "logits");
  builder.addOutput("logits", onnx::TensorProto::FLOAT, {"batch", options.classes});
  return builder.release();
}

}  // namespace ds
