#include "kernels/cpu/run_node.h"

#include "ir/op_registry.h"
#include "kernels/cpu/kernel.h"

namespace ds::cpu {

std::vector<Tensor> runNode(const Node& node, const std::vector<const Tensor*>& inputs) {
  const CpuKernelFactory* factory = CpuKernelRegistry::instance().find(node.op());
  DS_CHECK(factory != nullptr, node.describe(), ": no CPU kernel");
  KernelContext ctx;
  ctx.op = node.op();
  ctx.node_name = node.name();
  ctx.attrs = attrsWithDefaults(node);
  for (size_t i = 0; i < node.numInputs(); ++i) {
    TensorView view;
    if (node.hasInput(i)) {
      DS_CHECK(i < inputs.size() && inputs[i] && inputs[i]->type() == node.input(i)->type(),
               node.describe(), ": input ", i, " must be ", node.input(i)->type().toString());
      view.data = const_cast<uint8_t*>(inputs[i]->raw());
      view.type = inputs[i]->type();
    }
    ctx.inputs.push_back(view);
  }
  std::vector<Tensor> outputs;
  outputs.reserve(node.numOutputs());
  for (const Value* v : node.outputs()) outputs.emplace_back(v->type());
  for (Tensor& t : outputs) ctx.outputs.push_back({t.raw(), t.type()});
  std::unique_ptr<CpuKernel> kernel = (*factory)(ctx);
  kernel->run(ctx);
  return outputs;
}

std::vector<Tensor> runOp(const std::string& op, const std::vector<Tensor>& inputs,
                          const AttributeMap& attrs, size_t num_outputs) {
  Graph g("run_op");
  std::vector<Value*> values;
  std::vector<const Tensor*> ptrs;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].type().shape.empty() && inputs[i].bytes() == 0) {  // default Tensor: absent
      values.push_back(nullptr);
      ptrs.push_back(nullptr);
      continue;
    }
    values.push_back(g.addSource("in" + std::to_string(i), inputs[i].type(), Role::Input));
    ptrs.push_back(&inputs[i]);
  }
  Node* node = g.addNodeN(op, values, attrs, num_outputs, op);
  return runNode(*node, ptrs);
}

}  // namespace ds::cpu
