#include "kernels/cuda/promote16.h"

#include <utility>
#include <vector>

#include "kernels/cpu/promote16.h"
#include "kernels/cuda/cuda_util.h"

namespace ds::cuda {
namespace {

bool is16BitFloat(DType t) {
  return t == DType::F16 || t == DType::BF16;
}

class PromotedKernel : public CudaKernel {
 public:
  PromotedKernel(const KernelContext& ctx, const CudaKernelFactory& factory, const Device& dev,
                 void* scratch)
      : inner_ctx_(ctx) {
    auto* at = static_cast<uint8_t*>(scratch);
    auto promote = [&](TensorView& v, std::vector<Copy>* list) {
      if (!v.present() || !is16BitFloat(v.dtype())) return;
      auto* f32 = reinterpret_cast<float*>(at);
      at += cpu::promotedCopyBytes(v);
      list->push_back({v, f32});
      v.data = f32;
      v.type.dtype = DType::F32;
      v.constant = false;  // the copy is rewritten on every run
    };
    for (TensorView& v : inner_ctx_.inputs) promote(v, &inputs_);
    for (TensorView& v : inner_ctx_.outputs) promote(v, &outputs_);
    inner_ = factory(inner_ctx_, dev);
  }

  size_t workspaceBytes() const override { return inner_->workspaceBytes(); }

  void run(const KernelContext&, const Device& dev, void* workspace) override {
    for (const Copy& c : inputs_)
      cast(c.view.dtype(), DType::F32, c.view.data, c.f32, c.view.numel(), dev.stream);
    inner_->run(inner_ctx_, dev, workspace);
    for (const Copy& c : outputs_)
      cast(DType::F32, c.view.dtype(), c.f32, c.view.data, c.view.numel(), dev.stream);
  }

 private:
  struct Copy {
    TensorView view;  // the step's 16-bit tensor
    float* f32;       // its f32 copy in the scratch
  };
  KernelContext inner_ctx_;
  std::vector<Copy> inputs_, outputs_;
  std::unique_ptr<CudaKernel> inner_;
};

}  // namespace

std::unique_ptr<CudaKernel> promotedKernel(const KernelContext& ctx,
                                           const CudaKernelFactory& f32_factory, const Device& dev,
                                           void* scratch) {
  return std::make_unique<PromotedKernel>(ctx, f32_factory, dev, scratch);
}

}  // namespace ds::cuda
