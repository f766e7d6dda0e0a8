#include "kernels/cuda/cuda_executor.h"

#include <algorithm>
#include <cstring>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "ir/error.h"
#include "ir/plan_verifier.h"
#include "kernels/cpu/promote16.h"
#include "kernels/cuda/attention_sdpa.h"
#include "kernels/cuda/cuda_util.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/epilogues.h"
#include "kernels/cuda/layout.h"
#include "kernels/cuda/promote16.h"
#include "runtime/comm/device_communicator.h"

namespace ds {

namespace {

// cuBLAS gets its own slice of each workspace so that it never allocates inside
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

size_t align256(size_t bytes) {
  return (bytes + 255) / 256 * 256;
}

bool hasChannelsLastOperand(const cpu::KernelContext& ctx) {
  for (const auto* views : {&ctx.inputs, &ctx.outputs})
    for (const cpu::TensorView& v : *views)
      if (v.channels_last) return true;
  return false;
}

// Ops that need no library handle, workspace or promotion scratch on their stream.
bool movesDataOnly(const std::string& op) {
  return op == "Copy" || op == "AllReduce" || op == "ReduceScatter" || op == "AllGather" ||
         op == "Broadcast";
}

}  // namespace

// One plan stream: a CUDA stream, and what its steps need to run concurrently
// with the other streams' (their own handles and scratch).
struct CudaExecutor::Lane {
  std::string name;
  bool host = false;  // runs host steps, as host functions in stream order
  cuda::Device dev;   // the stream; cuBLAS/cuDNN handles bound to it when needed
  size_t workspace_bytes = 0;
  size_t scratch_bytes = 0;
  // For deviceMemoryReport: which steps set the sizes above.
  std::string widest_workspace, widest_scratch;
  size_t cublas_workspace = 0, promoted_steps = 0;
  void* workspace = nullptr;        // kernels' scratch, then cuBLAS's
  void* scratch = nullptr;          // f32 copies of promoted 16-bit steps
  std::vector<float> host_scratch;  // the same for host steps
  cudaEvent_t end = nullptr;        // recorded last in each run, for the join
};

struct CudaExecutor::Step {
  cpu::KernelContext ctx;
  std::unique_ptr<cuda::CudaKernel> kernel;     // device steps
  std::unique_ptr<cpu::CpuKernel> host_kernel;  // host steps
  const cuda::CudaKernelRegistry::Entry* entry = nullptr;
  bool promoted = false;
  bool absorbed = false;      // an earlier step's epilogue does its work
  bool pinned_plain = false;  // its native kernel declined channels-last operands
  size_t lane = 0;
  std::vector<int> wait_events;
  int record_event = -1;
  bool optimizer_phase = false;
  CudaExecutor* owner = nullptr;  // for host functions
  // ExecutorOptions::profile: recorded on the step's stream around its work.
  cudaEvent_t started = nullptr, finished = nullptr;
};

// Two pinned host buffers of one feed, used in turn; `copied[i]` is recorded when
// the copy out of buffer i has been enqueued, so refilling it waits only for that.
struct CudaExecutor::Staging {
  uint8_t* buffer[2] = {nullptr, nullptr};
  cudaEvent_t copied[2] = {nullptr, nullptr};
  int next = 0;
};

struct CudaExecutor::Graph {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  ~Graph() {
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
  }
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
  // Host steps touch only host memory and device steps device memory, but for the
  // copies between them (the offload passes guarantee it; a hand-edited plan may not).
  verifyPlanPlacement(plan_);
  if (options_.device_comm) DS_CUDA_CHECK(cudaSetDevice(options_.device_comm->device()));
  auto device_alloc = [&](uint8_t** region, int64_t bytes) {
    DS_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(region), roundUp(bytes)));
    // Zeroed as on the CPU: optimizer state starts at zero.
    DS_CUDA_CHECK(cudaMemset(*region, 0, roundUp(bytes)));
    device_bytes_ += roundUp(bytes);
  };
  // Pinned, so the copy stream's transfers are asynchronous DMA.
  auto host_alloc = [&](uint8_t** region, int64_t bytes) {
    if (bytes == 0) return;
    DS_CUDA_CHECK(
        cudaHostAlloc(reinterpret_cast<void**>(region), roundUp(bytes), cudaHostAllocPortable));
    std::memset(*region, 0, roundUp(bytes));
  };
  device_alloc(&regions_.arena, p.arena_bytes());
  device_alloc(&regions_.persistent, p.persistent_bytes());
  host_alloc(&regions_.host_arena, p.host_arena_bytes());
  host_alloc(&regions_.host_persistent, p.host_persistent_bytes());
  for (int i = 0; i < p.tensors_size(); ++i) {
    std::span<const uint8_t> init = initialValue(i);
    if (!init.empty())
      DS_CUDA_CHECK(cudaMemcpy(address(i), init.data(), init.size(), cudaMemcpyDefault));
  }
  createLanes();
  createStaging();
  buildSteps();
  dies_after_ = lastUses();
  // Profiling times every step with events, which a replayed graph would not record.
  graphs_enabled_ = options_.cuda_graph && !options_.profile &&
                    (!options_.device_comm || options_.device_comm->capturable());
  if (options_.profile) {
    step_times_ = {std::vector<double>(steps_.size(), 0.0), 0};
    warmup_times_ = step_times_;
    for (Step& step : steps_) {
      DS_CUDA_CHECK(cudaEventCreate(&step.started));
      DS_CUDA_CHECK(cudaEventCreate(&step.finished));
    }
  }
}

