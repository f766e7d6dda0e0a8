// Conv backward: ConvGradInput(dY, W) -> dX and ConvGradWeight(dY, X) -> dW, with
// groups, strides, dilations and pads/auto_pad as in the forward Conv.
// f32 runs oneDNN's convolution_backward_data / convolution_backward_weights,
// built once in the factory with a forward_training primitive descriptor as the
// layout hint; like the forward kernel (conv.cc) every tensor whose preferred
// layout differs from plain NCHW/OIHW is reordered on each run. f64 runs direct
// reference loops accumulating in double (oracles, not speed), each output
// element a gather over its contributions, so threads never write the same element.
#include <cstring>

#include "kernels/cpu/dnnl_util.h"
#include "kernels/cpu/grad_util.h"
#include "kernels/cpu/nn.h"

namespace ds::cpu {

namespace {

using dnnl::memory;

// Geometry of one backward step in oneDNN terms.
struct ConvDims {
  memory::dims src, wei, dst, strides, dilates, pad_l, pad_r;
};

class DnnlConvGrad : public CpuKernel {
 public:
  // weights: ConvGradWeight (inputs dY, X; output dW), else ConvGradInput (dY, W; dX).
  DnnlConvGrad(const KernelContext& ctx, const Window& w, int64_t group, bool weights) {
    const Shape& xs = weights ? ctx.input(1).shape() : ctx.output(0).shape();
    const Shape& ws = weights ? ctx.output(0).shape() : ctx.input(1).shape();
    ConvDims d{toDims(xs),        weightDims(ws, group), toDims(ctx.input(0).shape()),
               toDims(w.strides), minusOne(w.dilations), toDims(w.pad_begin),
               toDims(w.pad_end)};
    dnnl::convolution_forward::desc fwd(
        dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, anyDesc(d.src),
        anyDesc(d.wei), anyDesc(d.dst), d.strides, d.dilates, d.pad_l, d.pad_r);
    dnnl::convolution_forward::primitive_desc hint(fwd, dnnlEngine());
    if (weights)
      buildWeights(ctx, d, hint);
    else
      buildData(ctx, d, hint);
  }

  void run(const KernelContext&) override {
    for (const DnnlCall& c : calls_) c.execute();
  }

 private:
  void buildData(const KernelContext& ctx, const ConvDims& d,
                 const dnnl::convolution_forward::primitive_desc& hint) {
    dnnl::convolution_backward_data::desc desc(dnnl::algorithm::convolution_direct, anyDesc(d.src),
                                               anyDesc(d.wei), anyDesc(d.dst), d.strides, d.dilates,
                                               d.pad_l, d.pad_r);
    dnnl::convolution_backward_data::primitive_desc pd(desc, scratchpadAttr(), dnnlEngine(), hint);
    memory dy = input(wrapMemory(plainDesc(d.dst), ctx.input(0).data), pd.diff_dst_desc());
    memory wei = input(wrapMemory(plainDesc(d.wei), ctx.input(1).data), pd.weights_desc());
    memory dx_user = wrapMemory(plainDesc(d.src), ctx.output(0).data);
    memory dx = output(dx_user, pd.diff_src_desc());
    DnnlCall call(dnnl::convolution_backward_data(pd), pd);
    call.arg(DNNL_ARG_DIFF_DST, dy);
    call.arg(DNNL_ARG_WEIGHTS, wei);
    call.arg(DNNL_ARG_DIFF_SRC, dx);
    finish(std::move(call), dx, dx_user);
  }

