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
// f16 and bf16 (Native16) run natively when every tensor has that dtype: 16-bit
// descriptors with f32 compute (cuDNN's PSEUDO_HALF / PSEUDO_BFLOAT16 configs:
// f32 accumulation, one rounding of each output) on tensor cores. A 16-bit Conv
// with bias runs promoted instead: cuDNN's output is already rounded, and adding
// the bias to it (cudnnAddTensor) would round twice where the CPU's promotion
// rounds once. So do mixed dtypes and shapes cuDNN has no 16-bit algorithm for.
#include <algorithm>
#include <array>
#include <optional>
#include <type_traits>

#include "kernels/cpu/grad_util.h"
#include "kernels/cpu/window.h"
#include "kernels/cuda/cuda_util.h"

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
                  const cpu::Window& win, int64_t group)
      : data_(cudnnTypeOf(t)) {
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
    DS_CUDNN_CHECK(cudnnSetFilterNdDescriptor(w_, data_, CUDNN_TENSOR_NCHW,
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
    DS_CUDNN_CHECK(cudnnSetTensorNdDescriptor(desc, data_, static_cast<int>(dims.size()),
                                              dims.data(), strides.data()));
  }

  cudnnDataType_t data_;
};

// The first usable algorithm of cuDNN's ranked list: succeeded, workspace within
// bounds, no tensor-op math for f32 (`tensor_ops` false; for 16-bit data tensor-op
// math is the fast path, but never with conversions), and, when
// `prefer_deterministic`, deterministic when one is (falling back to any usable
// one). Null when none is usable.
template <typename Perf>
const Perf* pickAlgorithm(const Perf* perf, int count, bool tensor_ops, bool prefer_deterministic) {
  for (bool need_deterministic : {prefer_deterministic, false})
    for (int i = 0; i < count; ++i) {
      const Perf& p = perf[i];
      if (p.status != CUDNN_STATUS_SUCCESS || p.memory > kMaxConvWorkspace) continue;
      if (p.mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION ||
          (!tensor_ops && p.mathType == CUDNN_TENSOR_OP_MATH))
        continue;
      if (need_deterministic && p.determinism != CUDNN_DETERMINISTIC) continue;
      return &p;
    }
  return nullptr;
}

class CudnnConv : public CudaKernel {
 public:
  // `t`: the dtype of every tensor (f32, or f16/bf16 without bias).
  CudnnConv(const KernelContext& ctx, const Device& dev, ConvPass pass, DType t, const Shape& x,
            const Shape& w, const Shape& y, const cpu::Window& win, int64_t group)
      : pass_(pass), desc_(ctx, t, x, w, y, win, group), bias_(ctx.hasInput(2)) {
    if (!dev.cudnn)  // descriptors checked, but algorithms need a device
      throwCudaError("cudnnGetConvolution*Algorithm_v7", "no cuDNN handle", __FILE__, __LINE__);
    usable_ = chooseAlgorithm(dev, t != DType::F32);
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
  size_t workspaceBytes() const override { return workspace_; }

  void run(const KernelContext& ctx, const Device& dev, void* ws) override {
    const float one = 1.0f, zero = 0.0f;
    const void* in0 = ctx.input(0).data;
    const void* in1 = ctx.input(1).data;
    void* out = ctx.output(0).data;
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

 private:
  // cuDNN's ranked algorithms for this pass (by heuristics, or by measured time
  // with dev.benchmark), the first usable one taken.
  bool chooseAlgorithm(const Device& dev, bool tensor_ops) {
    constexpr int kMax = 16;
    int count = 0;
    const ConvDescriptors& d = desc_;
    // A 16-bit algorithm runs with the math type it was ranked with (cuDNN's rule for
    // its perf results; f32 keeps FMA math). The workspace is what cuDNN asks for that
    // algorithm and math type, which a timed result's `memory` can understate.
    auto take = [&](const auto* p, auto* algo) {
      if (!p) return false;
      *algo = p->algo;
      if (tensor_ops) DS_CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv_, p->mathType));
      size_t bytes = 0;
      if constexpr (std::is_same_v<decltype(p->algo), cudnnConvolutionFwdAlgo_t>)
        DS_CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(dev.cudnn, d.x_, d.w_, d.conv_, d.y_,
                                                               p->algo, &bytes));
      else if constexpr (std::is_same_v<decltype(p->algo), cudnnConvolutionBwdDataAlgo_t>)
        DS_CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(dev.cudnn, d.w_, d.y_, d.conv_,
                                                                    d.x_, p->algo, &bytes));
      else
        DS_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(
            dev.cudnn, d.x_, d.y_, d.conv_, d.w_, p->algo, &bytes));
      workspace_ = std::max(p->memory, bytes);
      return true;
    };
    if (pass_ == ConvPass::Forward) {
      std::array<cudnnConvolutionFwdAlgoPerf_t, kMax> perf{};
      DS_CUDNN_CHECK(dev.benchmark
                         ? cudnnFindConvolutionForwardAlgorithm(dev.cudnn, d.x_, d.w_, d.conv_,
                                                                d.y_, kMax, &count, perf.data())
                         : cudnnGetConvolutionForwardAlgorithm_v7(dev.cudnn, d.x_, d.w_, d.conv_,
                                                                  d.y_, kMax, &count, perf.data()));
      return take(pickAlgorithm(perf.data(), count, tensor_ops, !dev.benchmark), &fwd_);
    }
    if (pass_ == ConvPass::GradInput) {
      std::array<cudnnConvolutionBwdDataAlgoPerf_t, kMax> perf{};
      DS_CUDNN_CHECK(dev.benchmark
                         ? cudnnFindConvolutionBackwardDataAlgorithm(
                               dev.cudnn, d.w_, d.y_, d.conv_, d.x_, kMax, &count, perf.data())
                         : cudnnGetConvolutionBackwardDataAlgorithm_v7(
                               dev.cudnn, d.w_, d.y_, d.conv_, d.x_, kMax, &count, perf.data()));
      return take(pickAlgorithm(perf.data(), count, tensor_ops, !dev.benchmark), &bwd_data_);
    }
    std::array<cudnnConvolutionBwdFilterAlgoPerf_t, kMax> perf{};
    DS_CUDNN_CHECK(dev.benchmark
                       ? cudnnFindConvolutionBackwardFilterAlgorithm(
                             dev.cudnn, d.x_, d.y_, d.conv_, d.w_, kMax, &count, perf.data())
                       : cudnnGetConvolutionBackwardFilterAlgorithm_v7(
                             dev.cudnn, d.x_, d.y_, d.conv_, d.w_, kMax, &count, perf.data()));
    return take(pickAlgorithm(perf.data(), count, tensor_ops, !dev.benchmark), &bwd_filter_);
  }

  ConvPass pass_;
  ConvDescriptors desc_;
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
}

}  // namespace ds::cuda
