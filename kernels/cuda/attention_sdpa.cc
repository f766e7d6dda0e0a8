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

#include "kernels/attention_dims.h"
#include "kernels/cuda/cuda_util.h"

namespace ds::cuda {
namespace {

namespace fe = cudnn_frontend;
using TensorPtr = std::shared_ptr<fe::graph::Tensor_attributes>;

// Where a tensor of the graph lies: element `offset` of the step's input or output
// `index`. The graph names it by its uid in the variant pack.
struct Binding {
  int64_t uid;
  bool output;
  size_t index;
  int64_t offset;  // elements
};

// The graph's tensors: Q, K, V (or their gradients), Y, dY and L, each an operand
// of the step, at an offset into it when Q, K and V are packed in one tensor.
enum Uid : int64_t { kQ = 1, kK, kV, kY, kDY, kL, kDQ, kDK, kDV };

// The bindings of the step's tensors (Q, K, V, Y, L forward; dY, Q, K, V, Y, L ->
// dQ, dK, dV backward).
std::vector<Binding> bindingsOf(const AttentionDims& d, bool backward) {
  const size_t q = backward ? 1 : 0, after = q + (d.packed ? 1 : 3);
  auto qkv = [&](bool output, size_t first, int64_t uid, size_t which, int64_t offset) {
    return Binding{uid, output, d.packed ? first : first + which, offset};
  };
  if (!backward)
    return {qkv(false, q, kQ, 0, d.q_offset),
            qkv(false, q, kK, 1, d.k_offset),
            qkv(false, q, kV, 2, d.v_offset),
            {kY, true, 0, 0},
            {kL, true, 1, 0}};
  return {{kDY, false, 0, 0},
          qkv(false, q, kQ, 0, d.q_offset),
          qkv(false, q, kK, 1, d.k_offset),
          qkv(false, q, kV, 2, d.v_offset),
          {kY, false, after, 0},
          {kL, false, after + 1, 0},
          qkv(true, 0, kDQ, 0, d.q_offset),
          qkv(true, 0, kDK, 1, d.k_offset),
          qkv(true, 0, kDV, 2, d.v_offset)};
}

// An operand of `len` tokens `row` elements apart ([B, T, heads, n], or a third of
// a packed [B, T, 3, heads, n]) as cuDNN's [B, heads, T, n].
fe::graph::Tensor_attributes& headMajor(fe::graph::Tensor_attributes& t, const std::string& name,
                                        int64_t uid, int64_t batch, int64_t len, int64_t heads,
                                        int64_t n, int64_t row) {
  return t.set_name(name)
      .set_uid(uid)
      .set_dim({batch, heads, len, n})
      .set_stride({len * row, n, row, 1});
}

class CudnnAttention : public CudaKernel {
 public:
  CudnnAttention(std::shared_ptr<fe::graph::Graph> graph, std::vector<Binding> bindings,
                 size_t elem, int64_t workspace)
      : graph_(std::move(graph)),
        bindings_(std::move(bindings)),
        elem_(elem),
        workspace_(static_cast<size_t>(workspace)) {
    // Every uid now, so that run() only updates pointers (no allocation per step).
    for (const Binding& b : bindings_) pack_[b.uid] = nullptr;
  }

  size_t workspaceBytes() const override { return workspace_; }

  void run(const KernelContext& c, const Device& dev, void* ws) override {
    for (const Binding& b : bindings_)
      pack_.at(b.uid) = static_cast<char*>((b.output ? c.output(b.index) : c.input(b.index)).data) +
                        static_cast<size_t>(b.offset) * elem_;
    fe::error_t status = graph_->execute(dev.cudnn, pack_, ws);
    if (!status.is_good())
      throwCudaError("cudnn_frontend::graph::Graph::execute", status.get_message().c_str(),
                     __FILE__, __LINE__);
  }

