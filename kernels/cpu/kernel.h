// The CPU kernel interface. A plan step names an op, its attributes (every schema
// default filled in by lowering, so a plan is self-contained) and its input and
// output tensors; the CPU backend builds one CpuKernel per step when the plan is
// loaded (shapes are static, so kernels may precompute and cache — oneDNN
// primitives, index tables) and runs it every step without allocating.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ir/attribute.h"
#include "ir/error.h"
#include "ir/tensor.h"

namespace ds {
class Communicator;        // runtime/comm/communicator.h
class DeviceCommunicator;  // runtime/comm/device_communicator.h
}  // namespace ds

namespace ds::cpu {

// A tensor in the arena, in persistent storage or a feed: non-owning.
struct TensorView {
  void* data = nullptr;  // nullptr: an absent optional input
  TensorType type;
  // The same bytes in every run of the plan (weights no step writes): a kernel may
  // prepare them once, e.g. pack them into a faster layout at its first run.
  bool constant = false;
  // A 4-D [N, C, H, W] tensor stored in [N, H, W, C] order (channels-last); the
  // shape stays the logical NCHW one. Set only on operands the step's kernel
  // declared it accepts (ChannelsLastRule), by the executor's layout choice
  // (kernels/cpu/layout.h).
  bool channels_last = false;

  bool present() const { return data != nullptr; }
  DType dtype() const { return type.dtype; }
  const Shape& shape() const { return type.shape; }
  int64_t rank() const { return type.rank(); }
  int64_t numel() const { return type.numel(); }
  size_t bytes() const { return type.bytes(); }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data);
  }
};

// An element-wise step that a kernel applies to its output 0 before storing it,
// in the same pass (epilogue fusion, kernels/cpu/fusion.h): the absorbed step's
// op and attributes, and for a binary op its other operand.
struct Epilogue {
  std::string op;
  AttributeMap attrs;
  TensorView operand;  // absent for a unary op
  size_t slot = 0;     // which input of the op the kernel's output is (the operand: the other)
};

// What a kernel sees: the step's op, attributes and tensors.
struct KernelContext {
  std::string op;
  std::string node_name;
  AttributeMap attrs;
  std::vector<TensorView> inputs;
  std::vector<TensorView> outputs;
  uint64_t seed = 0;             // the run's seed (ExecutorOptions::seed), for random ops
  Communicator* comm = nullptr;  // this rank's (ExecutorOptions::comm), for collectives
  // The CUDA backend's collectives on device memory (ExecutorOptions::device_comm).
  DeviceCommunicator* device_comm = nullptr;
  // Steps fused into this one, applied in order to output 0, which is then the
  // last absorbed step's output. Empty unless the op's EpilogueRule accepted them.
  std::vector<Epilogue> epilogue;

  bool hasInput(size_t i) const { return i < inputs.size() && inputs[i].present(); }
  const TensorView& input(size_t i) const { return inputs.at(i); }
  const TensorView& output(size_t i) const { return outputs.at(i); }
  int64_t i(const std::string& name) const;
  double f(const std::string& name) const;
  const std::string& s(const std::string& name) const;
  const std::vector<int64_t>& ints(const std::string& name) const;
  const std::vector<double>& floats(const std::string& name) const;
  const Tensor& t(const std::string& name) const;

  // Throws ds::Error "node 'n' (Op): ..." for kernels that meet an unsupported case.
  template <typename... Parts>
  [[noreturn]] void fail(Parts&&... parts) const {
    throw makeError("node '", node_name, "' (", op, "): ", std::forward<Parts>(parts)...);
  }
};

// The context of a step of `op` that a composite kernel runs as a part of `parent`'s
// (WeightBiasGrad's product and sum): parent's node, seed and communicators, `op`'s
// schema defaults overridden by `attrs`, and no epilogue.
KernelContext partContext(const KernelContext& parent, const std::string& op,
                          std::vector<TensorView> inputs, std::vector<TensorView> outputs,
                          const AttributeMap& attrs);

class CpuKernel {
 public:
  virtual ~CpuKernel() = default;
  // Runs the step; the context's views are the same on every call.
  virtual void run(const KernelContext& ctx) = 0;
};

// Builds a kernel for a step (called once at plan load, with the step's context).
using CpuKernelFactory = std::function<std::unique_ptr<CpuKernel>(const KernelContext&)>;

// Which operands of a step its kernel can take channels-last (TensorView::
// channels_last), as groups: the operands of one group share a layout (an
// element-wise op reads and writes them alike; an in-place step aliases them),
// while different groups are chosen independently (a convolution reorders its
// input and writes its output in whichever layouts they have). An operand in no
// group stays in the plain ONNX layout.
struct Operand {
  bool output = false;
  size_t index = 0;
};
using OperandGroups = std::vector<std::vector<Operand>>;
using ChannelsLastRule = std::function<OperandGroups(const KernelContext&)>;

// Whether a kernel of `producer` (with the epilogue it already has) can also apply
// `next` to its output.
using EpilogueRule = std::function<bool(const KernelContext& producer, const Epilogue& next)>;

// Wraps a stateless function as a kernel.
std::unique_ptr<CpuKernel> statelessKernel(std::function<void(const KernelContext&)> fn);

// A kernel that does nothing (steps whose outputs are empty, absorbed steps).
std::unique_ptr<CpuKernel> noopKernel();

class CpuKernelRegistry {
 public:
  static const CpuKernelRegistry& instance();
  void add(const std::string& op, CpuKernelFactory factory);
  // Declares that `op`'s kernel accepts channels-last operands as `rule` says.
  void allowChannelsLast(const std::string& op, ChannelsLastRule rule);
  // Declares that `op`'s kernel applies the epilogues `rule` accepts.
  void allowEpilogue(const std::string& op, EpilogueRule rule);
  const CpuKernelFactory* find(const std::string& op) const;
  // nullptr: the op's kernel applies no epilogue.
  const EpilogueRule* epilogueRule(const std::string& op) const;
  // nullptr: the op's kernel takes every operand in the plain layout.
  const ChannelsLastRule* channelsLastRule(const std::string& op) const;
  std::vector<std::string> ops() const;

 private:
  std::map<std::string, CpuKernelFactory> factories_;
  std::map<std::string, ChannelsLastRule> channels_last_;
  std::map<std::string, EpilogueRule> epilogues_;
};

// Registration of the kernel families; CpuKernelRegistry::instance() calls each once.
void registerElementwiseKernels(CpuKernelRegistry& r);  // kernels/cpu/elementwise.cc
void registerReductionKernels(CpuKernelRegistry& r);    // kernels/cpu/reduction.cc
void registerShapeKernels(CpuKernelRegistry& r);        // kernels/cpu/shape_ops.cc
void registerNnKernels(CpuKernelRegistry& r);           // kernels/cpu/nn.cc (+ conv.cc, ...)
void registerTrainingKernels(CpuKernelRegistry& r);     // kernels/cpu/grad_*.cc
void registerOptimizerKernels(CpuKernelRegistry& r);    // kernels/cpu/optimizer.cc
void registerCollectiveKernels(CpuKernelRegistry& r);   // kernels/cpu/collective.cc

}  // namespace ds::cpu
