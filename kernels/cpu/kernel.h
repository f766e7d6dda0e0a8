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
class Communicator;  // runtime/comm/communicator.h
}

namespace ds::cpu {

// A tensor in the arena, in persistent storage or a feed: non-owning.
struct TensorView {
  void* data = nullptr;  // nullptr: an absent optional input
  TensorType type;
  // The same bytes in every run of the plan (weights no step writes): a kernel may
  // prepare them once, e.g. pack them into a faster layout at its first run.
  bool constant = false;

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

// What a kernel sees: the step's op, attributes and tensors.
struct KernelContext {
  std::string op;
  std::string node_name;
  AttributeMap attrs;
  std::vector<TensorView> inputs;
  std::vector<TensorView> outputs;
  uint64_t seed = 0;             // the run's seed (ExecutorOptions::seed), for random ops
  Communicator* comm = nullptr;  // this rank's (ExecutorOptions::comm), for collectives

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

class CpuKernel {
 public:
  virtual ~CpuKernel() = default;
  // Runs the step; the context's views are the same on every call.
  virtual void run(const KernelContext& ctx) = 0;
};

// Builds a kernel for a step (called once at plan load, with the step's context).
using CpuKernelFactory = std::function<std::unique_ptr<CpuKernel>(const KernelContext&)>;

// Wraps a stateless function as a kernel.
std::unique_ptr<CpuKernel> statelessKernel(std::function<void(const KernelContext&)> fn);

class CpuKernelRegistry {
 public:
  static const CpuKernelRegistry& instance();
  void add(const std::string& op, CpuKernelFactory factory);
  const CpuKernelFactory* find(const std::string& op) const;
  std::vector<std::string> ops() const;

 private:
  std::map<std::string, CpuKernelFactory> factories_;
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
