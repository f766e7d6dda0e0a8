// Conv, ConvGradInput and ConvGradWeight on cuDNN (CPU twins: kernels/cpu/conv.cc,
// grad_conv.cc). The factory builds the descriptors (1-D windows become 2-D with a
// unit height), sets FMA math so f32 never runs on TF32 tensor cores (results stay
// within 1e-4 of the CPU oracle), and picks the algorithm once, from cuDNN's
// heuristics or, with Device::benchmark, from timing every candidate (cuDNN's Find,
// which allocates its own scratch at load): the first usable one of the ranked
// list, preferring deterministic ones unless timed (then the fastest, as PyTorch's
// benchmark mode without its deterministic flag); its workspace comes from the
// executor's shared workspace.
// cuDNN pads symmetrically, so a window with different begin and end pads fails
// at load, naming the node.
//
// Channels-last (kernels/cuda/layout.h): when a data operand (X, Y, dY, dX) is
// NHWC the convolution runs NHWC, with an NHWC filter: the NCHW weights are
// transposed into the workspace first (for ConvGradWeight, dW is computed there
// and transposed out), except 1x1 filters, whose two layouts are the same bytes. A
// data operand left plain is converted through the workspace, in before or out
// after (the network's first convolution reads the plain image).
//
// f16 and bf16 (Native16) run natively when every tensor has that dtype: 16-bit
// descriptors with f32 compute (cuDNN's PSEUDO_HALF / PSEUDO_BFLOAT16 configs:
// f32 accumulation, one rounding of each output) on tensor cores. A 16-bit Conv
// with bias runs promoted instead: cuDNN's output is already rounded, and adding
// the bias to it (cudnnAddTensor) would round twice where the CPU's promotion
// rounds once. So do mixed dtypes and shapes cuDNN has no 16-bit algorithm for.
#include <algorithm>
#include <array>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>

#include "kernels/cpu/grad_util.h"
#include "kernels/cpu/layout.h"
#include "kernels/cpu/window.h"
#include "kernels/cuda/cuda_util.h"
#include "kernels/cuda/layout.h"

namespace ds::cuda {
namespace {

enum class ConvPass { Forward, GradInput, GradWeight };

// At most this much workspace for one convolution; larger algorithms are skipped.
constexpr size_t kMaxConvWorkspace = size_t{1} << 30;

std::vector<int> toInts(const std::vector<int64_t>& v) {
  return std::vector<int>(v.begin(), v.end());
}

cudnnDataType_t cudnnTypeOf(DType t) {
  return t == DType::F16    ? CUDNN_DATA_HALF
         : t == DType::BF16 ? CUDNN_DATA_BFLOAT16
                            : CUDNN_DATA_FLOAT;
}

// cuDNN descriptors of one convolution, destroyed with the kernel.
class ConvDescriptors {
 public:
  ConvDescriptors(const KernelContext& ctx, DType t, const Shape& x, const Shape& w, const Shape& y,
                  const cpu::Window& win, int64_t group, bool nhwc)
      : data_(cudnnTypeOf(t)), nhwc_(nhwc) {
    DS_CUDNN_CHECK(cudnnCreateTensorDescriptor(&x_));
    DS_CUDNN_CHECK(cudnnCreateTensorDescriptor(&y_));
    DS_CUDNN_CHECK(cudnnCreateFilterDescriptor(&w_));
    DS_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&conv_));
    std::vector<int64_t> strides = win.strides, dilations = win.dilations, pads = win.pad_begin;
    for (size_t d = 0; d < win.spatial(); ++d)
      if (win.pad_begin[d] != win.pad_end[d])
        ctx.fail("pads ", win.pad_begin[d], " and ", win.pad_end[d], " differ along spatial dim ",
                 d, "; cuDNN supports symmetric padding only");
    Shape xs = x, ws = w, ys = y;
    if (win.spatial() == 1) {  // as 2-D with a unit height
      for (Shape* s : {&xs, &ws, &ys}) s->insert(s->begin() + 2, 1);
      strides.insert(strides.begin(), 1);
      dilations.insert(dilations.begin(), 1);
      pads.insert(pads.begin(), 0);
    }
    setTensor(x_, xs);
    setTensor(y_, ys);
    std::vector<int> wd = toInts(ws);
    DS_CUDNN_CHECK(cudnnSetFilterNdDescriptor(w_, data_,
                                              nhwc_ ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW,
                                              static_cast<int>(wd.size()), wd.data()));
    std::vector<int> p = toInts(pads), s = toInts(strides), dl = toInts(dilations);
    DS_CUDNN_CHECK(cudnnSetConvolutionNdDescriptor(conv_, static_cast<int>(p.size()), p.data(),
                                                   s.data(), dl.data(), CUDNN_CROSS_CORRELATION,
                                                   CUDNN_DATA_FLOAT));
    DS_CUDNN_CHECK(cudnnSetConvolutionGroupCount(conv_, static_cast<int>(group)));
    // f32: FMA only, since the default math would let cuDNN use TF32 tensor cores.
    // 16-bit: tensor cores, which multiply 16-bit values exactly and accumulate in f32.
    DS_CUDNN_CHECK(cudnnSetConvolutionMathType(
        conv_, t == DType::F32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH));
  }