CudaExecutor::~CudaExecutor() {
  release();
}

void CudaExecutor::release() noexcept {
  if (!lanes_.empty() && lanes_[0]->dev.stream) cudaStreamSynchronize(lanes_[0]->dev.stream);
  for (auto& lane : lanes_)
    if (lane->dev.stream) cudaStreamSynchronize(lane->dev.stream);
  graphs_[0].reset();
  graphs_[1].reset();
  for (Step& step : steps_) {
    if (step.started) cudaEventDestroy(step.started);
    if (step.finished) cudaEventDestroy(step.finished);
  }
  steps_.clear();  // kernels hold descriptors and buffers that must go first
  for (cudaEvent_t e : events_) cudaEventDestroy(e);
  events_.clear();
  for (Staging& s : staging_)
    for (int i = 0; i < 2; ++i) {
      cudaFreeHost(s.buffer[i]);
      if (s.copied[i]) cudaEventDestroy(s.copied[i]);
    }
  staging_.clear();
  for (auto& lane : lanes_) {
    cudaFree(lane->workspace);
    cudaFree(lane->scratch);
    if (lane->end) cudaEventDestroy(lane->end);
    if (lane->dev.cudnn) {
      cuda::releaseCudnnAttentionGraphs(lane->dev.cudnn);
      cudnnDestroy(lane->dev.cudnn);
    }
    if (lane->dev.cublas) cublasDestroy(lane->dev.cublas);
    if (lane->dev.cublaslt) cublasLtDestroy(lane->dev.cublaslt);
    if (lane->dev.stream) cudaStreamDestroy(lane->dev.stream);
  }
  lanes_.clear();
  cudaFree(regions_.arena);
  cudaFree(regions_.persistent);
  cudaFreeHost(regions_.host_arena);
  cudaFreeHost(regions_.host_persistent);
  regions_ = {};
}

