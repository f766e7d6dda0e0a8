// Conv, ConvGradInput and ConvGradWeight on cuDNN (CPU twins: kernels/cpu/conv.cc,
// grad_conv.cc). The factory builds the descriptors (1-D windows become 2-D with a
// unit height), sets FMA math so f32 never runs on TF32 tensor cores (results stay
// within 1e-4 of the CPU oracle), and picks the algorithm once from cuDNN's
// heuristics: the first that succeeds, preferring deterministic backward
// algorithms; its workspace comes from the executor's shared workspace.
// cuDNN pads symmetrically, so a window with different begin and end pads fails
// at load, naming the node.
#include <algorithm>
#include <array>

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

// cuDNN descriptors of one convolution, destroyed with the kernel.
class ConvDescriptors {
 public:
  ConvDescriptors(const KernelContext& ctx, const Shape& x, const Shape& w, const Shape& y,
                  const cpu::Window& win, int64_t group) {
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
    DS_CUDNN_CHECK(cudnnSetFilterNdDescriptor(w_, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW,
                                              static_cast<int>(wd.size()), wd.data()));
    std::vector<int> p = toInts(pads), s = toInts(strides), dl = toInts(dilations);
    DS_CUDNN_CHECK(cudnnSetConvolutionNdDescriptor(conv_, static_cast<int>(p.size()), p.data(),
                                                   s.data(), dl.data(), CUDNN_CROSS_CORRELATION,
                                                   CUDNN_DATA_FLOAT));
    DS_CUDNN_CHECK(cudnnSetConvolutionGroupCount(conv_, static_cast<int>(group)));
    // FMA only: the default math would let cuDNN use TF32 tensor cores for f32.
    DS_CUDNN_CHECK(cudnnSetConvolutionMathType(conv_, CUDNN_FMA_MATH));
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
  static void setTensor(cudnnTensorDescriptor_t desc, const Shape& shape) {
    std::vector<int> dims = toInts(shape), strides(dims.size(), 1);
    for (size_t d = dims.size() - 1; d-- > 0;) strides[d] = strides[d + 1] * dims[d + 1];
    DS_CUDNN_CHECK(cudnnSetTensorNdDescriptor(desc, CUDNN_DATA_FLOAT, static_cast<int>(dims.size()),
                                              dims.data(), strides.data()));
  }
};

// The first usable algorithm of cuDNN's ranked list: succeeded, no tensor-op
// math, workspace within bounds, and deterministic when `deterministic` (falling
// back to any usable one when none is).
template <typename Perf>
Perf pickAlgorithm(const KernelContext& ctx, const Perf* perf, int count) {
  for (bool need_deterministic : {true, false})
    for (int i = 0; i < count; ++i) {
      const Perf& p = perf[i];
      if (p.status != CUDNN_STATUS_SUCCESS || p.memory > kMaxConvWorkspace) continue;
      if (p.mathType == CUDNN_TENSOR_OP_MATH || p.mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION)
        continue;
      if (need_deterministic && p.determinism != CUDNN_DETERMINISTIC) continue;
      return p;
    }
  ctx.fail("cuDNN offers no usable f32 algorithm for this convolution");
}

class CudnnConv : public CudaKernel {
 public:
  CudnnConv(const KernelContext& ctx, const Device& dev, ConvPass pass, const Shape& x,
            const Shape& w, const Shape& y, const cpu::Window& win, int64_t group)
      : pass_(pass), desc_(ctx, x, w, y, win, group), bias_(ctx.hasInput(2)) {
    if (!dev.cudnn)  // descriptors checked, but algorithms need a device
      throwCudaError("cudnnGetConvolution*Algorithm_v7", "no cuDNN handle", __FILE__, __LINE__);
    constexpr int kMax = 16;
    int count = 0;
    if (pass == ConvPass::Forward) {
      std::array<cudnnConvolutionFwdAlgoPerf_t, kMax> perf{};
      DS_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(
          dev.cudnn, desc_.x_, desc_.w_, desc_.conv_, desc_.y_, kMax, &count, perf.data()));
      auto p = pickAlgorithm(ctx, perf.data(), count);
      fwd_ = p.algo;
      workspace_ = p.memory;
    } else if (pass == ConvPass::GradInput) {
      std::array<cudnnConvolutionBwdDataAlgoPerf_t, kMax> perf{};
      DS_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(
          dev.cudnn, desc_.w_, desc_.y_, desc_.conv_, desc_.x_, kMax, &count, perf.data()));
      auto p = pickAlgorithm(ctx, perf.data(), count);
      bwd_data_ = p.algo;
      workspace_ = p.memory;
    } else {
      std::array<cudnnConvolutionBwdFilterAlgoPerf_t, kMax> perf{};
      DS_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
          dev.cudnn, desc_.x_, desc_.y_, desc_.conv_, desc_.w_, kMax, &count, perf.data()));
      auto p = pickAlgorithm(ctx, perf.data(), count);
      bwd_filter_ = p.algo;
      workspace_ = p.memory;
    }
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
  ConvPass pass_;
  ConvDescriptors desc_;
  bool bias_;
  cudnnTensorDescriptor_t bias_desc_ = nullptr;
  cudnnConvolutionFwdAlgo_t fwd_{};
  cudnnConvolutionBwdDataAlgo_t bwd_data_{};
  cudnnConvolutionBwdFilterAlgo_t bwd_filter_{};
  size_t workspace_ = 0;
};

template <ConvPass kPass>
std::unique_ptr<CudaKernel> makeConv(const KernelContext& ctx, const Device& dev) {
  requireF32(ctx, 0);
  requireF32(ctx, 1);
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
  return std::make_unique<CudnnConv>(ctx, dev, kPass, x, w, y, win, ctx.i("group"));
}

}  // namespace

void registerConvKernels(CudaKernelRegistry& r) {
  r.add("Conv", makeConv<ConvPass::Forward>);
  r.add("ConvGradInput", makeConv<ConvPass::GradInput>);
  r.add("ConvGradWeight", makeConv<ConvPass::GradWeight>);
}

}  // namespace ds::cuda
