// GPT-2 builder: decoder-only transformer with causal self-attention, Erf-based
// GELU and lm_head tied to the token embedding, initialised like GPT-2/nanoGPT.
#include <cmath>
#include <numbers>

#include "ir/error.h"
#include "models/init.h"
#include "models/models.h"
#include "models/onnx_builder.h"

namespace ds {

namespace {

constexpr double kInitStd = 0.02;
constexpr float kLayerNormEpsilon = 1e-5f;
constexpr float kMaskedScore = -1e9f;  // softmax weight exp(-1e9 - max) is exactly 0

// Emits one GPT-2 model; constant helpers are Constant nodes shared by all blocks.
class GptEmitter {
 public:
  GptEmitter(OnnxBuilder& builder, const GptOptions& options)
      : b_(builder), o_(options), head_dim_(options.d_model / options.heads) {}

  void addConstants() {
    const int64_t t = o_.seq;
    std::vector<int64_t> positions(t);
    for (int64_t i = 0; i < t; ++i) positions[i] = i;
    b_.addInt64Constant("position_ids", {t}, positions);
    std::vector<float> mask(t * t, 0.0f);
    for (int64_t row = 0; row < t; ++row) {
      for (int64_t col = row + 1; col < t; ++col) mask[row * t + col] = kMaskedScore;
    }
    b_.addFloatConstant("attn.causal_mask", {t, t}, mask);
    b_.addFloatConstant("attn.scale", {}, {static_cast<float>(1.0 / std::sqrt(double(head_dim_)))});
    b_.addInt64Constant("attn.qkv_split", {3}, {o_.d_model, o_.d_model, o_.d_model});
    b_.addInt64Constant("attn.heads_shape", {4}, {0, t, o_.heads, head_dim_});
    b_.addInt64Constant("attn.merge_shape", {3}, {0, t, o_.d_model});
    b_.addFloatConstant("gelu.sqrt2", {}, {static_cast<float>(std::numbers::sqrt2)});
    b_.addFloatConstant("gelu.one", {}, {1.0f});
    b_.addFloatConstant("gelu.half", {}, {0.5f});
  }

  std::string embeddings() {
    const std::string wte = normalWeight("wte.weight", {o_.vocab, o_.d_model}, kInitStd);
    const std::string wpe = normalWeight("wpe.weight", {o_.seq, o_.d_model}, kInitStd);
    const std::string tokens = b_.add("Gather", {wte, "input_ids"}, "wte", {intAttr("axis", 0)});
    const std::string positions =
        b_.add("Gather", {wpe, "position_ids"}, "wpe", {intAttr("axis", 0)});
    return b_.add("Add", {tokens, positions}, "embeddings");
  }

  std::string block(const std::string& x, const std::string& prefix) {
    std::string h = layerNorm(x, prefix + ".ln_1");
    h = attention(h, prefix + ".attn");
    const std::string mid = b_.add("Add", {x, h}, prefix + ".residual_1");
    h = layerNorm(mid, prefix + ".ln_2");
    h = linear(h, prefix + ".mlp.c_fc", o_.d_model, 4 * o_.d_model, kInitStd);
    h = gelu(h, prefix + ".mlp.gelu");
    h = linear(h, prefix + ".mlp.c_proj", 4 * o_.d_model, o_.d_model, projectionStd());
    return b_.add("Add", {mid, h}, prefix + ".residual_2");
  }

  // Final LayerNorm and the tied lm_head: logits = x @ wte^T.
  void head(const std::string& x) {
    const std::string h = layerNorm(x, "ln_f");
    const std::string wte_t =
        b_.add("Transpose", {"wte.weight"}, "lm_head.wte_t", {intsAttr("perm", {1, 0})});
    b_.add("MatMul", {h, wte_t}, "logits");
  }

 private:
  std::string normalWeight(const std::string& name, const std::vector<int64_t>& dims, double std) {
    return b_.addFloat(name, dims, normalValues(o_.seed, name, elementCount(dims), std));
  }

  // GPT-2 Conv1D: x [.., in] @ weight [in, out] + bias (zeros).
  std::string linear(const std::string& x, const std::string& prefix, int64_t in, int64_t out,
                     double std) {
    const std::string weight = normalWeight(prefix + ".weight", {in, out}, std);
    const std::string bias = b_.addFloat(prefix + ".bias", {out}, constantValues(out, 0.0f));
    const std::string product = b_.add("MatMul", {x, weight}, prefix + ".matmul");
    return b_.add("Add", {product, bias}, prefix);
  }

  std::string layerNorm(const std::string& x, const std::string& prefix) {
    const int64_t d = o_.d_model;
    const std::string scale = b_.addFloat(prefix + ".weight", {d}, constantValues(d, 1.0f));
    const std::string bias = b_.addFloat(prefix + ".bias", {d}, constantValues(d, 0.0f));
    return b_.add("LayerNormalization", {x, scale, bias}, prefix,
                  {intAttr("axis", -1), floatAttr("epsilon", kLayerNormEpsilon)});
  }

