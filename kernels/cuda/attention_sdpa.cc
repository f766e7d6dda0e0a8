#include "kernels/cuda/attention_sdpa.h"

#ifdef DS_HAVE_CUDNN_FRONTEND

#include <cudnn_frontend.h>

#include <cstdint>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ir/ops/shape_helpers.h"
#include "kernels/cuda/cuda_util.h"

namespace ds::cuda {
namespace {

namespace fe = cudnn_frontend;
using TensorPtr = std::shared_ptr<fe::graph::Tensor_attributes>;

// The graph's tensors by the uid the variant pack names them with: the step's
// inputs, then its outputs.
constexpr int64_t kOutputUids = 16;
int64_t inputUid(size_t i) {
  return static_cast<int64_t>(i) + 1;
}
int64_t outputUid(size_t i) {
  return kOutputUids + static_cast<int64_t>(i);
}

// A [B, T, heads, n] operand as cuDNN's [B, heads, T, n].
fe::graph::Tensor_attributes headMajor(const std::string& name, int64_t uid, int64_t batch,
                                       int64_t len, int64_t heads, int64_t n) {
  return fe::graph::Tensor_attributes()
      .set_name(name)
      .set_uid(uid)
      .set_dim({batch, heads, len, n})
      .set_stride({len * heads * n, n, heads * n, 1});
}

void describeHeadMajor(const TensorPtr& t, const std::string& name, int64_t uid, int64_t batch,
                       int64_t len, int64_t heads, int64_t n) {
  t->set_output(true)
      .set_name(name)
      .set_uid(uid)
      .set_dim({batch, heads, len, n})
      .set_stride({len * heads * n, n, heads * n, 1});
}

class CudnnAttention : public CudaKernel {
 public:
  CudnnAttention(std::shared_ptr<fe::graph::Graph> graph, size_t inputs, size_t outputs,
                 int64_t workspace)
      : graph_(std::move(graph)),
        inputs_(inputs),
        outputs_(outputs),
        workspace_(static_cast<size_t>(workspace)) {
    // Every uid now, so that run() only updates pointers (no allocation per step).
    for (size_t i = 0; i < inputs_; ++i) pack_[inputUid(i)] = nullptr;
    for (size_t i = 0; i < outputs_; ++i) pack_[outputUid(i)] = nullptr;
  }

  size_t workspaceBytes() const override { return workspace_; }

  void run(const KernelContext& c, const Device& dev, void* ws) override {
    for (size_t i = 0; i < inputs_; ++i) pack_.at(inputUid(i)) = c.input(i).data;
    for (size_t i = 0; i < outputs_; ++i) pack_.at(outputUid(i)) = c.output(i).data;
    fe::error_t status = graph_->execute(dev.cudnn, pack_, ws);
    if (!status.is_good())
      throwCudaError("cudnn_frontend::graph::Graph::execute", status.get_message().c_str(),
                     __FILE__, __LINE__);
  }