void CudaExecutor::createLanes() {
  const planpb::Plan& p = plan_.plan;
  const planpb::RankPlan& rank = p.ranks(options_.rank);
  const size_t count = std::max<size_t>(1, static_cast<size_t>(p.streams_size()));
  std::vector<bool> needs_handles(count, false);
  for (const planpb::Step& ps : rank.steps()) {
    DS_CHECK(static_cast<size_t>(ps.stream()) < count, "node '", ps.node(), "' (", ps.op(),
             "): stream ", ps.stream(), " is not in the plan's ", count, " streams");
    if (!movesDataOnly(ps.op())) needs_handles[static_cast<size_t>(ps.stream())] = true;
  }
  for (size_t i = 0; i < count; ++i) {
    auto lane = std::make_unique<Lane>();
    lane->name = p.streams_size() > 0 ? p.streams(static_cast<int>(i)) : "compute";
    lane->host = lane->name == "host";
    lane->dev.benchmark = options_.cudnn_benchmark;
    // Non-blocking: the legacy default stream (other libraries' work) never joins in.
    DS_CUDA_CHECK(cudaStreamCreateWithFlags(&lane->dev.stream, cudaStreamNonBlocking));
    DS_CUDA_CHECK(cudaEventCreateWithFlags(&lane->end, cudaEventDisableTiming));
    if (needs_handles[i] && !lane->host) {
      DS_CUBLAS_CHECK(cublasCreate(&lane->dev.cublas));
      DS_CUBLAS_CHECK(cublasSetStream(lane->dev.cublas, lane->dev.stream));
      // Default math: f32 GEMMs never use TF32 tensor cores, so results match the
      // CPU; 16-bit GEMMs add split-K partial sums in f32, so each output is
      // rounded once (cuBLAS may otherwise reduce in the output type).
      DS_CUBLAS_CHECK(cublasSetMathMode(
          lane->dev.cublas,
          static_cast<cublasMath_t>(CUBLAS_DEFAULT_MATH |
                                    CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
      DS_CUBLAS_CHECK(cublasLtCreate(&lane->dev.cublaslt));
      DS_CUDNN_CHECK(cudnnCreate(&lane->dev.cudnn));
      DS_CUDNN_CHECK(cudnnSetStream(lane->dev.cudnn, lane->dev.stream));
    }
    lanes_.push_back(std::move(lane));
  }
  events_.resize(static_cast<size_t>(p.num_events()), nullptr);
  for (cudaEvent_t& e : events_)
    DS_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
}

void* CudaExecutor::address(int tensor) const {
  return tensorAddress(tensor, regions_);
}

void CudaExecutor::createStaging() {
  staging_.resize(static_cast<size_t>(plan_.plan.feeds_size()));
  for (size_t f = 0; f < staging_.size(); ++f) {
    size_t bytes = plan_.tensorType(plan_.plan.feeds(static_cast<int>(f))).bytes();
    for (int i = 0; i < 2; ++i) {
      DS_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&staging_[f].buffer[i]),
                                  std::max<size_t>(bytes, 1), cudaHostAllocPortable));
      DS_CUDA_CHECK(cudaEventCreateWithFlags(&staging_[f].copied[i], cudaEventDisableTiming));
    }
  }
}

void CudaExecutor::buildSteps() {
  const planpb::RankPlan& rank = plan_.plan.ranks(options_.rank);
  steps_.resize(static_cast<size_t>(rank.steps_size()));
  for (size_t s = 0; s < steps_.size(); ++s) {
    const planpb::Step& ps = rank.steps(static_cast<int>(s));
    Step& step = steps_[s];
    step.ctx = stepContext(ps, regions_);
    step.lane = static_cast<size_t>(ps.stream());
    step.wait_events.assign(ps.wait_events().begin(), ps.wait_events().end());
    step.record_event = ps.record_event();
    step.optimizer_phase = ps.phase() == planpb::OPTIMIZER_STEP;
    step.owner = this;
    for (int e : step.wait_events)
      DS_CHECK(e >= 0 && e < static_cast<int>(events_.size()), "node '", ps.node(), "': event ", e,
               " is not in the plan's ", events_.size());
    if (lanes_[step.lane]->host) {
      buildHostKernel(step);
      continue;
    }
    step.entry = cuda::CudaKernelRegistry::instance().find(ps.op());
    DS_CHECK(step.entry != nullptr, "node '", ps.node(), "' (", ps.op(), "): no CUDA kernel");
  }
  // A native kernel may decline a step whose operands the layout rules made
  // channels-last (cuDNN without an algorithm for that layout): that step is then
  // pinned plain, and layouts and fusion are chosen again from fresh contexts, so
  // --channels-last never stops a plan from loading. Each round pins another step.
  for (;;) {
    chooseLayoutsAndFuse();
    if (buildNativeKernels()) break;
    resetDeviceSteps();
  }
  buildPromotedKernels();
  allocateWorkspaces();
}

