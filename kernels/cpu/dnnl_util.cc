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

}  // namespace ds::cpu
