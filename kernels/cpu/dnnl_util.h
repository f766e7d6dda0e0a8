// Shared oneDNN plumbing for the CPU kernels: one engine and stream for the
// process, memory descriptors for plain row-major f32 tensors, and DnnlCall, a
// primitive bound once to its arguments and to a scratchpad it owns, so a
// kernel's run() executes it without any allocation (the C++ execute() builds a
// std::vector per call; the C entry point with a prepared argument array does not).
#pragma once

#include <oneapi/dnnl/dnnl.hpp>

#include <utility>
#include <vector>

#include "ir/tensor.h"
#include "kernels/cpu/kernel.h"

namespace ds::cpu {

dnnl::engine& dnnlEngine();
// One in-order stream: plan steps run one after another on the host.
dnnl::stream& dnnlStream();

dnnl::memory::dims toDims(const Shape& shape);

// Convolution helpers shared by the forward and backward kernels: ONNX weights
// [O, I/g, k...] as oneDNN's grouped [g, O/g, I/g, k...]; ONNX dilations (1 = dense)
// as oneDNN's (0 = dense); an f32 descriptor whose layout oneDNN chooses.
dnnl::memory::dims weightDims(const Shape& w, int64_t group);
dnnl::memory::dims minusOne(const std::vector<int64_t>& v);
dnnl::memory::desc anyDesc(const dnnl::memory::dims& dims);
// f32 row-major (dense, last dim fastest) descriptor of `dims`.
dnnl::memory::desc plainDesc(const dnnl::memory::dims& dims);
// f32 descriptor with explicit element strides.
dnnl::memory::desc stridedDesc(const dnnl::memory::dims& dims, const dnnl::memory::dims& strides);
// Wraps caller-owned memory (never freed by oneDNN).
dnnl::memory wrapMemory(const dnnl::memory::desc& desc, const void* data);

// Attributes with the user-managed scratchpad every DnnlCall relies on.
dnnl::primitive_attr scratchpadAttr();

// Attributes with the user scratchpad and `epilogue` (KernelContext::epilogue) as
// post-ops on a destination of `dst_dims`: Relu as an eltwise post-op, Add
// as a binary post-op whose operand broadcasts along all but the last dim. The
// binary operands' memories go to `args` as (DNNL_ARG_ATTR_MULTIPLE_POST_OP(i) |
// DNNL_ARG_SRC_1, memory) for the call. Only what epilogueFitsPostOps accepts.
dnnl::primitive_attr epilogueAttr(const std::vector<Epilogue>& epilogue,
                                  const dnnl::memory::dims& dst_dims,
                                  std::vector<std::pair<int, dnnl::memory>>* args);
// Whether `next` can follow `producer`'s epilogue as a post-op on its output 0:
// Relu, or an Add of an f32 vector along the output's last dim (the post-ops that
// compute exactly what the separate kernels do).
bool epilogueFitsPostOps(const KernelContext& producer, const Epilogue& next);

// A primitive plus its bound arguments; memories are kept alive by the call.
class DnnlCall {
 public:
  DnnlCall() = default;
  // Move-only: the bound scratchpad memory points into scratch_'s buffer.
  DnnlCall(const DnnlCall&) = delete;
  DnnlCall& operator=(const DnnlCall&) = delete;
  DnnlCall(DnnlCall&&) = default;
  DnnlCall& operator=(DnnlCall&&) = default;
  // `pd` must have been created with scratchpadAttr() (or a copy of it).
  DnnlCall(dnnl::primitive prim, const dnnl::primitive_desc_base& pd);
  void arg(int which, const dnnl::memory& mem);
  bool valid() const { return static_cast<bool>(prim_); }
  void execute() const;  // runs and waits; allocation-free

 private:
  dnnl::primitive prim_;
  std::vector<dnnl::memory> mems_;
  std::vector<dnnl_exec_arg_t> args_;
  std::vector<uint8_t> scratch_;
};

// A reorder from `src` to `dst` (both owned by the call).
DnnlCall reorderCall(const dnnl::memory& src, const dnnl::memory& dst);

}  // namespace ds::cpu
