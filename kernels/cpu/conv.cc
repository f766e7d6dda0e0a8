// Conv (1-D/2-D/3-D, groups, dilations, strides, pads/auto_pad, optional bias).
// f32 runs oneDNN's convolution_forward; the primitive, its memories and any
// reorders are built once in the factory. f64 runs a direct reference loop (for
// high-precision oracles, not for speed).
//
// Layout: the primitive is created with format_tag::any for src, weights and dst,
// and a tensor whose chosen layout differs from the one it has in memory is
// reordered. On AVX-512 oneDNN picks brgconv with NHWC src/dst and blocked weights
// (one thread, N=8 64->64 3x3 pad 1 at 56x56: 13 ms, against 30 ms for the
// all-plain NCHW primitive), so activations the executor keeps channels-last
// (TensorView::channels_last, kernels/cpu/layout.h) need no reorder at all, and
// constant weights are reordered once, at the first run.
#include <string>

#include "kernels/cpu/dnnl_util.h"
#include "kernels/cpu/layout.h"
#include "kernels/cpu/nn.h"
#include "kernels/cpu/window.h"

namespace ds::cpu {

namespace {

using dnnl::memory;

class DnnlConv : public CpuKernel {
 public:
  DnnlConv(const KernelContext& ctx, const Window& w, int64_t group) {
    memory::dims src_d = toDims(ctx.input(0).shape()), dst_d = toDims(ctx.output(0).shape());
    memory::dims wei_d = weightDims(ctx.input(1).shape(), group);
    memory::desc bias_md = ctx.hasInput(2) ? plainDesc({dst_d[1]}) : memory::desc();
    dnnl::convolution_forward::desc desc(
        dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, anyDesc(src_d),
        anyDesc(wei_d), bias_md, anyDesc(dst_d), toDims(w.strides), minusOne(w.dilations),
        toDims(w.pad_begin), toDims(w.pad_end));
    std::vector<std::pair<int, memory>> post_args;
    dnnl::convolution_forward::primitive_desc pd(
        desc, epilogueAttr(ctx.epilogue, dst_d, &post_args), dnnlEngine());
    memory src = input(ctx.input(0), src_d, pd.src_desc());
    memory wei = input(ctx.input(1), wei_d, pd.weights_desc());
    memory dst_user = wrapMemory(userDesc(ctx.output(0), dst_d), ctx.output(0).data);
    memory dst =
        pd.dst_desc() == dst_user.get_desc() ? dst_user : memory(pd.dst_desc(), dnnlEngine());
    DnnlCall conv(dnnl::convolution_forward(pd), pd);
    conv.arg(DNNL_ARG_SRC, src);
    conv.arg(DNNL_ARG_WEIGHTS, wei);
    if (ctx.hasInput(2)) conv.arg(DNNL_ARG_BIAS, wrapMemory(bias_md, ctx.input(2).data));
    conv.arg(DNNL_ARG_DST, dst);
    for (const auto& [which, mem] : post_args) conv.arg(which, mem);
    calls_.push_back(std::move(conv));
    if (dst != dst_user) calls_.push_back(reorderCall(dst, dst_user));
  }

  void run(const KernelContext&) override {
    if (!packed_)
      for (const DnnlCall& c : packs_) c.execute();
    packed_ = true;
    for (const DnnlCall& c : calls_) c.execute();
  }

 private:
  static memory::desc userDesc(const TensorView& v, const memory::dims& dims) {
    if (!v.channels_last) return plainDesc(dims);
    return memory::desc(dims, memory::data_type::f32, memory::format_tag::nhwc);
  }

  // `v` in the layout the primitive wants: its own memory, or a buffer refreshed
  // by a reorder before each convolution (once, before the first, when constant).
  memory input(const TensorView& v, const memory::dims& dims, const memory::desc& want) {
    memory user = wrapMemory(userDesc(v, dims), v.data);
    if (user.get_desc() == want) return user;
    memory buf(want, dnnlEngine());
    (v.constant ? packs_ : calls_).push_back(reorderCall(user, buf));
    return buf;
  }