  void buildWeights(const KernelContext& ctx, const ConvDims& d,
                    const dnnl::convolution_forward::primitive_desc& hint) {
    dnnl::convolution_backward_weights::desc desc(dnnl::algorithm::convolution_direct,
                                                  anyDesc(d.src), anyDesc(d.wei), anyDesc(d.dst),
                                                  d.strides, d.dilates, d.pad_l, d.pad_r);
    dnnl::convolution_backward_weights::primitive_desc pd(desc, scratchpadAttr(), dnnlEngine(),
                                                          hint);
    memory dy = input(wrapMemory(plainDesc(d.dst), ctx.input(0).data), pd.diff_dst_desc());
    memory x = input(wrapMemory(plainDesc(d.src), ctx.input(1).data), pd.src_desc());
    memory dw_user = wrapMemory(plainDesc(d.wei), ctx.output(0).data);
    memory dw = output(dw_user, pd.diff_weights_desc());
    DnnlCall call(dnnl::convolution_backward_weights(pd), pd);
    call.arg(DNNL_ARG_DIFF_DST, dy);
    call.arg(DNNL_ARG_SRC, x);
    call.arg(DNNL_ARG_DIFF_WEIGHTS, dw);
    finish(std::move(call), dw, dw_user);
  }

  // `user` in the layout the primitive wants: itself, or a buffer refreshed by a
  // reorder that runs before the primitive.
  memory input(const memory& user, const memory::desc& want) {
    if (user.get_desc() == want) return user;
    memory buf(want, dnnlEngine());
    calls_.push_back(reorderCall(user, buf));
    return buf;
  }

  static memory output(const memory& user, const memory::desc& want) {
    return user.get_desc() == want ? user : memory(want, dnnlEngine());
  }

  void finish(DnnlCall call, const memory& result, const memory& user) {
    calls_.push_back(std::move(call));
    if (result != user) calls_.push_back(reorderCall(result, user));
  }

  std::vector<DnnlCall> calls_;
};

// Index of tap k at output index o along one dim, or -1 outside the input.
inline int64_t tapPos(const Window& w, int d, int64_t o, int64_t k) {
  int64_t p = o * w.strides[d] - w.pad_begin[d] + k * w.dilations[d];
  return p >= 0 && p < w.in[d] ? p : -1;
}

// Output index whose tap k lands on input index i along one dim, or -1 when none does.
inline int64_t outFor(const Window& w, int d, int64_t i, int64_t k) {
  int64_t t = i + w.pad_begin[d] - k * w.dilations[d];
  if (t < 0 || t % w.strides[d] != 0) return -1;
  t /= w.strides[d];
  return t < w.out[d] ? t : -1;
}

// dX[n, ic, i] = Σ_{oc of ic's group} Σ_k W[oc, ic mod icg, k] · dY[n, oc, o(i, k)].
template <typename T>
void convGradInputRef(const KernelContext& ctx, const Window& w, int64_t group) {
  const T* dy = ctx.input(0).as<T>();
  const T* wt = ctx.input(1).as<T>();
  T* dx = ctx.output(0).as<T>();
  int64_t icg = w.c_in / group, ocg = w.c_out / group;
  int64_t in_size = w.inSize(), out_size = w.outSize();
  int64_t ksize = w.kernel[0] * w.kernel[1] * w.kernel[2];
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < w.n; ++n) {
    for (int64_t ic = 0; ic < w.c_in; ++ic) {
      int64_t g = ic / icg;
      T* dxc = dx + (n * w.c_in + ic) * in_size;
      for (int64_t i = 0; i < in_size; ++i) {
        int64_t id = i / (w.in[1] * w.in[2]), ih = i / w.in[2] % w.in[1], iw = i % w.in[2];
        double acc = 0.0;
        for (int64_t oc = g * ocg; oc < (g + 1) * ocg; ++oc) {
          const T* wc = wt + (oc * icg + ic % icg) * ksize;
          const T* dyo = dy + (n * w.c_out + oc) * out_size;
          for (int64_t kd = 0; kd < w.kernel[0]; ++kd) {
            int64_t od = outFor(w, 0, id, kd);
            if (od < 0) continue;
            for (int64_t kh = 0; kh < w.kernel[1]; ++kh) {
              int64_t oh = outFor(w, 1, ih, kh);
              if (oh < 0) continue;
              for (int64_t kw = 0; kw < w.kernel[2]; ++kw) {
                int64_t ow = outFor(w, 2, iw, kw);
                if (ow >= 0)
                  acc += static_cast<double>(dyo[(od * w.out[1] + oh) * w.out[2] + ow]) *
                         wc[(kd * w.kernel[1] + kh) * w.kernel[2] + kw];
              }
            }
          }
        }
        dxc[i] = static_cast<T>(acc);
      }
    }
  }
}

// dW[oc, c, k] = Σ_n Σ_o dY[n, oc, o] · X[n, group(oc)·icg + c, tap(o, k)].
template <typename T>
void convGradWeightRef(const KernelContext& ctx, const Window& w, int64_t group) {
  const T* dy = ctx.input(0).as<T>();
  const T* x = ctx.input(1).as<T>();
  T* dw = ctx.output(0).as<T>();
  int64_t icg = w.c_in / group, ocg = w.c_out / group;
  int64_t in_size = w.inSize(), out_size = w.outSize();
  int64_t ksize = w.kernel[0] * w.kernel[1] * w.kernel[2];
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t oc = 0; oc < w.c_out; ++oc) {
    for (int64_t c = 0; c < icg; ++c) {
      int64_t ic = oc / ocg * icg + c;
      for (int64_t k = 0; k < ksize; ++k) {
        int64_t kd = k / (w.kernel[1] * w.kernel[2]), kh = k / w.kernel[2] % w.kernel[1],
                kw = k % w.kernel[2];
        double acc = 0.0;
        for (int64_t n = 0; n < w.n; ++n) {
          const T* xc = x + (n * w.c_in + ic) * in_size;
          const T* dyo = dy + (n * w.c_out + oc) * out_size;
          for (int64_t od = 0; od < w.out[0]; ++od) {
            int64_t id = tapPos(w, 0, od, kd);
            if (id < 0) continue;
            for (int64_t oh = 0; oh < w.out[1]; ++oh) {
              int64_t ih = tapPos(w, 1, oh, kh);
              if (ih < 0) continue;
              for (int64_t ow = 0; ow < w.out[2]; ++ow) {
                int64_t iw = tapPos(w, 2, ow, kw);
                if (iw >= 0)
                  acc += static_cast<double>(dyo[(od * w.out[1] + oh) * w.out[2] + ow]) *
                         xc[(id * w.in[1] + ih) * w.in[2] + iw];
              }
            }
          }
        }
        dw[(oc * icg + c) * ksize + k] = static_cast<T>(acc);
      }
    }
  }
}