 private:
  std::shared_ptr<fe::graph::Graph> graph_;
  size_t inputs_, outputs_, workspace_;
  std::unordered_map<int64_t, void*> pack_;  // the variant pack: uid -> device address
};

// The step's cuDNN graph, built and planned, with its workspace; or null, with
// `why` set, where cuDNN declines it.
struct BuiltGraph {
  std::shared_ptr<fe::graph::Graph> graph;
  int64_t workspace = 0;
  std::string why;  // without a graph: why cuDNN declined
};

BuiltGraph buildGraph(const KernelContext& ctx, const Device& dev, bool backward,
                      fe::AttentionImplementation_t implementation, bool deterministic) {
  const size_t q = backward ? 1 : 0;
  const DType t = ctx.input(q).dtype();
  const AttentionDims d =
      attentionDims(ctx.input(q).shape(), ctx.input(q + 1).shape(), ctx.input(q + 2).shape(),
                    ctx.f("scale"), ctx.i("causal") != 0);
  auto graph = std::make_shared<fe::graph::Graph>();
  graph->set_io_data_type(t == DType::F16 ? fe::DataType_t::HALF : fe::DataType_t::BFLOAT16)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  auto operand = [&](const char* name, size_t input, int64_t len, int64_t n) {
    return graph->tensor(headMajor(name, inputUid(input), d.batch, len, d.heads, n));
  };
  auto stats = [&](size_t input) {  // L [B, heads, Tq] as [B, heads, Tq, 1]
    return graph->tensor(fe::graph::Tensor_attributes()
                             .set_name("L")
                             .set_uid(inputUid(input))
                             .set_dim({d.batch, d.heads, d.q_len, 1})
                             .set_stride({d.heads * d.q_len, d.q_len, 1, 1})
                             .set_data_type(fe::DataType_t::FLOAT));
  };
  const auto scale = static_cast<float>(d.scale);
  if (!backward) {
    auto options = fe::graph::SDPA_attributes()
                       .set_name("attention")
                       .set_generate_stats(true)
                       .set_attn_scale(scale)
                       .set_causal_mask(d.causal)
                       .set_implementation(implementation);
    auto [y, l] = graph->sdpa(operand("Q", 0, d.q_len, d.head), operand("K", 1, d.kv_len, d.head),
                              operand("V", 2, d.kv_len, d.value_head), options);
    describeHeadMajor(y, "Y", outputUid(0), d.batch, d.q_len, d.heads, d.value_head);
    l->set_output(true)
        .set_uid(outputUid(1))
        .set_dim({d.batch, d.heads, d.q_len, 1})
        .set_stride({d.heads * d.q_len, d.q_len, 1, 1})
        .set_data_type(fe::DataType_t::FLOAT);
  } else {
    auto options = fe::graph::SDPA_backward_attributes()
                       .set_name("attention_grad")
                       .set_attn_scale(scale)
                       .set_causal_mask(d.causal)
                       .set_deterministic_algorithm(deterministic);
    auto [dq, dk, dv] = graph->sdpa_backward(
        operand("Q", 1, d.q_len, d.head), operand("K", 2, d.kv_len, d.head),
        operand("V", 3, d.kv_len, d.value_head), operand("Y", 4, d.q_len, d.value_head),
        operand("dY", 0, d.q_len, d.value_head), stats(5), options);
    describeHeadMajor(dq, "dQ", outputUid(0), d.batch, d.q_len, d.heads, d.head);
    describeHeadMajor(dk, "dK", outputUid(1), d.batch, d.kv_len, d.heads, d.head);
    describeHeadMajor(dv, "dV", outputUid(2), d.batch, d.kv_len, d.heads, d.value_head);
  }
  BuiltGraph built{graph, 0, {}};
  const std::pair<const char*, std::function<fe::error_t()>> stages[] = {
      {"validate", [&] { return graph->validate(); }},
      {"build_operation_graph", [&] { return graph->build_operation_graph(dev.cudnn); }},
      {"create_execution_plans",
       [&] {
         return graph->create_execution_plans({fe::HeurMode_t::A, fe::HeurMode_t::FALLBACK});
       }},
      {"check_support", [&] { return graph->check_support(dev.cudnn); }},
      {"build_plans", [&] { return graph->build_plans(dev.cudnn); }},
      {"get_workspace_size", [&] { return graph->get_workspace_size(built.workspace); }}};
  for (const auto& [stage, run] : stages) {
    fe::error_t status = run();
    if (!status.is_good()) return {nullptr, 0, std::string(stage) + ": " + status.get_message()};
  }
  return built;
}

// Graphs by step geometry and handle: a GPT's 24 attention steps have 2 shapes, and
// a graph's plan takes cuDNN a while to build. Graph::execute is const. A geometry
// cuDNN declined is kept too, with its reason, so it is tried once.
using GraphKey = std::tuple<bool, DType, Shape, Shape, Shape, double, int64_t, cudnnHandle_t, bool>;

std::mutex cache_mutex;
std::map<GraphKey, BuiltGraph>& graphCache() {
  static auto* cache = new std::map<GraphKey, BuiltGraph>;  // outlives static destructors
  return *cache;
}

BuiltGraph cachedGraph(const KernelContext& ctx, const Device& dev, bool backward) {
  std::map<GraphKey, BuiltGraph>& cache = graphCache();
  const size_t q = backward ? 1 : 0;
  const GraphKey key{backward,
                     ctx.input(q).dtype(),
                     ctx.input(q).shape(),
                     ctx.input(q + 1).shape(),
                     ctx.input(q + 2).shape(),
                     ctx.f("scale"),
                     ctx.i("causal"),
                     dev.cudnn,
                     dev.benchmark};
  std::lock_guard<std::mutex> lock(cache_mutex);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  // The frontend throws where it finds no implementation.
  // Deterministic unless --cudnn-benchmark, as convolutions (docs/cuda_backend.md).
  auto build = [&](fe::AttentionImplementation_t implementation, bool deterministic) -> BuiltGraph {
    try {
      return buildGraph(ctx, dev, backward, implementation, deterministic);
    } catch (const std::exception& e) {
      return {nullptr, 0, e.what()};
    }
  };
  BuiltGraph built = build(fe::AttentionImplementation_t::AUTO, !dev.benchmark);
  // Without a deterministic backward for this geometry, cuDNN's other one is still
  // several times faster than the cuBLAS path; said once per geometry.
  if (!built.graph && backward && !dev.benchmark) {
    BuiltGraph any = build(fe::AttentionImplementation_t::AUTO, false);
    if (any.graph)
      std::cerr << "dsrun: note: cuDNN has no deterministic fused attention backward for " << ctx.op
                << " '" << ctx.node_name << "' (" << built.why
                << "); it and any like it run cuDNN's non-deterministic one\n";
    else
      any.why = "deterministic: " + built.why + "; non-deterministic: " + any.why;
    built = any;
  }
  // The forward's automatic choice may take an implementation without an engine
  // here; the composite one is the long-standing flash attention.
  if (!built.graph && !backward) {
    BuiltGraph composite = build(fe::AttentionImplementation_t::COMPOSITE, !dev.benchmark);
    if (!composite.graph)
      composite.why = "automatic: " + built.why + "; composite: " + composite.why;
    built = composite;
  }
  cache[key] = built;
  return built;
}

}  // namespace

void releaseCudnnAttentionGraphs(cudnnHandle_t handle) {
  std::lock_guard<std::mutex> lock(cache_mutex);
  std::map<GraphKey, BuiltGraph>& cache = graphCache();
  for (auto it = cache.begin(); it != cache.end();)
    it = std::get<7>(it->first) == handle ? cache.erase(it) : std::next(it);
}

std::unique_ptr<CudaKernel> cudnnAttentionKernel(const KernelContext& ctx, const Device& dev,
                                                 bool backward, std::string* why) {
  const DType t = ctx.input(backward ? 1 : 0).dtype();
  if (dev.cudnn == nullptr || !isSixteenBitFloat(t)) {
    if (why) *why = dev.cudnn == nullptr ? "no cuDNN handle" : "not 16-bit";
    return nullptr;
  }
  // cuDNN's engines need 16-byte-aligned operands (4 for L), and reject others
  // only when run; the views' addresses are fixed at load, so decline here.
  for (const std::vector<TensorView>* list : {&ctx.inputs, &ctx.outputs})
    for (const TensorView& v : *list)
      if (v.present() && reinterpret_cast<uintptr_t>(v.data) % (v.dtype() == DType::F32 ? 4 : 16)) {
        if (why) *why = "an operand is not 16-byte aligned";
        return nullptr;
      }
  BuiltGraph built = cachedGraph(ctx, dev, backward);
  if (!built.graph) {
    if (why) *why = built.why;
    return nullptr;
  }
  return std::make_unique<CudnnAttention>(built.graph, backward ? 6 : 3, backward ? 3 : 2,
                                          built.workspace);
}

}  // namespace ds::cuda

#else  // built without the cuDNN frontend

namespace ds::cuda {

void releaseCudnnAttentionGraphs(cudnnHandle_t) {}

std::unique_ptr<CudaKernel> cudnnAttentionKernel(const KernelContext&, const Device&, bool,
                                                 std::string* why) {
  if (why) *why = "built without the cuDNN frontend";
  return nullptr;
}

}  // namespace ds::cuda

#endif
