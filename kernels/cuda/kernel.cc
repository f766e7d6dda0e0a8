// The CUDA kernel registry and the host helpers of cuda_util.h.
#include "kernels/cuda/kernel.h"

#include <atomic>
#include <iostream>
#include <mutex>
#include <set>
#include <string>

#include "kernels/cpu/cpu_util.h"
#include "kernels/cuda/cuda_util.h"

namespace ds::cuda {

namespace {

class FunctionKernel : public CudaKernel {
 public:
  FunctionKernel(LaunchFn fn, size_t workspace) : fn_(std::move(fn)), workspace_(workspace) {}
  size_t workspaceBytes() const override { return workspace_; }
  void run(const KernelContext& ctx, const Device& dev, void* workspace) override {
    fn_(ctx, dev, workspace);
  }

 private:
  LaunchFn fn_;
  size_t workspace_;
};

// What the user most likely got wrong, for errors that have a usual cause.
const char* hintFor(const std::string& status) {
  if (status.find("out of memory") != std::string::npos ||
      status.find("ALLOC_FAILED") != std::string::npos)
    return " (hint: the plan's arena or a batch too large for this GPU; lower the micro-batch)";
  if (status.find("no kernel image") != std::string::npos)
    return " (hint: this build targets sm_90 only; rebuild with this GPU's architecture)";
  return "";
}

}  // namespace

void throwCudaError(const char* call, const char* status, const char* file, int line) {
  throw makeError(call, " failed: ", status, " (", file, ":", line, ")", hintFor(status));
}

const char* cublasStatusName(cublasStatus_t status) {
  return cublasGetStatusName(status);
}

std::unique_ptr<CudaKernel> launchKernel(LaunchFn fn, size_t workspace_bytes) {
  return std::make_unique<FunctionKernel>(std::move(fn), workspace_bytes);
}

const CudaKernelRegistry& CudaKernelRegistry::instance() {
  static const CudaKernelRegistry registry = [] {
    CudaKernelRegistry r;
    registerElementwiseKernels(r);
    registerShapeKernels(r);
    registerReductionKernels(r);
    registerConvKernels(r);
    registerMatMulKernels(r);
    registerWeightBiasGradKernels(r);
    registerAttentionKernels(r);
    registerNnKernels(r);
    registerCollectiveKernels(r);
    return r;
  }();
  return registry;
}

void CudaKernelRegistry::add(const std::string& op, CudaKernelFactory factory,
                             Precision precision) {
  DS_CHECK(entries_.emplace(op, Entry{std::move(factory), precision}).second, "CUDA kernel for '",
           op, "' registered twice");
}

void CudaKernelRegistry::allowEpilogue(const std::string& op, cpu::EpilogueRule rule) {
  epilogues_[op] = std::move(rule);
}

const cpu::EpilogueRule* CudaKernelRegistry::epilogueRule(const std::string& op) const {
  auto it = epilogues_.find(op);
  return it == epilogues_.end() ? nullptr : &it->second;
}

void CudaKernelRegistry::allowChannelsLast(const std::string& op, cpu::ChannelsLastRule rule) {
  channels_last_[op] = std::move(rule);
}

const cpu::ChannelsLastRule* CudaKernelRegistry::channelsLastRule(const std::string& op) const {
  auto it = channels_last_.find(op);
  return it == channels_last_.end() ? nullptr : &it->second;
}

const CudaKernelRegistry::Entry* CudaKernelRegistry::find(const std::string& op) const {
  auto it = entries_.find(op);
  return it == entries_.end() ? nullptr : &it->second;
}

std::vector<std::string> CudaKernelRegistry::ops() const {
  std::vector<std::string> out;
  for (const auto& [op, e] : entries_) out.push_back(op);
  return out;
}

// ---- cuda_util.h ----

namespace {
std::atomic<int64_t> live_buffers{0}, live_bytes{0};
}  // namespace

DeviceBuffer::DeviceBuffer(size_t bytes) {
  if (bytes == 0) return;
  DS_CUDA_CHECK(cudaMalloc(&data_, bytes));
  bytes_ = bytes;
  ++live_buffers;
  live_bytes += static_cast<int64_t>(bytes);
}

DeviceBuffer::Live DeviceBuffer::live() {
  return {live_buffers.load(), live_bytes.load()};
}

DeviceBuffer DeviceBuffer::upload(const std::vector<int64_t>& values) {
  DeviceBuffer b(values.size() * sizeof(int64_t));
  if (!values.empty())
    DS_CUDA_CHECK(cudaMemcpy(b.data_, values.data(), values.size() * sizeof(int64_t),
                             cudaMemcpyHostToDevice));
  return b;
}

DeviceBuffer::~DeviceBuffer() {
  if (!data_) return;
  cudaFree(data_);
  --live_buffers;
  live_bytes -= static_cast<int64_t>(bytes_);
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : data_(other.data_), bytes_(other.bytes_) {
  other.data_ = nullptr;
  other.bytes_ = 0;
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  std::swap(data_, other.data_);
  std::swap(bytes_, other.bytes_);
  return *this;
}

Walk makeWalk(const KernelContext& ctx, std::vector<int64_t> dims,
              std::vector<std::vector<int64_t>> strides) {
  Walk w;
  w.numel = 1;
  for (int64_t d : dims) w.numel *= d;
  cpu::collapseWalk(dims, strides);
  if (dims.size() > static_cast<size_t>(kMaxWalkDims))
    ctx.fail("rank ", dims.size(), " after collapsing exceeds the CUDA walk limit ", kMaxWalkDims);
  w.rank = static_cast<int>(dims.size());
  for (size_t d = 0; d < dims.size(); ++d) {
    w.dims[d] = dims[d];
    for (size_t k = 0; k < strides.size() && k < 3; ++k) w.strides[k][d] = strides[k][d];
  }
  return w;
}

Walk broadcastWalk(const KernelContext& ctx, const Shape& out, const std::vector<Shape>& inputs) {
  std::vector<std::vector<int64_t>> strides{cpu::broadcastStrides(out, out)};
  for (const Shape& in : inputs) strides.push_back(cpu::broadcastStrides(in, out));
  return makeWalk(ctx, out, std::move(strides));
}

void requireF32(const KernelContext& ctx, size_t i) {
  DType t = ctx.input(i).dtype();
  if (t != DType::F32)
    ctx.fail("input ", i, " has dtype ", dtypeName(t), "; the CUDA kernel supports f32");
}

std::optional<DType> uniformFloatDType(const KernelContext& ctx) {
  const DType t = ctx.output(0).dtype();
  bool same = true, any16 = isSixteenBitFloat(t);
  for (const TensorView& v : ctx.inputs) {
    if (!v.present()) continue;
    same = same && v.dtype() == t;
    any16 = any16 || isSixteenBitFloat(v.dtype());
  }
  if (!any16) return DType::F32;
  return same ? std::optional<DType>(t) : std::nullopt;
}

bool hasOutput(const KernelContext& ctx, size_t i) {
  return i < ctx.outputs.size() && ctx.outputs[i].present();
}

std::unique_ptr<CudaKernel> noopKernel() {
  return launchKernel([](const KernelContext&, const Device&, void*) {});
}

void noteOnce(const std::string& key, const std::string& message) {
  static std::mutex mutex;
  static auto* said = new std::set<std::string>;  // outlives static destructors
  std::lock_guard<std::mutex> lock(mutex);
  if (said->insert(key).second) std::cerr << "dsrun: note: " << message << "\n";
}

void copyAsync(const TensorView& from, const TensorView& to, cudaStream_t stream) {
  if (from.data == to.data || to.bytes() == 0) return;
  DS_CUDA_CHECK(cudaMemcpyAsync(to.data, from.data, to.bytes(), cudaMemcpyDefault, stream));
}

}  // namespace ds::cuda