template <bool kWeights>
std::unique_ptr<CpuKernel> makeConvGrad(const KernelContext& ctx) {
  DType t = requireF32OrF64(ctx, 0);
  requireF32OrF64(ctx, 1);
  const Shape& x = kWeights ? ctx.input(1).shape() : ctx.output(0).shape();
  const Shape& ws = kWeights ? ctx.output(0).shape() : ctx.input(1).shape();
  Window w =
      forwardWindow(ctx, x, ctx.input(0).shape(), std::vector<int64_t>(ws.begin() + 2, ws.end()));
  int64_t group = ctx.i("group");
  if (ctx.output(0).numel() == 0) return noopKernel();
  if (ctx.input(0).numel() == 0)  // no output positions: nothing flows back
    return statelessKernel(
        [](const KernelContext& c) { std::memset(c.output(0).data, 0, c.output(0).bytes()); });
  if (t == DType::F32) return std::make_unique<DnnlConvGrad>(ctx, w, group, kWeights);
  return statelessKernel([w3 = w.as3d(), group](const KernelContext& c) {
    if constexpr (kWeights)
      convGradWeightRef<double>(c, w3, group);
    else
      convGradInputRef<double>(c, w3, group);
  });
}

}  // namespace

void registerConvGradKernels(CpuKernelRegistry& r) {
  r.add("ConvGradInput", makeConvGrad<false>);
  r.add("ConvGradWeight", makeConvGrad<true>);
}

}  // namespace ds::cpu