  ~ConvDescriptors() {
    cudnnDestroyConvolutionDescriptor(conv_);
    cudnnDestroyFilterDescriptor(w_);
    cudnnDestroyTensorDescriptor(y_);
    cudnnDestroyTensorDescriptor(x_);
  }
  ConvDescriptors(const ConvDescriptors&) = delete;
  ConvDescriptors& operator=(const ConvDescriptors&) = delete;

  cudnnTensorDescriptor_t x_ = nullptr, y_ = nullptr;
  cudnnFilterDescriptor_t w_ = nullptr;
  cudnnConvolutionDescriptor_t conv_ = nullptr;

 private:
  void setTensor(cudnnTensorDescriptor_t desc, const Shape& shape) const {
    std::vector<int> dims = toInts(shape), strides(dims.size(), 1);
    for (size_t d = dims.size() - 1; d-- > 0;) strides[d] = strides[d + 1] * dims[d + 1];
    if (nhwc_) strides = {dims[1] * dims[2] * dims[3], 1, dims[3] * dims[1], dims[1]};
    DS_CUDNN_CHECK(cudnnSetTensorNdDescriptor(desc, data_, static_cast<int>(dims.size()),
                                              dims.data(), strides.data()));
  }

  cudnnDataType_t data_;
  bool nhwc_;  // 4-D only: X, Y NHWC and the filter KRSC
};

// Copies a 4-D tensor [a, b, h, w] between the plain and the channels-last layout
// (to_nhwc: [a, b, h·w] -> [a, h·w, b]; else back), walking the destination in order.
Walk layoutWalk(const KernelContext& ctx, const Shape& s, bool to_nhwc) {
  const int64_t a = s[0], b = s[1], p = s[2] * s[3];
  if (to_nhwc) return makeWalk(ctx, {a, p, b}, {{p * b, b, 1}, {b * p, 1, p}});
  return makeWalk(ctx, {a, b, p}, {{b * p, p, 1}, {p * b, 1, b}});
}

size_t aligned(size_t bytes) {
  return (bytes + 255) / 256 * 256;
}

// How a convolution meets the layouts: whether it runs NHWC, the one data operand
// (if any) in the other layout, converted through the workspace, and whether the
// filter needs transposing (NHWC with more than one tap).
struct ConvLayout {
  bool nhwc = false;
  std::optional<cpu::Operand> convert;
  bool filter = false;
};

ConvLayout convLayout(const KernelContext& ctx, ConvPass pass) {
  // The data operands: Forward X -> Y, GradInput dY -> dX, GradWeight dY, X.
  std::vector<cpu::Operand> data = {
      {false, 0},
      {pass != ConvPass::GradWeight, pass == ConvPass::GradWeight ? size_t{1} : size_t{0}}};
  auto view = [&](cpu::Operand o) -> const TensorView& {
    return o.output ? ctx.output(o.index) : ctx.input(o.index);
  };
  ConvLayout l;
  for (cpu::Operand o : data) l.nhwc |= view(o).channels_last;
  if (!l.nhwc) return l;
  for (cpu::Operand o : data)
    if (!view(o).channels_last) l.convert = o;
  const Shape& w = pass == ConvPass::GradWeight ? ctx.output(0).shape() : ctx.input(1).shape();
  l.filter = w.size() == 4 && w[2] * w[3] > 1;
  return l;
}

