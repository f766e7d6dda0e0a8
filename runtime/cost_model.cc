#include "runtime/cost_model.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "ir/error.h"
#include "ir/ops/shape_helpers.h"

namespace ds {
namespace {

// The type of the step's i-th input or output; a void type for an absent one.
TensorType inputType(const PlanFile& plan, const planpb::Step& step, int i) {
  if (i >= step.inputs_size() || step.inputs(i) < 0) return {DType::F32, {0}};
  return plan.tensorType(step.inputs(i));
}
TensorType outputType(const PlanFile& plan, const planpb::Step& step, int i) {
  if (i >= step.outputs_size()) return {DType::F32, {0}};
  return plan.tensorType(step.outputs(i));
}

const planpb::Attr* findAttr(const planpb::Step& step, const std::string& name) {
  for (const planpb::Attr& a : step.attrs())
    if (a.name() == name) return &a;
  return nullptr;
}

int64_t intAttr(const planpb::Step& step, const std::string& name, int64_t fallback) {
  const planpb::Attr* a = findAttr(step, name);
  return a && a->value_case() == planpb::Attr::kI ? a->i() : fallback;
}

int64_t product(const Shape& shape, size_t from) {
  int64_t p = 1;
  for (size_t i = from; i < shape.size(); ++i) p *= shape[i];
  return p;
}

// Multiply-adds per output element of a convolution: Cin/group x kernel, which is
// the weight's elements per output channel (W: [Cout, Cin/group, k...]). The
// input gradient is the transposed convolution and the weight gradient the
// correlation of dY with X: each does the forward's multiply-adds, once per dY
// element.
double convFlops(const PlanFile& plan, const planpb::Step& step) {
  const std::string& op = step.op();
  const Shape y = op == "Conv" ? outputType(plan, step, 0).shape : inputType(plan, step, 0).shape;
  const Shape w =
      op == "ConvGradWeight" ? outputType(plan, step, 0).shape : inputType(plan, step, 1).shape;
  return 2.0 * static_cast<double>(numElements(y)) * static_cast<double>(product(w, 1));
}

// Gemm, MatMul, and WeightBiasGrad (a MatMul with transA, its bias sum in the
// epilogue).
bool isMatrixProduct(const std::string& op) {
  return op == "MatMul" || op == "Gemm" || op == "WeightBiasGrad";
}

// 2 M N K, batched: every output element is a K-long dot product. K is A's last
// dim (its second-last with transA; a vector's only dim).
double matMulFlops(const PlanFile& plan, const planpb::Step& step) {
  const Shape a = inputType(plan, step, 0).shape;
  const bool trans_a = step.op() == "WeightBiasGrad" || intAttr(step, "transA", 0) != 0;
  const int64_t k = a.size() == 1 ? a[0] : trans_a ? a[a.size() - 2] : a.back();
  return 2.0 * static_cast<double>(outputType(plan, step, 0).numel()) * static_cast<double>(k);
}

// Attention's products, each 2·B·H·Tq·Tk·n for head size n: forward Q·Kᵀ and P·V
// (head sizes D and Dv), the gradient's recomputed Q·Kᵀ, dY·Vᵀ and P ᵀ·dY, dS·K and
// dSᵀ·Q; a causal mask skips about half of every product (flash attention's blocks).
double attentionFlops(const PlanFile& plan, const planpb::Step& step) {
  const bool forward = step.op() == "FusedAttention";
  std::vector<Shape> qkv;
  const size_t first = forward ? 0 : 1;
  for (size_t i = 0; i < attentionOperandCount(step.op(), static_cast<size_t>(step.inputs_size()));
       ++i)
    qkv.push_back(inputType(plan, step, static_cast<int>(first + i)).shape);
  const AttentionDims d = attentionDims(qkv, 0.0, false);
  const double pairs = static_cast<double>(d.batch * d.heads * d.q_len * d.kv_len);
  const auto head = static_cast<double>(d.head), value_head = static_cast<double>(d.value_head);
  const double heads = forward ? head + value_head : 3.0 * head + 2.0 * value_head;
  return 2.0 * pairs * heads * (intAttr(step, "causal", 0) != 0 ? 0.5 : 1.0);
}

// Pooling and its gradients: one operation per window element per (d)Y element.
double poolFlops(const PlanFile& plan, const planpb::Step& step) {
  const bool forward = step.op() == "MaxPool" || step.op() == "AveragePool";
  const int64_t y = forward ? outputType(plan, step, 0).numel() : inputType(plan, step, 0).numel();
  const planpb::Attr* kernel = findAttr(step, "kernel_shape");
  int64_t window = 1;
  if (kernel && kernel->value_case() == planpb::Attr::kInts)
    for (int64_t k : kernel->ints().v()) window *= k;
  return static_cast<double>(y) * static_cast<double>(window);
}

// FLOPs per element of the ops without a formula of their own, counted on their
// first input or first output. Normalisations and softmax take "a few": mean,
// variance, normalise and the affine transform forward, about half again
// backward; Adam reads four values and does about twelve operations per element.
enum class Per { Input, Output };
struct ElementCost {
  double flops;
  Per per;
};
const std::map<std::string, ElementCost>& elementCosts() {
  static const std::map<std::string, ElementCost> costs = {
      {"BatchNormalization", {8, Per::Input}},
      {"BatchNormalizationGrad", {12, Per::Input}},
      {"LayerNormalization", {8, Per::Input}},
      {"LayerNormalizationGrad", {12, Per::Input}},
      {"Softmax", {5, Per::Input}},
      {"LogSoftmax", {5, Per::Input}},
      {"SoftmaxCrossEntropyLoss", {6, Per::Input}},
      {"SoftmaxCrossEntropyLossGrad", {5, Per::Output}},
      {"ReduceMean", {1, Per::Input}},
      {"ReduceSum", {1, Per::Input}},
      {"ReduceSumSquare", {2, Per::Input}},
      {"GlobalAveragePool", {1, Per::Input}},
      {"GatherGrad", {1, Per::Input}},  // scatter-add of dY
      {"AdamStep", {12, Per::Input}},
      {"SgdStep", {4, Per::Input}},
      {"LionStep", {8, Per::Input}},
      {"AdagradStep", {8, Per::Input}},
      {"LambStep", {16, Per::Input}},
  };
  return costs;
}

// Ops that only move or reinterpret data.
bool movesDataOnly(const std::string& op) {
  static const std::set<std::string> ops = {
      "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity",        "Transpose",
      "Concat",  "Split",   "Slice",   "SliceGrad", "Gather",          "Expand",
      "Cast",    "Range",   "Trilu",   "ZerosLike", "ConstantOfShape", "Copy"};
  return ops.count(op) > 0;
}

bool onTensorCores(const std::string& op) {
  return op == "Conv" || op == "ConvGradInput" || op == "ConvGradWeight" || isMatrixProduct(op) ||
         op == "FusedAttention" || op == "FusedAttentionGrad";
}

// A relabelling step whose output the memory plan put on its input's bytes (an
// in-place Reshape) launches nothing: the kernels skip a copy onto itself.
bool relabelsInPlace(const PlanFile& plan, const planpb::Step& step) {
  static const std::set<std::string> ops = {"Reshape", "Flatten", "Squeeze", "Unsqueeze",
                                            "Identity"};
  if (!ops.count(step.op()) || step.inputs_size() < 1 || step.outputs_size() != 1 ||
      step.inputs(0) < 0)
    return false;
  const planpb::TensorInfo& in = plan.plan.tensors(step.inputs(0));
  const planpb::TensorInfo& out = plan.plan.tensors(step.outputs(0));
  return in.storage() == out.storage() && in.offset() == out.offset() &&
         plan.tensorType(step.inputs(0)).bytes() == plan.tensorType(step.outputs(0)).bytes();
}

int64_t collectiveBufferBytes(const PlanFile& plan, const planpb::Step& step) {
  const TensorType buffer =
      step.op() == "AllGather" ? outputType(plan, step, 0) : inputType(plan, step, 0);
  return static_cast<int64_t>(buffer.bytes());
}

}  // namespace

double stepFlops(const PlanFile& plan, const planpb::Step& step) {
  const std::string& op = step.op();
  if (op == "Conv" || op == "ConvGradInput" || op == "ConvGradWeight") return convFlops(plan, step);
  if (isMatrixProduct(op)) return matMulFlops(plan, step);
  if (op == "FusedAttention" || op == "FusedAttentionGrad") return attentionFlops(plan, step);
  if (op == "MaxPool" || op == "AveragePool" || op == "MaxPoolGrad" || op == "AveragePoolGrad")
    return poolFlops(plan, step);
  if (movesDataOnly(op) || isCollectiveOp(op)) return 0;
  auto it = elementCosts().find(op);
  if (it == elementCosts().end())  // element-wise: one operation per output element
    return static_cast<double>(outputType(plan, step, 0).numel());
  const ElementCost& c = it->second;
  const TensorType counted =
      c.per == Per::Input ? inputType(plan, step, 0) : outputType(plan, step, 0);
  return c.flops * static_cast<double>(counted.numel());
}

int64_t stepBytes(const PlanFile& plan, const planpb::Step& step) {
  int64_t bytes = 0;
  for (int i : step.inputs())
    if (i >= 0) bytes += static_cast<int64_t>(plan.tensorType(i).bytes());
  for (int i : step.outputs()) bytes += static_cast<int64_t>(plan.tensorType(i).bytes());
  return bytes;
}

// A 16-bit matrix product whose operand or output rows are not 16-byte aligned (a
// last dim not a multiple of 8 elements) runs on cuBLAS's unvectorised kernels:
// measured on an H100, GPT-2's [8192, 768] x [768, 50257] logits product ran at
// 104 TFLOP/s (bench/RESULTS.md, run 1's profile), about 1/8 of the tensor cores'
// dense peak, where aligned products of its size reach 600-800.
constexpr double kUnalignedGemmShare = 1.0 / 8;

bool hasUnalignedRows(const PlanFile& plan, const planpb::Step& step) {
  if (!isMatrixProduct(step.op())) return false;
  for (const auto* list : {&step.inputs(), &step.outputs()})
    for (int t : *list)
      if (t >= 0) {
        const Shape& s = plan.tensorType(t).shape;
        if (!s.empty() && s.back() % 8 != 0) return true;
      }
  return false;
}

double peakFlops(const std::string& op, DType dtype, const DeviceProfile& device) {
  if (dtype == DType::F64) return device.fp64_flops;
  if (onTensorCores(op) && (dtype == DType::F16 || dtype == DType::BF16)) return device.fp16_flops;
  return device.fp32_flops;
}

double kernelSeconds(double flops, int64_t bytes, double peak_flops, const DeviceProfile& device) {
  const double compute = peak_flops > 0 ? flops / peak_flops : 0;
  const double memory = static_cast<double>(bytes) / device.hbm_bytes_per_s;
  return device.launch_seconds + std::max(compute, memory);
}

double collectiveSeconds(const std::string& op, int64_t bytes, int64_t world_size,
                         const DeviceProfile& device) {
  DS_CHECK(isCollectiveOp(op), "collectiveSeconds: '", op, "' is not a collective");
  if (world_size <= 1) return 0;
  const bool in_node = world_size <= device.gpus_per_node;
  const double bw = in_node ? device.nvlink_bytes_per_s : device.network_bytes_per_s;
  const double latency = in_node ? device.nvlink_latency_seconds : device.network_latency_seconds;
  const auto n = static_cast<double>(world_size);
  const auto b = static_cast<double>(bytes);
  if (op == "AllReduce") return 2 * (n - 1) / n * b / bw + 2 * (n - 1) * latency;
  if (op == "Broadcast") return b / bw + std::log2(n) * latency;
  return (n - 1) / n * b / bw + (n - 1) * latency;  // ReduceScatter, AllGather
}

namespace {

bool onHostStream(const PlanFile& plan, const planpb::Step& step) {
  return step.stream() >= 0 && step.stream() < plan.plan.streams_size() &&
         plan.plan.streams(step.stream()) == "host";
}

}  // namespace

StepCost stepCost(const PlanFile& plan, const planpb::Step& step, const DeviceProfile& device) {
  StepCost c;
  if (relabelsInPlace(plan, step)) return c;
  c.flops = stepFlops(plan, step);
  c.bytes = stepBytes(plan, step);
  if (step.op() == "Copy") {  // offload's copies cross PCIe, each byte once
    const auto moved = static_cast<double>(inputType(plan, step, 0).bytes());
    c.seconds = device.launch_seconds + moved / device.pcie_bytes_per_s;
    return c;
  }
  if (onHostStream(plan, step)) {  // offload's host steps, on the CPU cores
    c.seconds =
        device.host_step_seconds + std::max(c.flops / device.host_flops,
                                            static_cast<double>(c.bytes) / device.host_bytes_per_s);
    return c;
  }
  if (isCollectiveOp(step.op())) {
    c.comm_bytes = collectiveBufferBytes(plan, step);
    c.world_size = intAttr(step, "world_size", 1);
    c.seconds = collectiveSeconds(step.op(), c.comm_bytes, c.world_size, device);
    return c;
  }
  const DType dtype = step.outputs_size() > 0 ? outputType(plan, step, 0).dtype : DType::F32;
  double peak = peakFlops(step.op(), dtype, device);
  if (peak == device.fp16_flops && hasUnalignedRows(plan, step)) peak *= kUnalignedGemmShare;
  c.seconds = kernelSeconds(c.flops, c.bytes, peak, device);
  return c;
}

}  // namespace ds