  std::vector<DnnlCall> calls_;
  std::vector<DnnlCall> packs_;  // one-time reorders of constant operands (weights)
  bool packed_ = false;
};

// Direct convolution on the 3-D form of the window, accumulating in double.
template <typename T>
void convReference(const KernelContext& ctx, const Window& w, int64_t group) {
  const T* x = ctx.input(0).as<T>();
  const T* wt = ctx.input(1).as<T>();
  const T* bias = ctx.hasInput(2) ? ctx.input(2).as<T>() : nullptr;
  T* y = ctx.output(0).as<T>();
  int64_t icg = w.c_in / group, ocg = w.c_out / group;
  int64_t in_size = w.inSize(), out_size = w.outSize();
  int64_t ksize = w.kernel[0] * w.kernel[1] * w.kernel[2];
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < w.n; ++n) {
    for (int64_t oc = 0; oc < w.c_out; ++oc) {
      int64_t g = oc / ocg;
      const T* xg = x + (n * w.c_in + g * icg) * in_size;
      const T* wo = wt + oc * icg * ksize;
      T* yo = y + (n * w.c_out + oc) * out_size;
      for (int64_t o = 0; o < out_size; ++o) {
        int64_t od = o / (w.out[1] * w.out[2]), oh = o / w.out[2] % w.out[1], ow = o % w.out[2];
        double acc = bias ? static_cast<double>(bias[oc]) : 0.0;
        for (int64_t c = 0; c < icg; ++c) {
          const T* xc = xg + c * in_size;
          const T* wc = wo + c * ksize;
          for (int64_t kd = 0; kd < w.kernel[0]; ++kd) {
            int64_t id = od * w.strides[0] - w.pad_begin[0] + kd * w.dilations[0];
            if (id < 0 || id >= w.in[0]) continue;
            for (int64_t kh = 0; kh < w.kernel[1]; ++kh) {
              int64_t ih = oh * w.strides[1] - w.pad_begin[1] + kh * w.dilations[1];
              if (ih < 0 || ih >= w.in[1]) continue;
              const T* xrow = xc + (id * w.in[1] + ih) * w.in[2];
              const T* wrow = wc + (kd * w.kernel[1] + kh) * w.kernel[2];
              for (int64_t kw = 0; kw < w.kernel[2]; ++kw) {
                int64_t iw = ow * w.strides[2] - w.pad_begin[2] + kw * w.dilations[2];
                if (iw >= 0 && iw < w.in[2]) acc += static_cast<double>(xrow[iw]) * wrow[kw];
              }
            }
          }
        }
        yo[o] = static_cast<T>(acc);
      }
    }
  }
}

std::unique_ptr<CpuKernel> makeConv(const KernelContext& ctx) {
  DType t = requireF32OrF64(ctx, 0);
  const Shape& ws = ctx.input(1).shape();
  Window w = resolveWindow(ctx, std::vector<int64_t>(ws.begin() + 2, ws.end()));
  int64_t group = ctx.i("group");
  if (ctx.output(0).numel() == 0) return noopKernel();
  if (t == DType::F32) return std::make_unique<DnnlConv>(ctx, w, group);
  return statelessKernel(
      [w3 = w.as3d(), group](const KernelContext& c) { convReference<double>(c, w3, group); });
}

}  // namespace

void registerConvKernels(CpuKernelRegistry& r) {
  r.add("Conv", makeConv);
  r.allowEpilogue("Conv", [](const KernelContext& ctx, const Epilogue& next) {
    return ctx.input(0).dtype() == DType::F32 && next.op == "Relu";  // a oneDNN post-op
  });
  r.allowChannelsLast("Conv", [](const KernelContext& ctx) {
    return ctx.input(0).dtype() == DType::F32 ? dataInOutSeparately(ctx) : OperandGroups{};
  });
}

}  // namespace ds::cpu