// cuDNN's ranked algorithms of a pass: by heuristics, or with `benchmark` by
// cuDNN's Find, which times every candidate (allocating its own buffers). Find runs
// once per geometry (`key`) in the process, as PyTorch's benchmark cache does:
// ResNet-101's hundreds of convolution steps have a few dozen geometries. It runs
// under the lock, so ranks sharing the GPU do not time against each other.
std::mutex& findMutex() {  // one for every pass: Finds never time against each other
  static std::mutex mutex;
  return mutex;
}

template <typename Perf, typename Rank>
std::vector<Perf> rankedAlgorithms(const std::string& key, bool benchmark, Rank&& rank) {
  constexpr int kMax = 16;
  static auto* found = new std::map<std::string, std::vector<Perf>>;  // outlives statics
  std::unique_lock<std::mutex> lock(findMutex(), std::defer_lock);
  if (benchmark) {
    lock.lock();
    if (auto it = found->find(key); it != found->end()) return it->second;
  }
  std::array<Perf, kMax> perf{};
  int count = 0;
  DS_CUDNN_CHECK(rank(kMax, &count, perf.data()));
  std::vector<Perf> out(perf.begin(), perf.begin() + std::clamp(count, 0, kMax));
  if (benchmark) (*found)[key] = out;
  return out;
}

// The candidates of cuDNN's ranked list in the order they are tried: succeeded, no
// tensor-op math for f32 (`tensor_ops` false; for 16-bit data tensor-op math is the
// fast path, but never with conversions), and, when `prefer_deterministic`, the
// deterministic ones first.
template <typename Perf>
std::vector<const Perf*> candidateAlgorithms(const std::vector<Perf>& perf, bool tensor_ops,
                                             bool prefer_deterministic) {
  std::vector<const Perf*> out;
  for (bool deterministic_pass : {true, false})
    for (const Perf& p : perf) {
      if (p.status != CUDNN_STATUS_SUCCESS) continue;
      if (p.mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION ||
          (!tensor_ops && p.mathType == CUDNN_TENSOR_OP_MATH))
        continue;
      const bool deterministic = p.determinism == CUDNN_DETERMINISTIC;
      if (prefer_deterministic ? deterministic == deterministic_pass : deterministic_pass)
        out.push_back(&p);
    }
  return out;
}

// What a convolution's ranked algorithms depend on, as a key.
std::string geometryKey(ConvPass pass, DType t, const Shape& x, const Shape& w, const Shape& y,
                        const cpu::Window& win, int64_t group, bool nhwc) {
  std::ostringstream key;
  key << static_cast<int>(pass) << ' ' << dtypeName(t) << ' ' << group << ' ' << nhwc;
  for (const std::vector<int64_t>* v :
       {&x, &w, &y, &win.strides, &win.dilations, &win.pad_begin, &win.pad_end}) {
    key << " |";
    for (int64_t e : *v) key << ' ' << e;
  }
  return key.str();
}