 private:
  std::shared_ptr<fe::graph::Graph> graph_;
  std::vector<Binding> bindings_;
  size_t elem_, workspace_;
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
  const DType t = ctx.input(backward ? 1 : 0).dtype();
  const AttentionDims d = attentionDimsOf(ctx);
  auto graph = std::make_shared<fe::graph::Graph>();
  graph->set_io_data_type(t == DType::F16 ? fe::DataType_t::HALF : fe::DataType_t::BFLOAT16)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  auto operand = [&](const char* name, int64_t uid, int64_t len, int64_t n, int64_t row) {
    fe::graph::Tensor_attributes t;
    return graph->tensor(headMajor(t, name, uid, d.batch, len, d.heads, n, row));
  };
  auto output = [&](const TensorPtr& t, const char* name, int64_t uid, int64_t len, int64_t n,
                    int64_t row) {
    headMajor(t->set_output(true), name, uid, d.batch, len, d.heads, n, row);
  };
  auto q_in = [&] { return operand("Q", kQ, d.q_len, d.head, d.q_row); };
  auto k_in = [&] { return operand("K", kK, d.kv_len, d.head, d.k_row); };
  auto v_in = [&] { return operand("V", kV, d.kv_len, d.value_head, d.v_row); };
  auto stats = [&] {  // L [B, heads, Tq] as [B, heads, Tq, 1]
    return graph->tensor(fe::graph::Tensor_attributes()
                             .set_name("L")
                             .set_uid(kL)
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
    auto [y, l] = graph->sdpa(q_in(), k_in(), v_in(), options);
    output(y, "Y", kY, d.q_len, d.value_head, d.y_row());
    l->set_output(true)
        .set_uid(kL)
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
        q_in(), k_in(), v_in(), operand("Y", kY, d.q_len, d.value_head, d.y_row()),
        operand("dY", kDY, d.q_len, d.value_head, d.y_row()), stats(), options);
    output(dq, "dQ", kDQ, d.q_len, d.head, d.q_row);
    output(dk, "dK", kDK, d.kv_len, d.head, d.k_row);
    output(dv, "dV", kDV, d.kv_len, d.value_head, d.v_row);
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
using GraphKey = std::tuple<bool, DType, std::vector<Shape>, double, int64_t, cudnnHandle_t, bool>;

std::mutex cache_mutex;
std::map<GraphKey, BuiltGraph>& graphCache() {
  static auto* cache = new std::map<GraphKey, BuiltGraph>;  // outlives static destructors
  return *cache;
}

BuiltGraph cachedGraph(const KernelContext& ctx, const Device& dev, bool backward) {
  std::map<GraphKey, BuiltGraph>& cache = graphCache();
  const GraphKey key{backward,
                     ctx.input(backward ? 1 : 0).dtype(),
                     attentionOperandShapes(ctx),
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
    it = std::get<5>(it->first) == handle ? cache.erase(it) : std::next(it);
}

std::unique_ptr<CudaKernel> cudnnAttentionKernel(const KernelContext& ctx, const Device& dev,
                                                 bool backward, std::string* why) {
  const DType t = ctx.input(backward ? 1 : 0).dtype();
  if (dev.cudnn == nullptr || !isSixteenBitFloat(t)) {
    if (why) *why = dev.cudnn == nullptr ? "no cuDNN handle" : "not 16-bit";
    return nullptr;
  }
  std::vector<Binding> bindings = bindingsOf(attentionDimsOf(ctx), backward);
  // cuDNN's engines need 16-byte-aligned operands (4 for L), and reject others
  // only when run; the views' addresses are fixed at load, so decline here.
  const size_t elem = dtypeSize(t);
  for (const Binding& b : bindings) {
    const auto address =
        reinterpret_cast<uintptr_t>((b.output ? ctx.output(b.index) : ctx.input(b.index)).data);
    if ((address + static_cast<size_t>(b.offset) * elem) % (b.uid == kL ? 4 : 16) != 0) {
      if (why) *why = "an operand is not 16-byte aligned";
      return nullptr;
    }
  }
  BuiltGraph built = cachedGraph(ctx, dev, backward);
  if (!built.graph) {
    if (why) *why = built.why;
    return nullptr;
  }
  return std::make_unique<CudnnAttention>(built.graph, std::move(bindings), elem, built.workspace);
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