// Device steps as buildSteps made them, before layouts, fusion and kernels (their
// pins kept).
void CudaExecutor::resetDeviceSteps() {
  const planpb::RankPlan& rank = plan_.plan.ranks(options_.rank);
  for (size_t s = 0; s < steps_.size(); ++s) {
    Step& step = steps_[s];
    if (!step.entry) continue;
    step.ctx = stepContext(rank.steps(static_cast<int>(s)), regions_);
    step.kernel.reset();
    step.promoted = false;
    step.absorbed = false;
  }
  for (auto& lane : lanes_) {
    lane->scratch_bytes = 0;
    lane->promoted_steps = 0;
    lane->widest_scratch.clear();
  }
}

// Load-time layout choice (kernels/cuda/layout.h) and epilogue fusion, deciding as
// the CPU executor does (kernels/cpu/layout.h, fusion.h) with the CUDA kernels'
// rules. Steps that will run promoted and host steps take every operand plain and
// are never fused; a fused step stays in place, doing nothing, so the events it
// waits for and records keep their place on its stream.
void CudaExecutor::chooseLayoutsAndFuse() {
  const planpb::Plan& p = plan_.plan;
  const planpb::RankPlan& rank = p.ranks(options_.rank);
  std::vector<cpu::PlannedStep> planned(steps_.size());
  for (size_t s = 0; s < steps_.size(); ++s) {
    const planpb::Step& ps = rank.steps(static_cast<int>(s));
    Step& step = steps_[s];
    cpu::PlannedStep& plan_step = planned[s];
    plan_step.ctx = &step.ctx;
    plan_step.inputs.assign(ps.inputs().begin(), ps.inputs().end());
    plan_step.outputs.assign(ps.outputs().begin(), ps.outputs().end());
    plan_step.phase = ps.phase();
    plan_step.lane = static_cast<int>(step.lane);
    plan_step.waits = !step.wait_events.empty();
    plan_step.promoted =
        !step.entry || step.pinned_plain ||
        (cpu::needsPromotion(step.ctx) && step.entry->precision == cuda::Precision::F32Only);
  }
  if (options_.cuda_channels_last) channels_last_tensors_ = cuda::chooseChannelsLast(p, planned);
  if (!options_.fuse_epilogues) return;
  fused_steps_ = cuda::fuseEpilogues(p, planned);
  for (size_t s = 0; s < steps_.size(); ++s) steps_[s].absorbed = planned[s].absorbed;
}

// Host steps (optimizer offload) run the CPU backend's kernels on pinned memory.
void CudaExecutor::buildHostKernel(Step& step) {
  const cpu::CpuKernelFactory* factory = cpu::CpuKernelRegistry::instance().find(step.ctx.op);
  DS_CHECK(factory != nullptr, "node '", step.ctx.node_name, "' (", step.ctx.op,
           "): no CPU kernel for this host step");
  Lane& lane = *lanes_[step.lane];
  try {
    if (cpu::needsPromotion(step.ctx)) {
      // One scratch per host lane, sized before any kernel takes its address.
      size_t need = cpu::promotionScratchBytes(step.ctx) / sizeof(float) + 1;
      DS_CHECK(lane.host_scratch.empty() || lane.host_scratch.size() >= need,
               "host promotion scratch grew after use");
      if (lane.host_scratch.empty()) {
        const planpb::RankPlan& rank = plan_.plan.ranks(options_.rank);
        size_t most = need;
        for (const planpb::Step& ps : rank.steps())
          if (static_cast<size_t>(ps.stream()) == step.lane) {
            cpu::KernelContext c = stepContext(ps, regions_);
            if (cpu::needsPromotion(c))
              most = std::max(most, cpu::promotionScratchBytes(c) / sizeof(float) + 1);
          }
        lane.host_scratch.resize(most);
      }
      step.host_kernel = cpu::promotedKernel(step.ctx, *factory, lane.host_scratch.data());
    } else {
      step.host_kernel = (*factory)(step.ctx);
    }
  } catch (const Error& e) {
    throw atNode(step.ctx.node_name, step.ctx.op, e);
  }
}

