#include "passes/pipeline.h"

#include <algorithm>

#include "ir/error.h"
#include "ir/text.h"
#include "ir/verifier.h"
#include "passes/dead_code.h"
#include "passes/fold_constants.h"
#include "passes/fold_scale.h"
#include "passes/fold_softmax_mask.h"
#include "passes/fold_transpose.h"
#include "passes/fuse_attention.h"
#include "passes/fuse_bias_grad.h"
#include "passes/fuse_gelu.h"
#include "passes/fuse_layer_norm.h"
#include "passes/fuse_loss_padding.h"
#include "passes/fuse_optimizer_casts.h"
#include "passes/fuse_relu_grad.h"
#include "passes/pack_attention.h"
#include "passes/pad_products.h"

namespace ds {

const std::vector<PassInfo>& allPasses() {
  static const std::vector<PassInfo> passes = {
      {"fold-constants", "evaluate nodes whose inputs are all compile-time constants",
       foldConstants, false},
      {"fold-transpose", "make last-two-dim Transposes of MatMul operands transA/transB",
       foldTransposeIntoMatMul, true},
      {"fold-scale", "make a constant scalar Mul/Div of a MatMul's output the MatMul's alpha",
       foldScaleIntoMatMul, true},
      {"fold-softmax-mask",
       "make a constant mask added (or filled in) before a Softmax its mask input",
       foldMaskIntoSoftmax, true},
      {"fuse-gelu", "make the elementwise GELU chains exporters write one Gelu op", fuseGelu, true},
      {"fuse-layer-norm",
       "make the element-wise layer norm exporters write below opset 17 one LayerNormalization",
       fuseLayerNorm, true},
      {"fuse-attention",
       "make MatMul -> Softmax -> MatMul attention between head transposes one FusedAttention",
       fuseAttention, true},
      {"dead-code", "remove nodes and sources that nothing uses", eliminateDeadCode, false},
      {"pack-attention",
       "make a FusedAttention whose Q, K and V are one projection split in three read that "
       "projection packed (no Split, no Concat in its gradient)",
       packAttention, true},
      // Training passes (frontend/compile.cc runs them within addTraining).
      {"pad-products",
       "pad a 16-bit MatMul's rows to a multiple of 64 columns when they are not 16-byte "
       "aligned (GPT-2's vocabulary), slicing the output back",
       padProducts, true},
      {"fuse-loss-padding",
       "make a cross-entropy loss over pad-products' sliced logits read the padded ones "
       "(no SliceGrad)",
       fuseLossPadding, true},
      {"fuse-relu-grad",
       "make a BatchNormalizationGrad apply the gradient of the Relu after its BatchNorm",
       fuseReluIntoBatchNormGrad, true},
      {"fuse-bias-grad",
       "make a linear layer's weight-gradient product and bias-gradient sum over the same "
       "gradient one WeightBiasGrad (the bias summed in the product's epilogue on a GPU)",
       fuseBiasGrad, true},
      {"fuse-optimizer-casts",
       "make mixed precision's optimizer steps read 16-bit gradients and write the rounded "
       "16-bit parameters themselves",
       fuseOptimizerCasts, true},
  };
  return passes;
}

const PassInfo& findPass(const std::string& name) {
  for (const PassInfo& p : allPasses())
    if (name == p.name) return p;
  std::string known;
  for (const PassInfo& p : allPasses()) known += std::string(known.empty() ? "" : ", ") + p.name;
  throw makeError("unknown pass '", name, "' (passes: ", known, ")");
}

void checkDisabledPasses(const std::vector<std::string>& names) {
  for (const std::string& name : names)
    DS_CHECK(findPass(name).optional, "--disable-pass: '", name,
             "' is not an optimisation and always runs");
}

void runPasses(Graph& graph, const std::vector<std::string>& names, const PassRunOptions& options) {
  for (const std::string& name : names) {
    const PassInfo& pass = findPass(name);
    const auto& off = options.disabled;
    if (std::find(off.begin(), off.end(), name) != off.end()) continue;
    pass.run(graph);
    if (options.verify_each) {
      try {
        verifyGraph(graph);
      } catch (const Error& e) {
        throw makeError("after pass '", name, "': ", e.what());
      }
    }
    const auto& dumps = options.dump_after;
    bool dump = std::find(dumps.begin(), dumps.end(), name) != dumps.end() ||
                std::find(dumps.begin(), dumps.end(), "all") != dumps.end();
    if (dump && options.dump) *options.dump << "// after " << name << "\n" << printGraph(graph);
  }
}

}  // namespace ds
