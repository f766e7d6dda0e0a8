#include "kernels/cuda/cuda_executor.h"

#include <cstring>

#include "ir/error.h"
#include "kernels/cuda/cuda_util.h"
#include "kernels/cuda/device.h"

namespace ds {

namespace {

// cuBLAS gets its own slice of the workspace so that it never allocates inside
// run() (it would otherwise allocate on first use); 32 MiB is NVIDIA's advice for Hopper.
constexpr size_t kCublasWorkspace = size_t{32} << 20;

// `e` as a one-line error naming the step's node and op (unless it already does).
Error atNode(const std::string& node, const std::string& op, const Error& e) {
  std::string msg = e.what();
  if (msg.rfind("node '", 0) == 0) return Error(msg);
  return makeError("node '", node, "' (", op, "): ", msg);
}

size_t roundUp(int64_t bytes) {
  auto size = static_cast<size_t>(bytes);
  size_t align = static_cast<size_t>(kPlanAlignment);
  return std::max<size_t>((size + align - 1) / align * align, align);
}

}  // namespace

struct CudaExecutor::Step {
  cpu::KernelContext ctx;
  std::unique_ptr<cuda::CudaKernel> kernel;
  bool optimizer_phase = false;
};

CudaExecutor::CudaExecutor(const PlanFile& plan, ExecutorOptions options)
    : Executor(plan, options) {
  std::string why = cuda::unavailableReason();
  DS_CHECK(why.empty(), "CUDA backend: no usable GPU (", why, ")");
  try {
    load();
  } catch (...) {
    release();  // the destructor does not run for a constructor that throws
    throw;
  }
}

void CudaExecutor::load() {
  const planpb::Plan& p = plan_.plan;
  DS_CHECK(p.host_arena_bytes() == 0 && p.host_persistent_bytes() == 0,
           "optimizer offload (zero_optimization.offload_optimizer) runs on the CPU backend "
           "only for now; the CUDA backend has no host steps or copy stream yet");
  createDevice();
  DS_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&arena_), roundUp(p.arena_bytes())));
  DS_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&persistent_), roundUp(p.persistent_bytes())));
  // Zeroed as on the CPU: optimizer state starts at zero.
  DS_CUDA_CHECK(cudaMemset(arena_, 0, roundUp(p.arena_bytes())));
  DS_CUDA_CHECK(cudaMemset(persistent_, 0, roundUp(p.persistent_bytes())));
  for (int i = 0; i < p.tensors_size(); ++i) {
    std::span<const uint8_t> init = initialValue(i);
    if (!init.empty())
      DS_CUDA_CHECK(cudaMemcpy(address(i), init.data(), init.size(), cudaMemcpyHostToDevice));
  }
  buildSteps();
}

CudaExecutor::~CudaExecutor() {
  release();
}

void CudaExecutor::release() noexcept {
  steps_.clear();  // kernels hold descriptors and buffers that must go first
  if (device_.stream) cudaStreamSynchronize(device_.stream);
  cudaFree(workspace_);
  cudaFree(persistent_);
  cudaFree(arena_);
  if (device_.cudnn) cudnnDestroy(device_.cudnn);
  if (device_.cublas) cublasDestroy(device_.cublas);
  if (device_.stream) cudaStreamDestroy(device_.stream);
  workspace_ = nullptr;
  persistent_ = arena_ = nullptr;
  device_ = {};
}

void CudaExecutor::createDevice() {
  DS_CUDA_CHECK(cudaStreamCreate(&device_.stream));
  DS_CUBLAS_CHECK(cublasCreate(&device_.cublas));
  DS_CUBLAS_CHECK(cublasSetStream(device_.cublas, device_.stream));
  // Default math: f32 GEMMs never use TF32 tensor cores, so results match the CPU.
  DS_CUBLAS_CHECK(cublasSetMathMode(device_.cublas, CUBLAS_DEFAULT_MATH));
  DS_CUDNN_CHECK(cudnnCreate(&device_.cudnn));
  DS_CUDNN_CHECK(cudnnSetStream(device_.cudnn, device_.stream));
}

void* CudaExecutor::address(int tensor) const {
  return tensorAddress(tensor, {arena_, persistent_});
}