// Device kernels in two passes: native ones first, which also tells which steps
// run promoted and how much f32 scratch each stream needs; then, with the scratch
// allocated, the promoted ones (their views point into it). False when a native
// kernel declined a step with channels-last operands, which is then pinned plain.
bool CudaExecutor::buildNativeKernels() {
  bool all_taken = true;
  for (Step& step : steps_) {
    if (!step.entry) continue;
    if (step.absorbed) {
      step.kernel = cuda::noopKernel();
      continue;
    }
    Lane& lane = *lanes_[step.lane];
    try {
      bool sixteen = cpu::needsPromotion(step.ctx);
      if (!sixteen || step.entry->precision == cuda::Precision::Native16)
        step.kernel = step.entry->factory(step.ctx, lane.dev);
      // Promotion widens plain buffers: a layout chosen for a native kernel
      // (chooseLayoutsAndFuse) would be read as the wrong one, so the step is pinned
      // plain (and unfused) for the next round.
      if (!step.kernel && sixteen && hasChannelsLastOperand(step.ctx)) {
        DS_CHECK(!step.pinned_plain, "internal: a step pinned plain has channels-last operands");
        step.pinned_plain = true;
        all_taken = false;
        continue;
      }
      DS_CHECK(step.kernel || step.ctx.epilogue.empty(),
               "a kernel with a fused epilogue must run natively");
      DS_CHECK(step.kernel || sixteen, "no CUDA kernel for these operand types");
      if (sixteen && !step.kernel) {
        step.promoted = true;
        ++lane.promoted_steps;
        const size_t need = align256(cpu::promotionScratchBytes(step.ctx));
        if (need > lane.scratch_bytes) {
          lane.scratch_bytes = need;
          lane.widest_scratch = step.ctx.node_name + " (" + step.ctx.op + ")";
        }
      }
    } catch (const Error& e) {
      throw atNode(step.ctx.node_name, step.ctx.op, e);
    }
  }
  return all_taken;
}

void CudaExecutor::buildPromotedKernels() {
  for (auto& lane : lanes_)
    if (lane->scratch_bytes > 0) {
      DS_CUDA_CHECK(cudaMalloc(&lane->scratch, lane->scratch_bytes));
      device_bytes_ += lane->scratch_bytes;
    }
  for (Step& step : steps_) {
    if (!step.promoted) continue;
    Lane& lane = *lanes_[step.lane];
    try {
      step.kernel = cuda::promotedKernel(step.ctx, step.entry->factory, lane.dev, lane.scratch);
    } catch (const Error& e) {
      throw atNode(step.ctx.node_name, step.ctx.op, e);
    }
  }
}

void CudaExecutor::allocateWorkspaces() {
  for (const Step& step : steps_)
    if (step.kernel && step.kernel->workspaceBytes() > lanes_[step.lane]->workspace_bytes) {
      Lane& lane = *lanes_[step.lane];
      lane.workspace_bytes = step.kernel->workspaceBytes();
      lane.widest_workspace = step.ctx.node_name + " (" + step.ctx.op + ")";
    }
  for (auto& lane : lanes_) {
    if (!lane->dev.cublas && lane->workspace_bytes == 0) continue;
    size_t kernels = align256(lane->workspace_bytes);
    size_t cublas = lane->dev.cublas ? kCublasWorkspace : 0;
    lane->workspace_bytes = kernels + cublas;
    lane->cublas_workspace = cublas;
    DS_CUDA_CHECK(cudaMalloc(&lane->workspace, lane->workspace_bytes));
    device_bytes_ += lane->workspace_bytes;
    if (cublas > 0)
      DS_CUBLAS_CHECK(cublasSetWorkspace(lane->dev.cublas,
                                         static_cast<uint8_t*>(lane->workspace) + kernels, cublas));
  }
}

size_t CudaExecutor::deviceBytes() const {
  return device_bytes_;
}