class CudnnConv : public CudaKernel {
 public:
  // `t`: the dtype of every tensor (f32, or f16/bf16 without bias).
  CudnnConv(const KernelContext& ctx, const Device& dev, ConvPass pass, DType t, const Shape& x,
            const Shape& w, const Shape& y, const cpu::Window& win, int64_t group)
      : pass_(pass),
        layout_(convLayout(ctx, pass)),
        desc_(ctx, t, x, w, y, win, group, layout_.nhwc),
        bias_(ctx.hasInput(2)) {
    if (layout_.filter) {
      const TensorView& fv = pass == ConvPass::GradWeight ? ctx.output(0) : ctx.input(1);
      filter_walk_ = layoutWalk(ctx, fv.shape(), pass != ConvPass::GradWeight);
      filter_bytes_ = fv.bytes();
    }
    if (layout_.convert) {
      const cpu::Operand o = *layout_.convert;
      const TensorView& v = o.output ? ctx.output(o.index) : ctx.input(o.index);
      data_walk_ = layoutWalk(ctx, v.shape(), !o.output);  // inputs in, outputs out
      data_bytes_ = v.bytes();
    }
    elem_ = dtypeSize(t);
    if (!dev.cudnn)  // descriptors checked, but algorithms need a device
      throwCudaError("cudnnGetConvolution*Algorithm_v7", "no cuDNN handle", __FILE__, __LINE__);
    usable_ = chooseAlgorithm(dev, t != DType::F32,
                              geometryKey(pass, t, x, w, y, win, group, layout_.nhwc));
    if (!usable_ && t == DType::F32)
      ctx.fail("cuDNN offers no usable f32 algorithm for this convolution");
    if (bias_) {
      DS_CUDNN_CHECK(cudnnCreateTensorDescriptor(&bias_desc_));
      std::vector<int> dims(y.size() < 4 ? 4 : y.size(), 1), strides(dims.size(), 1);
      dims[1] = static_cast<int>(y[1]);
      for (size_t d = dims.size() - 1; d-- > 0;) strides[d] = strides[d + 1] * dims[d + 1];
      DS_CUDNN_CHECK(cudnnSetTensorNdDescriptor(bias_desc_, CUDNN_DATA_FLOAT,
                                                static_cast<int>(dims.size()), dims.data(),
                                                strides.data()));
    }
  }

  ~CudnnConv() override {
    if (bias_desc_) cudnnDestroyTensorDescriptor(bias_desc_);
  }

  // False for a 16-bit convolution without a usable algorithm (it then runs promoted).
  bool usable() const { return usable_; }
  size_t workspaceBytes() const override {
    return aligned(workspace_) + aligned(filter_bytes_) + data_bytes_;
  }

  void run(const KernelContext& ctx, const Device& dev, void* ws) override {
    auto* filter_buf = static_cast<uint8_t*>(ws) + aligned(workspace_);
    auto* data_buf = filter_buf + aligned(filter_bytes_);
    const void* in0 = ctx.input(0).data;
    const void* in1 = ctx.input(1).data;
    void* out = ctx.output(0).data;
    // Operands in the convolution's layout: converted inputs, redirected outputs.
    if (layout_.convert && !layout_.convert->output) {
      const void*& in = layout_.convert->index == 0 ? in0 : in1;
      stridedCopy(elem_, in, data_buf, data_walk_, dev.stream);
      in = data_buf;
    }
    if (layout_.filter && pass_ != ConvPass::GradWeight) {
      stridedCopy(elem_, in1, filter_buf, filter_walk_, dev.stream);
      in1 = filter_buf;
    }
    void* result = layout_.convert && layout_.convert->output        ? data_buf
                   : layout_.filter && pass_ == ConvPass::GradWeight ? filter_buf
                                                                     : out;
    compute(ctx, dev, ws, in0, in1, result);
    if (result != out)
      stridedCopy(elem_, result, out, result == filter_buf ? filter_walk_ : data_walk_, dev.stream);
  }

 private:
  void compute(const KernelContext& ctx, const Device& dev, void* ws, const void* in0,
               const void* in1, void* out) const {
    const float one = 1.0f, zero = 0.0f;
    switch (pass_) {
      case ConvPass::Forward:  // Conv(X, W[, B]) -> Y
        DS_CUDNN_CHECK(cudnnConvolutionForward(dev.cudnn, &one, desc_.x_, in0, desc_.w_, in1,
                                               desc_.conv_, fwd_, ws, workspace_, &zero, desc_.y_,
                                               out));
        if (bias_)
          DS_CUDNN_CHECK(
              cudnnAddTensor(dev.cudnn, &one, bias_desc_, ctx.input(2).data, &one, desc_.y_, out));
        return;
      case ConvPass::GradInput:  // ConvGradInput(dY, W) -> dX
        DS_CUDNN_CHECK(cudnnConvolutionBackwardData(dev.cudnn, &one, desc_.w_, in1, desc_.y_, in0,
                                                    desc_.conv_, bwd_data_, ws, workspace_, &zero,
                                                    desc_.x_, out));
        return;
      case ConvPass::GradWeight:  // ConvGradWeight(dY, X) -> dW
        DS_CUDNN_CHECK(cudnnConvolutionBackwardFilter(dev.cudnn, &one, desc_.x_, in1, desc_.y_, in0,
                                                      desc_.conv_, bwd_filter_, ws, workspace_,
                                                      &zero, desc_.w_, out));
        return;
    }
  }

