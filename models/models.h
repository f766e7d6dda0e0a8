// Public API of ds_models: builds ONNX training models (MLP, torchvision ResNets,
// GPT-2) with deterministic PyTorch-style initial weights, without Python.
//
// Every model is opset 17 (default domain), ir_version 8, with a symbolic "batch"
// axis 0 on its input and its "logits" output. Trainable parameters are the float
// initializers named *.weight / *.bias; other initializers are BatchNorm running
// statistics or constant helpers (reshape shapes, masks, position ids, scalars).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <onnx/onnx_pb.h>

namespace ds {

// Linear/ReLU stack: input "input" f32[batch, in] -> Gemm/Relu ... -> "logits".
// Parameters layers.<2i>.weight [out, in] and layers.<2i>.bias, as nn.Sequential names them.
struct MlpOptions {
  int64_t in = 784;
  std::vector<int64_t> hidden = {256, 256};
  int64_t classes = 10;
  uint64_t seed = 0;
};

enum class ResNetStem {
  kImageNet,  // 7x7/2 conv pad 3, BN, ReLU, 3x3/2 max pool pad 1
  kCifar,     // 3x3/1 conv pad 1, BN, ReLU, no pool
};

// torchvision.models.resnet<depth>(num_classes=classes) with training-mode
// BatchNormalization; input "input" f32[batch, 3, image, image].
struct ResNetOptions {
  int depth = 18;  // 18, 34 (BasicBlock), 50, 101, 152 (Bottleneck v1.5)
  ResNetStem stem = ResNetStem::kImageNet;
  int64_t classes = 10;
  int64_t image = 32;  // height = width
  uint64_t seed = 0;
};

// GPT-2 decoder with lm_head tied to wte; input "input_ids" i64[batch, seq],
// output "logits" f32[batch, seq, vocab]. Parameter names and [in, out] weight
// layout follow Hugging Face's GPT-2 state_dict (h.<i>.attn.c_attn.weight, ...).
struct GptOptions {
  int64_t layers = 12;
  int64_t d_model = 768;
  int64_t heads = 12;
  int64_t vocab = 50257;
  int64_t seq = 1024;
  uint64_t seed = 0;
};
GptOptions gptPreset(const std::string& name);  // "small" (124M) or "xl" (1.5B)

// Builders; invalid options throw ds::Error with a one-line message.
onnx::ModelProto buildMlp(const MlpOptions& options);
onnx::ModelProto buildResNet(const ResNetOptions& options);
onnx::ModelProto buildGpt(const GptOptions& options);

// Initializer bytes above which saveModel writes external data by default:
// protobuf cannot serialize a message of 2 GiB or more; leave room for the graph.
inline constexpr uint64_t kDefaultExternalDataThreshold = (uint64_t{1} << 31) - (uint64_t{1} << 27);

// Writes `model` to `path`. When its raw initializer bytes exceed
// `external_threshold`, every raw_data initializer goes to "<path>.data" instead
// (ONNX external data: location relative to the model, 4096-aligned offsets).
// Throws ds::Error (one line naming the file) when a file cannot be written.
void saveModel(const onnx::ModelProto& model, const std::string& path,
               uint64_t external_threshold = kDefaultExternalDataThreshold);
// Parses a model file; external data stays external (not loaded).
onnx::ModelProto loadModel(const std::string& path);

// True for trainable parameters: float initializers named *.weight or *.bias.
bool isParameter(const onnx::TensorProto& tensor);
// Sum of the element counts of all parameters.
int64_t countParameters(const onnx::ModelProto& model);
// Sum of raw_data bytes over all initializers.
uint64_t initializerBytes(const onnx::ModelProto& model);

}  // namespace ds