std::string CudaExecutor::deviceMemoryReport() const {
  auto mib = [](size_t bytes) {
    std::ostringstream out;
    out << std::fixed << std::setprecision(2) << static_cast<double>(bytes) / 1048576;
    return out.str();
  };
  const planpb::Plan& p = plan_.plan;
  std::ostringstream out;
  out << "device MiB: arena " << mib(roundUp(p.arena_bytes())) << ", persistent "
      << mib(roundUp(p.persistent_bytes()));
  for (const auto& lane : lanes_) {
    if (lane->workspace_bytes == 0 && lane->scratch_bytes == 0) continue;
    out << "; stream " << lane->name << ": workspace " << mib(lane->workspace_bytes);
    if (lane->workspace_bytes > lane->cublas_workspace)
      out << " (" << lane->widest_workspace << " "
          << mib(lane->workspace_bytes - lane->cublas_workspace) << ", cuBLAS "
          << mib(lane->cublas_workspace) << ")";
    if (lane->scratch_bytes > 0)
      out << ", promotion scratch " << mib(lane->scratch_bytes) << " (" << lane->widest_scratch
          << "; " << lane->promoted_steps << " steps promoted)";
  }
  // Kernels' own small tables (batched copies' addresses, reduction offsets): each a
  // cudaMalloc of its own, which the driver may round up.
  const cuda::DeviceBuffer::Live tables = cuda::DeviceBuffer::live();
  out << "; kernel tables (the process's) " << tables.buffers << " cudaMallocs, "
      << mib(static_cast<size_t>(tables.bytes)) << " MiB";
  return out.str();
}

void CudaExecutor::setFeed(const std::string& name, const Tensor& value) {
  const int tensor = acceptFeed(name, value);
  Staging& staging = staging_[static_cast<size_t>(feedIndex(name))];
  const int i = staging.next;
  staging.next = 1 - i;
  // The buffer's previous copy was enqueued a run ago and is long done, normally.
  DS_CUDA_CHECK(cudaEventSynchronize(staging.copied[i]));
  std::memcpy(staging.buffer[i], value.raw(), value.bytes());
  // On the first stream, so after every run enqueued so far has read the old value.
  cudaStream_t first = lanes_[0]->dev.stream;
  // cudaMemcpyDefault: a feed only offload's Copy reads lives in pinned host memory.
  DS_CUDA_CHECK(
      cudaMemcpyAsync(address(tensor), staging.buffer[i], value.bytes(), cudaMemcpyDefault, first));
  DS_CUDA_CHECK(cudaEventRecord(staging.copied[i], first));
}

void CudaExecutor::poisonAfter(size_t s) {
  cudaStream_t stream = lanes_[steps_[s].lane]->dev.stream;
  for (int dead : dies_after_[s]) {
    bool inplace = false;  // an output written over this input at the same step
    for (const cpu::TensorView& out : steps_[s].ctx.outputs) inplace |= out.data == address(dead);
    if (!inplace)
      DS_CUDA_CHECK(cudaMemsetAsync(address(dead), 0xFF, plan_.tensorType(dead).bytes(), stream));
  }
}

void CudaExecutor::hostStepFailed(const std::string& what) noexcept {
  std::lock_guard<std::mutex> lock(host_error_mu_);
  if (host_error_.empty()) host_error_ = what;
  host_failed_ = true;
}