  // cuDNN's ranked algorithms for this pass (by heuristics, or by measured time
  // with dev.benchmark): the first candidate whose workspace cuDNN can state and is
  // within kMaxConvWorkspace. A 16-bit algorithm runs with the math type it was
  // ranked with (cuDNN's rule for its perf results; f32 keeps FMA math). The
  // workspace is what cuDNN asks for that algorithm and math type, which a
  // heuristic's or a timed result's `memory` can understate.
  bool chooseAlgorithm(const Device& dev, bool tensor_ops, const std::string& key) {
    const ConvDescriptors& d = desc_;
    const cudnnMathType_t math = tensor_ops ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH;
    auto take = [&](const auto& ranked, auto* algo, auto&& workspace_size) {
      for (const auto* p : candidateAlgorithms(ranked, tensor_ops, !dev.benchmark)) {
        size_t bytes = 0;
        if ((tensor_ops &&
             cudnnSetConvolutionMathType(d.conv_, p->mathType) != CUDNN_STATUS_SUCCESS) ||
            workspace_size(p->algo, &bytes) != CUDNN_STATUS_SUCCESS ||
            std::max(p->memory, bytes) > kMaxConvWorkspace) {
          DS_CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv_, math));
          continue;
        }
        *algo = p->algo;
        workspace_ = std::max(p->memory, bytes);
        return true;
      }
      return false;
    };
    if (pass_ == ConvPass::Forward)
      return take(rankedAlgorithms<cudnnConvolutionFwdAlgoPerf_t>(
                      key, dev.benchmark,
                      [&](int n, int* count, cudnnConvolutionFwdAlgoPerf_t* perf) {
                        return dev.benchmark
                                   ? cudnnFindConvolutionForwardAlgorithm(
                                         dev.cudnn, d.x_, d.w_, d.conv_, d.y_, n, count, perf)
                                   : cudnnGetConvolutionForwardAlgorithm_v7(
                                         dev.cudnn, d.x_, d.w_, d.conv_, d.y_, n, count, perf);
                      }),
                  &fwd_, [&](cudnnConvolutionFwdAlgo_t a, size_t* bytes) {
                    return cudnnGetConvolutionForwardWorkspaceSize(dev.cudnn, d.x_, d.w_, d.conv_,
                                                                   d.y_, a, bytes);
                  });
    if (pass_ == ConvPass::GradInput)
      return take(rankedAlgorithms<cudnnConvolutionBwdDataAlgoPerf_t>(
                      key, dev.benchmark,
                      [&](int n, int* count, cudnnConvolutionBwdDataAlgoPerf_t* perf) {
                        return dev.benchmark
                                   ? cudnnFindConvolutionBackwardDataAlgorithm(
                                         dev.cudnn, d.w_, d.y_, d.conv_, d.x_, n, count, perf)
                                   : cudnnGetConvolutionBackwardDataAlgorithm_v7(
                                         dev.cudnn, d.w_, d.y_, d.conv_, d.x_, n, count, perf);
                      }),
                  &bwd_data_, [&](cudnnConvolutionBwdDataAlgo_t a, size_t* bytes) {
                    return cudnnGetConvolutionBackwardDataWorkspaceSize(dev.cudnn, d.w_, d.y_,
                                                                        d.conv_, d.x_, a, bytes);
                  });
    return take(rankedAlgorithms<cudnnConvolutionBwdFilterAlgoPerf_t>(
                    key, dev.benchmark,
                    [&](int n, int* count, cudnnConvolutionBwdFilterAlgoPerf_t* perf) {
                      return dev.benchmark
                                 ? cudnnFindConvolutionBackwardFilterAlgorithm(
                                       dev.cudnn, d.x_, d.y_, d.conv_, d.w_, n, count, perf)
                                 : cudnnGetConvolutionBackwardFilterAlgorithm_v7(
                                       dev.cudnn, d.x_, d.y_, d.conv_, d.w_, n, count, perf);
                    }),
                &bwd_filter_, [&](cudnnConvolutionBwdFilterAlgo_t a, size_t* bytes) {
                  return cudnnGetConvolutionBackwardFilterWorkspaceSize(dev.cudnn, d.x_, d.y_,
                                                                        d.conv_, d.w_, a, bytes);
                });
  }

  ConvPass pass_;
  ConvLayout layout_;
  ConvDescriptors desc_;
  Walk filter_walk_, data_walk_;  // layout conversions (ConvLayout)
  size_t filter_bytes_ = 0, data_bytes_ = 0, elem_ = 0;
  bool bias_;
  bool usable_ = false;
  cudnnTensorDescriptor_t bias_desc_ = nullptr;
  cudnnConvolutionFwdAlgo_t fwd_{};
  cudnnConvolutionBwdDataAlgo_t bwd_data_{};
  cudnnConvolutionBwdFilterAlgo_t bwd_filter_{};
  size_t workspace_ = 0;
};

