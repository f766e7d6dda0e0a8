// Pass "add-optimizer": appends one fused optimizer step per trainable parameter.
//
// Guarantees: for every parameter p with gradient g (or, under ZeRO, every rank
// shard of parameters with its gradient shard), an SgdStep, AdamStep, LionStep,
// AdagradStep or LambStep (whole parameters only) node updates p and its optimizer state in place
// (graph state updates); the state sources (role optstate, zero-initialised) are named
// "<p>.exp_avg" / "<p>.exp_avg_sq" / "<p>.momentum_buffer" / "<p>.sum" like
// PyTorch's; the learning rate and
// the step number are scalar feeds named kLrFeed and kStepFeed, which the runtime
// sets every step from the schedule; a "grad_norm" output holds the global L2 norm
// of the gradients (before clipping, as DeepSpeed reports it). With
// gradient_clipping > 0 a ClipCoef node turns that norm into DeepSpeed's clipping
// coefficient, which every update takes as its gradient scale. With
// cycle_momentum, the momentum (SGD) or beta1 (Adam, Lion, Lamb) of each step is a scalar feed
// named kMomentumFeed. Every node the pass adds runs in the optimizer-step phase.
// Training-mode BatchNormalization running statistics are bound as state updates
// of their buffers.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "ir/graph.h"

namespace ds {

inline constexpr const char* kLrFeed = "ds.lr";
inline constexpr const char* kStepFeed = "ds.step";
inline constexpr const char* kMomentumFeed = "ds.momentum";
inline constexpr const char* kLossScaleFeed = "ds.loss_scale";

// Whether a plan feed is one the trainer sets each step (not a dataset's).
inline bool isRuntimeFeed(const std::string& name) {
  return name == kLrFeed || name == kStepFeed || name == kMomentumFeed || name == kLossScaleFeed;
}

struct OptimizerOptions {
  std::string type = "AdamW";  // SGD | Adam | AdamW | Lion | Adagrad | Lamb (DeepSpeed's names)
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  bool adam_w_mode = true;  // DeepSpeed's "Adam" decouples weight decay unless false
  bool bias_correction = true;
  double momentum = 0.0, dampening = 0.0;
  bool nesterov = false;
  double lr_decay = 0.0, initial_accumulator_value = 0.0;  // Adagrad (torch.optim's)
  bool eps_inside_sqrt = false;                            // Lamb (DeepSpeed's FusedLamb)
  double max_coeff = 10.0, min_coeff = 0.01;               // Lamb's trust-ratio bounds
  double gradient_clipping = 0.0;                          // max global L2 norm; 0: no clipping
  bool cycle_momentum = false;  // momentum / beta1 fed each step (kMomentumFeed)
};

// A tensor the optimizer steps and its gradient: a parameter, or (ZeRO) a rank's
// shard of parameters with its shard of the gradients.
struct ParamGrad {
  Value* param;
  Value* grad;
};

// The parameters of `grads` in declaration order, so plans are deterministic.
std::vector<ParamGrad> inDeclarationOrder(const Graph& graph,
                                          const std::map<Value*, Value*>& grads);

// A zero-initialised state source (role `role`) shaped like `like`, named
// "<like>.<suffix>"; when `like` is a ZeRO shard the state is sharded the same way,
// each packed tensor named "<tensor>.<suffix>", so optimizer state and gradient
// accumulators keep their per-parameter names in any layout.
Value* addStateLike(Graph& graph, Value* like, const std::string& suffix, Role role);

// fp16 loss scaling: the gradients arrive multiplied by `scale` (the kLossScaleFeed
// feed); the reported norm and the updates divide it out. With `check_overflow`
// (dynamic scaling) a non-finite global norm skips the update (runtime/loss_scaler.h).
struct LossScaling {
  Value* scale = nullptr;  // nullptr: no loss scaling (f32, bf16)
  bool check_overflow = false;
};

// Steps every update in order; returns, per updated tensor, its value after the
// step. With `shard_world_size` N > 1 the gradients are rank shards (ZeRO), so the
// global norm sums their squares over the ranks (AllReduce).
std::map<Value*, Value*> addOptimizer(Graph& graph, const std::vector<ParamGrad>& updates,
                                      const OptimizerOptions& o, int64_t shard_world_size = 1,
                                      const LossScaling& scaling = {});
inline std::map<Value*, Value*> addOptimizer(Graph& graph, const std::map<Value*, Value*>& grads,
                                             const OptimizerOptions& o) {
  return addOptimizer(graph, inDeclarationOrder(graph, grads), o);
}

// Binds the running-statistic outputs of training-mode BatchNormalization nodes to
// their buffers, so a step updates them — with PyTorch's unbiased batch variance in
// the running variance, as the exported model was trained with (ONNX's update uses
// the biased one).
void bindBatchNormStatistics(Graph& graph);

}  // namespace ds
