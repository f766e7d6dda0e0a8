// Registration functions of the op families; OpRegistry::instance() calls each once.
#pragma once

namespace ds {
class OpRegistry;

void registerElementwiseOps(OpRegistry& r);  // ir/ops/elementwise.cc
void registerNnOps(OpRegistry& r);           // ir/ops/nn.cc
void registerReductionOps(OpRegistry& r);    // ir/ops/reduction.cc
void registerShapeOps(OpRegistry& r);        // ir/ops/shape_ops.cc
void registerTrainingOps(OpRegistry& r);     // ir/ops/training.cc
void registerOptimizerOps(OpRegistry& r);    // ir/ops/optimizer.cc
void registerCollectiveOps(OpRegistry& r);   // ir/ops/collective.cc
void registerAttentionOps(OpRegistry& r);    // ir/ops/attention.cc

}  // namespace ds