// The dtype every tensor of the step has when it can run natively: f32 (checked
// as before), or f16/bf16 without bias; nullopt for a 16-bit step to run promoted.
std::optional<DType> convDType(const KernelContext& ctx) {
  std::optional<DType> t = uniformFloatDType(ctx);
  if (t == DType::F32) {
    requireF32(ctx, 0);
    requireF32(ctx, 1);
    return t;
  }
  if (ctx.hasInput(2)) return std::nullopt;
  return t;
}

template <ConvPass kPass>
std::unique_ptr<CudaKernel> makeConv(const KernelContext& ctx, const Device& dev) {
  const std::optional<DType> dtype = convDType(ctx);
  if (!dtype) return nullptr;
  const bool fwd = kPass == ConvPass::Forward, weights = kPass == ConvPass::GradWeight;
  // Forward shapes: X, W, Y in the forward op's terms.
  const Shape& x = fwd       ? ctx.input(0).shape()
                   : weights ? ctx.input(1).shape()
                             : ctx.output(0).shape();
  const Shape& w = weights ? ctx.output(0).shape() : ctx.input(1).shape();
  const Shape& y = fwd ? ctx.output(0).shape() : ctx.input(0).shape();
  std::vector<int64_t> kernel(w.begin() + 2, w.end());
  cpu::Window win = fwd ? cpu::resolveWindow(ctx, kernel) : cpu::forwardWindow(ctx, x, y, kernel);
  if (win.spatial() > 3) ctx.fail("more than 3 spatial dims");
  if (ctx.output(0).numel() == 0) return noopKernel();
  if (!fwd && ctx.input(0).numel() == 0)  // no output positions: nothing flows back
    return launchKernel([](const KernelContext& c, const Device& d, void*) {
      DS_CUDA_CHECK(cudaMemsetAsync(c.output(0).data, 0, c.output(0).bytes(), d.stream));
    });
  auto conv = std::make_unique<CudnnConv>(ctx, dev, kPass, *dtype, x, w, y, win, ctx.i("group"));
  if (!conv->usable()) return nullptr;  // 16-bit only: f32 failed above
  return conv;
}

}  // namespace

void registerConvKernels(CudaKernelRegistry& r) {
  r.add("Conv", makeConv<ConvPass::Forward>, Precision::Native16);
  r.add("ConvGradInput", makeConv<ConvPass::GradInput>, Precision::Native16);
  r.add("ConvGradWeight", makeConv<ConvPass::GradWeight>, Precision::Native16);
  // Each data operand in either layout (ConvLayout); the filter stays plain. Not a
  // 16-bit Conv with bias, which runs promoted (convDType).
  r.allowChannelsLast("Conv", [](const KernelContext& ctx) -> cpu::OperandGroups {
    return ctx.hasInput(2) ? cpu::OperandGroups{} : cpu::dataInOutSeparately(ctx);
  });
  r.allowChannelsLast("ConvGradInput", cpu::dataInOutSeparately);
  r.allowChannelsLast("ConvGradWeight", [](const KernelContext& ctx) -> cpu::OperandGroups {
    if (ctx.input(0).rank() != 4) return {};
    return {{{false, 0}}, {{false, 1}}};
  });
}

}  // namespace ds::cuda
