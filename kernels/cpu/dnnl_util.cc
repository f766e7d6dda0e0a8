// oneDNN engine/stream singletons and the allocation-free primitive wrapper
// declared in dnnl_util.h.
#include "kernels/cpu/dnnl_util.h"

namespace ds::cpu {

dnnl::engine& dnnlEngine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::stream& dnnlStream() {
  static dnnl::stream stream(dnnlEngine());
  return stream;
}

dnnl::memory::dims toDims(const Shape& shape) {
  return dnnl::memory::dims(shape.begin(), shape.end());
}

dnnl::memory::desc plainDesc(const dnnl::memory::dims& dims) {
  dnnl::memory::dims strides(dims.size(), 1);
  for (size_t i = dims.size(); i-- > 1;) strides[i - 1] = strides[i] * dims[i];
  return stridedDesc(dims, strides);
}

dnnl::memory::desc stridedDesc(const dnnl::memory::dims& dims, const dnnl::memory::dims& strides) {
  return dnnl::memory::desc(dims, dnnl::memory::data_type::f32, strides);
}

dnnl::memory wrapMemory(const dnnl::memory::desc& desc, const void* data) {
  return dnnl::memory(desc, dnnlEngine(), const_cast<void*>(data));
}

dnnl::primitive_attr scratchpadAttr() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

DnnlCall::DnnlCall(dnnl::primitive prim, const dnnl::primitive_desc_base& pd)
    : prim_(std::move(prim)) {
  dnnl::memory::desc sd = pd.scratchpad_desc();
  if (sd.get_size() > 0) {
    scratch_.resize(sd.get_size());
    arg(DNNL_ARG_SCRATCHPAD, wrapMemory(sd, scratch_.data()));
  }
}

void DnnlCall::arg(int which, const dnnl::memory& mem) {
  mems_.push_back(mem);
  args_.push_back({which, mem.get()});
}

void DnnlCall::execute() const {
  dnnl::error::wrap_c_api(dnnl_primitive_execute(prim_.get(), dnnlStream().get(),
                                                 static_cast<int>(args_.size()), args_.data()),
                          "could not execute a oneDNN primitive");
  dnnlStream().wait();
}

DnnlCall reorderCall(const dnnl::memory& src, const dnnl::memory& dst) {
  dnnl::reorder::primitive_desc pd(src, dst, scratchpadAttr());
  DnnlCall call(dnnl::reorder(pd), pd);
  call.arg(DNNL_ARG_FROM, src);
  call.arg(DNNL_ARG_TO, dst);
  return call;
}

using dnnl::memory;

memory::dims weightDims(const Shape& w, int64_t group) {
  memory::dims d = toDims(w);
  if (group == 1) return d;
  d[0] /= group;
  d.insert(d.begin(), group);
  return d;
}

memory::dims minusOne(const std::vector<int64_t>& v) {
  memory::dims d;
  for (int64_t x : v) d.push_back(x - 1);
  return d;
}

memory::desc anyDesc(const memory::dims& dims) {
  return memory::desc(dims, memory::data_type::f32, memory::format_tag::any);
}

namespace {

// The operand of a bias Add: an f32 vector of the output's last dim, as [1, ..., n].
bool isLastDimVector(const TensorView& v, const Shape& out) {
  if (!v.present() || v.dtype() != DType::F32 || out.empty() || v.rank() > std::ssize(out))
    return false;
  const Shape& s = v.shape();
  for (size_t d = 0; d + 1 < s.size(); ++d)
    if (s[d] != 1) return false;
  return !s.empty() && s.back() == out.back();
}

}  // namespace

// Only post-ops that compute exactly what the separate kernels do, so that fusing
// never changes a result (the CPU backend is the oracle): Relu, and a bias Add of
// the f32 accumulator. Not Gelu: oneDNN's erf differs from ours in the last bits.
bool epilogueFitsPostOps(const KernelContext& producer, const Epilogue& next) {
  if (next.op == "Relu") return true;
  return next.op == "Add" && isLastDimVector(next.operand, producer.output(0).shape());
}

dnnl::primitive_attr epilogueAttr(const std::vector<Epilogue>& epilogue,
                                  const memory::dims& dst_dims,
                                  std::vector<std::pair<int, memory>>* args) {
  dnnl::primitive_attr attr = scratchpadAttr();
  if (epilogue.empty()) return attr;
  dnnl::post_ops ops;
  for (const Epilogue& e : epilogue) {
    if (e.op == "Relu") {
      ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
    } else {  // Add of a last-dim vector
      memory::dims dims(dst_dims.size(), 1);
      dims.back() = dst_dims.back();
      memory::desc md = plainDesc(dims);
      args->emplace_back(DNNL_ARG_ATTR_MULTIPLE_POST_OP(ops.len()) | DNNL_ARG_SRC_1,
                         wrapMemory(md, e.operand.data));
      ops.append_binary(dnnl::algorithm::binary_add, md);
    }
  }
  attr.set_post_ops(ops);
  return attr;
}

}  // namespace ds::cpu