  // Causal multi-head self-attention: [B, T, d] -> [B, T, d].
  std::string attention(const std::string& x, const std::string& prefix) {
    const int64_t d = o_.d_model;
    const std::string qkv = linear(x, prefix + ".c_attn", d, 3 * d, kInitStd);
    const auto parts = b_.addMulti("Split", {qkv, "attn.qkv_split"}, prefix + ".split",
                                   {".q", ".k", ".v"}, {intAttr("axis", 2)});
    std::vector<std::string> heads;  // q, k, v as [B, T, H, hd]
    for (const std::string& part : parts) {
      heads.push_back(b_.add("Reshape", {part, "attn.heads_shape"}, part + ".heads"));
    }
    const auto q =
        b_.add("Transpose", {heads[0]}, prefix + ".q_t", {intsAttr("perm", {0, 2, 1, 3})});
    const auto k =
        b_.add("Transpose", {heads[1]}, prefix + ".k_t", {intsAttr("perm", {0, 2, 3, 1})});
    const auto v =
        b_.add("Transpose", {heads[2]}, prefix + ".v_t", {intsAttr("perm", {0, 2, 1, 3})});
    std::string scores = b_.add("MatMul", {q, k}, prefix + ".scores");  // [B, H, T, T]
    scores = b_.add("Mul", {scores, "attn.scale"}, prefix + ".scaled");
    scores = b_.add("Add", {scores, "attn.causal_mask"}, prefix + ".masked");
    const std::string probs = b_.add("Softmax", {scores}, prefix + ".probs", {intAttr("axis", -1)});
    std::string y = b_.add("MatMul", {probs, v}, prefix + ".context");  // [B, H, T, hd]
    y = b_.add("Transpose", {y}, prefix + ".context_t", {intsAttr("perm", {0, 2, 1, 3})});
    y = b_.add("Reshape", {y, "attn.merge_shape"}, prefix + ".merged");
    return linear(y, prefix + ".c_proj", d, d, projectionStd());
  }

  // Exact GELU as torch exports it: 0.5 * x * (1 + erf(x / sqrt(2))).
  std::string gelu(const std::string& x, const std::string& prefix) {
    std::string y = b_.add("Div", {x, "gelu.sqrt2"}, prefix + ".div");
    y = b_.add("Erf", {y}, prefix + ".erf");
    y = b_.add("Add", {y, "gelu.one"}, prefix + ".add");
    y = b_.add("Mul", {x, y}, prefix + ".mul");
    return b_.add("Mul", {y, "gelu.half"}, prefix);
  }

  // Residual projections (c_proj) get std 0.02 / sqrt(2 * layers), as in GPT-2.
  double projectionStd() const { return kInitStd / std::sqrt(2.0 * double(o_.layers)); }

  OnnxBuilder& b_;
  const GptOptions& o_;
  int64_t head_dim_;
};

void checkOptions(const GptOptions& o) {
  DS_CHECK(o.layers > 0, "gpt: --layers must be positive, got ", o.layers);
  DS_CHECK(o.d_model > 0, "gpt: --d-model must be positive, got ", o.d_model);
  DS_CHECK(o.heads > 0, "gpt: --heads must be positive, got ", o.heads);
  DS_CHECK(o.d_model % o.heads == 0, "gpt: --d-model ", o.d_model, " is not a multiple of --heads ",
           o.heads);
  DS_CHECK(o.vocab > 0, "gpt: --vocab must be positive, got ", o.vocab);
  DS_CHECK(o.seq > 0, "gpt: --seq must be positive, got ", o.seq);
}

}  // namespace

GptOptions gptPreset(const std::string& name) {
  GptOptions options;  // defaults are GPT-2 small (124M)
  if (name == "small") return options;
  DS_CHECK(name == "xl", "gpt: --preset must be small or xl, got '", name, "'");
  options.layers = 48;
  options.d_model = 1600;
  options.heads = 25;
  return options;
}

onnx::ModelProto buildGpt(const GptOptions& options) {
  checkOptions(options);
  OnnxBuilder builder("gpt");
  builder.addInput("input_ids", onnx::TensorProto::INT64, {"batch", options.seq});
  GptEmitter emit(builder, options);
  emit.addConstants();
  std::string x = emit.embeddings();
  for (int64_t i = 0; i < options.layers; ++i) x = emit.block(x, "h." + std::to_string(i));
  emit.head(x);
  builder.addOutput("logits", onnx::TensorProto::FLOAT, {"batch", options.seq, options.vocab});
  return builder.release();
}

}  // namespace ds