void CudaExecutor::buildSteps() {
  const planpb::RankPlan& rank = plan_.plan.ranks(options_.rank);
  steps_.reserve(static_cast<size_t>(rank.steps_size()));
  size_t kernel_workspace = 0;
  for (const planpb::Step& ps : rank.steps()) {
    Step step;
    step.ctx = stepContext(ps, {arena_, persistent_});
    step.optimizer_phase = ps.phase() == planpb::OPTIMIZER_STEP;
    const cuda::CudaKernelFactory* factory = cuda::CudaKernelRegistry::instance().find(ps.op());
    DS_CHECK(factory != nullptr, "node '", ps.node(), "' (", ps.op(), "): no CUDA kernel");
    try {
      step.kernel = (*factory)(step.ctx, device_);
    } catch (const Error& e) {
      throw atNode(ps.node(), ps.op(), e);
    }
    kernel_workspace = std::max(kernel_workspace, step.kernel->workspaceBytes());
    steps_.push_back(std::move(step));
  }
  workspace_bytes_ = (kernel_workspace + 255) / 256 * 256 + kCublasWorkspace;
  DS_CUDA_CHECK(cudaMalloc(&workspace_, workspace_bytes_));
  DS_CUBLAS_CHECK(cublasSetWorkspace(
      device_.cublas, static_cast<uint8_t*>(workspace_) + workspace_bytes_ - kCublasWorkspace,
      kCublasWorkspace));
  dies_after_ = lastUses();
}

size_t CudaExecutor::deviceBytes() const {
  return roundUp(plan_.plan.arena_bytes()) + roundUp(plan_.plan.persistent_bytes()) +
         workspace_bytes_;
}

void CudaExecutor::setFeed(const std::string& name, const Tensor& value) {
  int tensor = acceptFeed(name, value);
  // Ordered after the previous run's kernels on the stream; synchronous, since
  // `value` is pageable host memory the caller may free on return.
  DS_CUDA_CHECK(cudaMemcpyAsync(address(tensor), value.raw(), value.bytes(), cudaMemcpyHostToDevice,
                                device_.stream));
  DS_CUDA_CHECK(cudaStreamSynchronize(device_.stream));
}

void CudaExecutor::poisonAfter(size_t s) {
  for (int dead : dies_after_[s]) {
    bool inplace = false;  // an output written over this input at the same step
    for (const cpu::TensorView& out : steps_[s].ctx.outputs) inplace |= out.data == address(dead);
    if (!inplace)
      DS_CUDA_CHECK(
          cudaMemsetAsync(address(dead), 0xFF, plan_.tensorType(dead).bytes(), device_.stream));
  }
}

void CudaExecutor::run(bool optimizer_step) {
  requireAllFed();
  for (size_t s = 0; s < steps_.size(); ++s) {
    Step& step = steps_[s];
    if (!optimizer_step && step.optimizer_phase) continue;
    try {
      step.kernel->run(step.ctx, device_, workspace_);
      // Launch errors (bad configuration) are reported here, without waiting for the GPU.
      DS_CUDA_CHECK(cudaGetLastError());
    } catch (const Error& e) {
      throw atNode(step.ctx.node_name, step.ctx.op, e);
    }
    if (options_.poison_freed) poisonAfter(s);
  }
}

Tensor CudaExecutor::output(size_t i) const {
  return readTensor(plan_.plan.outputs(static_cast<int>(i)));
}

Tensor CudaExecutor::readTensor(int index) const {
  TensorType type = plan_.tensorType(index);
  Tensor t(type);
  if (type.bytes() > 0)
    DS_CUDA_CHECK(cudaMemcpyAsync(t.raw(), address(index), type.bytes(), cudaMemcpyDeviceToHost,
                                  device_.stream));
  // Waits for the run that computed the tensor; errors of its kernels surface here.
  DS_CUDA_CHECK(cudaStreamSynchronize(device_.stream));
  return t;
}

void CudaExecutor::writeTensor(int index, const Tensor& value) {
  const auto& t = plan_.plan.tensors(index);
  DS_CHECK(t.storage() == planpb::PERSISTENT, "tensor '", t.name(), "' is not persistent");
  TensorType want = plan_.tensorType(index);
  DS_CHECK(value.type() == want, "tensor '", t.name(), "': expected ", want.toString(), ", got ",
           value.type().toString());
  DS_CUDA_CHECK(cudaMemcpyAsync(address(index), value.raw(), value.bytes(), cudaMemcpyHostToDevice,
                                device_.stream));
  DS_CUDA_CHECK(cudaStreamSynchronize(device_.stream));
}

}  // namespace ds