void CudaExecutor::enqueueStep(size_t index, std::vector<bool>& recorded) {
  Step& step = steps_[index];
  Lane& lane = *lanes_[step.lane];
  cudaStream_t stream = lane.dev.stream;
  // An event not recorded in this run was recorded by an earlier one (a step of a
  // phase this run skips), which the join at that run's end already waited for.
  for (int e : step.wait_events)
    if (recorded[static_cast<size_t>(e)])
      DS_CUDA_CHECK(cudaStreamWaitEvent(stream, events_[static_cast<size_t>(e)], 0));
  if (step.started) DS_CUDA_CHECK(cudaEventRecord(step.started, stream));
  if (step.host_kernel) {
    DS_CUDA_CHECK(cudaLaunchHostFunc(
        stream,
        [](void* data) {
          auto* s = static_cast<Step*>(data);
          if (s->owner->host_failed_) return;  // later host steps would read garbage
          try {
            s->host_kernel->run(s->ctx);
          } catch (const std::exception& e) {
            s->owner->hostStepFailed(atNode(s->ctx.node_name, s->ctx.op, Error(e.what())).what());
          }
        },
        &step));
  } else {
    try {
      step.kernel->run(step.ctx, lane.dev, lane.workspace);
      // Launch errors (bad configuration) are reported here, without waiting for the GPU.
      DS_CUDA_CHECK(cudaGetLastError());
    } catch (const Error& e) {
      throw atNode(step.ctx.node_name, step.ctx.op, e);
    }
  }
  // --poison-freed: the tensors that die here are poisoned before the step's event,
  // so a step that reuses their bytes (ordered after the event) comes after it.
  if (options_.poison_freed) poisonAfter(index);
  if (step.finished) DS_CUDA_CHECK(cudaEventRecord(step.finished, stream));
  if (step.record_event >= 0) {
    DS_CUDA_CHECK(cudaEventRecord(events_[static_cast<size_t>(step.record_event)], stream));
    recorded[static_cast<size_t>(step.record_event)] = true;
  }
}

std::string CudaExecutor::traceDeviceMemory(bool optimizer_step, size_t min_bytes) {
  requireAllFed();
  auto free_now = [] {
    DS_CUDA_CHECK(cudaDeviceSynchronize());
    size_t free_bytes = 0, total = 0;
    DS_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total));
    return static_cast<double>(free_bytes);
  };
  struct Fall {
    double bytes;
    size_t step;
  };
  std::vector<Fall> falls;
  const double start = free_now();
  double before = start;
  std::vector<bool> recorded(events_.size(), false);
  for (size_t s = 0; s < steps_.size(); ++s) {
    if (!optimizer_step && steps_[s].optimizer_phase) continue;
    enqueueStep(s, recorded);
    const double after = free_now();
    if (before - after >= static_cast<double>(min_bytes)) falls.push_back({before - after, s});
    before = after;
  }
  synchronize();  // a host step's error
  std::sort(falls.begin(), falls.end(),
            [](const Fall& a, const Fall& b) { return a.bytes > b.bytes; });
  std::ostringstream os;
  os << std::fixed << std::setprecision(2);
  for (const Fall& f : falls)
    os << "device memory fell " << f.bytes / 1048576 << " MiB at step #" << f.step << " '"
       << steps_[f.step].ctx.node_name << "' (" << steps_[f.step].ctx.op << ", stream '"
       << lanes_[steps_[f.step].lane]->name << "')\n";
  os << "device memory fell " << (start - before) / 1048576 << " MiB over the traced run\n";
  return os.str();
}

void CudaExecutor::enqueue(bool optimizer_step) {
  cudaStream_t first = lanes_[0]->dev.stream;
  // Fork: every stream starts after what the first holds (feeds, the last run).
  DS_CUDA_CHECK(cudaEventRecord(lanes_[0]->end, first));
  for (size_t i = 1; i < lanes_.size(); ++i)
    DS_CUDA_CHECK(cudaStreamWaitEvent(lanes_[i]->dev.stream, lanes_[0]->end, 0));
  std::vector<bool> recorded(events_.size(), false);
  for (size_t s = 0; s < steps_.size(); ++s) {
    if (!optimizer_step && steps_[s].optimizer_phase) continue;
    enqueueStep(s, recorded);
  }
  // Join: the first stream ends after every stream's last step.
  for (size_t i = 1; i < lanes_.size(); ++i) {
    DS_CUDA_CHECK(cudaEventRecord(lanes_[i]->end, lanes_[i]->dev.stream));
    DS_CUDA_CHECK(cudaStreamWaitEvent(first, lanes_[i]->end, 0));
  }
}

// Captures this kind of run into a graph on its second call (the first ran eagerly,
// letting libraries finish their lazy set-up) and replays it from then on. A
// capture that fails turns graphs off for good, with a warning: still correct.
void CudaExecutor::runGraph(bool optimizer_step) {
  std::unique_ptr<Graph>& graph = graphs_[optimizer_step ? 1 : 0];
  cudaStream_t first = lanes_[0]->dev.stream;
  if (!graph) {
    graph = std::make_unique<Graph>();
    // Thread-local: other ranks' threads may capture, or allocate, meanwhile.
    DS_CUDA_CHECK(cudaStreamBeginCapture(first, cudaStreamCaptureModeThreadLocal));
    std::string failure;
    try {
      enqueue(optimizer_step);
    } catch (const Error& e) {
      failure = e.what();
    }
    cudaGraph_t captured = nullptr;
    cudaError_t end = cudaStreamEndCapture(first, &captured);
    graph->graph = captured;
    if (failure.empty() && end != cudaSuccess) failure = cudaGetErrorString(end);
    if (failure.empty()) {
      cudaError_t inst = cudaGraphInstantiateWithFlags(&graph->exec, captured, 0);
      if (inst != cudaSuccess) failure = cudaGetErrorString(inst);
    }
    if (!failure.empty()) {
      cudaGetLastError();  // clear the capture's error state
      graph.reset();
      graphs_enabled_ = false;
      std::cerr << "dsrun: warning: capturing the step as a CUDA graph failed (" << failure
                << "); running without CUDA graphs\n";
      enqueue(optimizer_step);
      return;
    }
  }
  DS_CUDA_CHECK(cudaGraphLaunch(graph->exec, first));
  ++graph_replays_;
}

void CudaExecutor::run(bool optimizer_step) {
  requireAllFed();
  if (host_failed_) synchronize();  // throws the host step's error
  int& runs = runs_[optimizer_step ? 1 : 0];
  ++runs;
  if (graphs_enabled_ && runs >= 2)
    runGraph(optimizer_step);
  else
    enqueue(optimizer_step);
  if (options_.profile) collectStepTimes(optimizer_step);
}

void CudaExecutor::collectStepTimes(bool optimizer_step) {
  synchronize();
  StepTimes& times = runs_[optimizer_step ? 1 : 0] == 1 ? warmup_times_ : step_times_;
  ++times.runs;
  last_run_seconds_.assign(steps_.size(), 0.0);
  for (size_t s = 0; s < steps_.size(); ++s) {
    if (!optimizer_step && steps_[s].optimizer_phase) continue;
    float ms = 0.0f;
    DS_CUDA_CHECK(cudaEventElapsedTime(&ms, steps_[s].started, steps_[s].finished));
    last_run_seconds_[s] = static_cast<double>(ms) * 1e-3;
    times.seconds[s] += last_run_seconds_[s];
  }
}

void CudaExecutor::synchronize() const {
  DS_CUDA_CHECK(cudaStreamSynchronize(lanes_[0]->dev.stream));
  std::lock_guard<std::mutex> lock(host_error_mu_);
  if (!host_error_.empty()) throw Error(host_error_);
}

Tensor CudaExecutor::output(size_t i) const {
  return readTensor(plan_.plan.outputs(static_cast<int>(i)));
}

Tensor CudaExecutor::readTensor(int index) const {
  // Waits for the runs that computed the tensor; errors of their kernels surface here.
  synchronize();
  TensorType type = plan_.tensorType(index);
  Tensor t(type);
  if (type.bytes() > 0)
    DS_CUDA_CHECK(cudaMemcpy(t.raw(), address(index), type.bytes(), cudaMemcpyDefault));
  return t;
}

void CudaExecutor::writeTensor(int index, const Tensor& value) {
  const auto& t = plan_.plan.tensors(index);
  DS_CHECK(t.storage() == planpb::PERSISTENT || t.storage() == planpb::HOST_PERSISTENT, "tensor '",
           t.name(), "' is not persistent");
  TensorType want = plan_.tensorType(index);
  DS_CHECK(value.type() == want, "tensor '", t.name(), "': expected ", want.toString(), ", got ",
           value.type().toString());
  synchronize();
  DS_CUDA_CHECK(cudaMemcpy(address(index), value.raw(), value.bytes(), cudaMemcpyDefault));
}

}  // namespace ds
