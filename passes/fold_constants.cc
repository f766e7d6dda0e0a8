// Constant folding (see fold_constants.h). Each foldable op has a small host
// evaluator in a name-keyed table; the pass replaces folded outputs by constant
// sources that keep the original value names.
#include "passes/fold_constants.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <string>

#include "ir/error.h"
#include "ir/op_registry.h"
#include "ir/ops/shape_helpers.h"

namespace ds {
namespace {

// What an evaluator sees: the node, its input data (nullptr for absent inputs and for
// Shape's input) and the inferred type of its single output.
struct EvalArgs {
  const Node& node;
  std::vector<const Tensor*> in;
  const TensorType& out;
  const Tensor& input(size_t i) const { return *in.at(i); }
};

using Evaluator = std::function<Tensor(const EvalArgs&)>;

void copyElement(const Tensor& src, int64_t si, Tensor& dst, int64_t di) {
  size_t size = dtypeSize(src.dtype());
  std::memcpy(dst.raw() + di * size, src.raw() + si * size, size);
}

// out[i] = in[src_of(multi-index of i)] for every element of `type`.
template <typename SrcOf>
Tensor mapElements(const Tensor& in, const TensorType& type, SrcOf src_of) {
  Tensor out(type);
  std::vector<int64_t> idx(type.shape.size(), 0);
  for (int64_t i = 0; i < out.numel(); ++i) {
    copyElement(in, src_of(idx), out, i);
    for (size_t d = idx.size(); d-- > 0;) {
      if (++idx[d] < type.shape[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

Tensor evalShape(const EvalArgs& a) {
  const Shape& shape = a.node.input(0)->shape();
  auto [start, end] =
      shapeOpRange(a.node.i("start"), a.node.i("end"), static_cast<int64_t>(shape.size()));
  return Tensor::fromInts(DType::I64, a.out.shape,
                          std::vector<int64_t>(shape.begin() + start, shape.begin() + end));
}

Tensor evalReshape(const EvalArgs& a) {
  return a.input(0).reshaped(a.out.shape);
}

Tensor evalCast(const EvalArgs& a) {
  return a.input(0).castTo(a.out.dtype);
}

Tensor evalGather(const EvalArgs& a) {
  const Tensor& data = a.input(0);
  std::vector<int64_t> indices = a.input(1).toInts();
  int64_t axis =
      InferContext(a.node).axis(a.node.i("axis"), static_cast<int64_t>(data.shape().size()));
  int64_t dim = data.shape()[axis];
  int64_t inner = numElements(Shape(data.shape().begin() + axis + 1, data.shape().end()));
  int64_t outer = numElements(Shape(data.shape().begin(), data.shape().begin() + axis));
  Tensor out(a.out);
  int64_t o = 0;
  for (int64_t b = 0; b < outer; ++b) {
    for (int64_t index : indices) {
      DS_CHECK(index >= -dim && index < dim, a.node.describe(), ": index ", index,
               " is out of range for size ", dim);
      int64_t row = index < 0 ? index + dim : index;
      for (int64_t j = 0; j < inner; ++j) copyElement(data, (b * dim + row) * inner + j, out, o++);
    }
  }
  return out;
}

Tensor evalConcat(const EvalArgs& a) {
  int64_t axis =
      InferContext(a.node).axis(a.node.i("axis"), static_cast<int64_t>(a.out.shape.size()));
  int64_t outer = numElements(Shape(a.out.shape.begin(), a.out.shape.begin() + axis));
  Tensor out(a.out);
  int64_t o = 0;
  for (int64_t b = 0; b < outer; ++b) {
    for (const Tensor* t : a.in) {
      int64_t block = outer == 0 ? 0 : t->numel() / outer;
      for (int64_t j = 0; j < block; ++j) copyElement(*t, b * block + j, out, o++);
    }
  }
  return out;
}

Tensor evalRange(const EvalArgs& a) {
  const Tensor &start = a.input(0), &delta = a.input(2);
  Tensor out(a.out);
  for (int64_t i = 0; i < out.numel(); ++i) {
    if (isFloat(out.dtype()))
      out.setDouble(i, start.getDouble(0) + static_cast<double>(i) * delta.getDouble(0));
    else
      out.setInt(i, start.getInt(0) + i * delta.getInt(0));
  }
  return out;
}

Tensor evalConstantOfShape(const EvalArgs& a) {
  const Tensor& value = a.node.t("value");
  Tensor out(a.out);
  for (int64_t i = 0; i < out.numel(); ++i) copyElement(value, 0, out, i);
  return out;
}

Tensor evalTranspose(const EvalArgs& a) {
  const Tensor& in = a.input(0);
  auto rank = static_cast<int64_t>(in.shape().size());
  std::vector<int64_t> perm = transposePerm(InferContext(a.node), a.node.ints("perm"), rank);
  std::vector<int64_t> strides = stridesOf(in.shape());
  return mapElements(in, a.out, [&](const std::vector<int64_t>& idx) {
    int64_t src = 0;
    for (size_t d = 0; d < idx.size(); ++d) src += idx[d] * strides[perm[d]];
    return src;
  });
}

Tensor evalSlice(const EvalArgs& a) {
  const Tensor& in = a.input(0);
  const Node& n = a.node;
  std::vector<SliceAxis> axes = resolveSlice(InferContext(n), in.shape(), n.ints("starts"),
                                             n.ints("ends"), n.ints("axes"), n.ints("steps"));
  std::vector<int64_t> strides = stridesOf(in.shape());
  return mapElements(in, a.out, [&](const std::vector<int64_t>& idx) {
    int64_t src = 0;
    for (size_t d = 0; d < idx.size(); ++d)
      src += (axes[d].start + idx[d] * axes[d].step) * strides[d];
    return src;
  });
}

Tensor evalExpand(const EvalArgs& a) {
  const Tensor& in = a.input(0);
  std::vector<int64_t> src = broadcastIndices(in.shape(), a.out.shape);
  Tensor out(a.out);
  for (int64_t i = 0; i < out.numel(); ++i) copyElement(in, src[i], out, i);
  return out;
}

Tensor evalWhere(const EvalArgs& a) {
  const Tensor &cond = a.input(0), &x = a.input(1), &y = a.input(2);
  std::vector<int64_t> ci = broadcastIndices(cond.shape(), a.out.shape);
  std::vector<int64_t> xi = broadcastIndices(x.shape(), a.out.shape);
  std::vector<int64_t> yi = broadcastIndices(y.shape(), a.out.shape);
  Tensor out(a.out);
  for (int64_t i = 0; i < out.numel(); ++i) {
    if (cond.getInt(ci[i]) != 0)
      copyElement(x, xi[i], out, i);
    else
      copyElement(y, yi[i], out, i);
  }
  return out;
}

// Exact integer arithmetic on int64 with two's-complement wrapping.
int64_t wrap(uint64_t v) {
  return static_cast<int64_t>(v);
}

int64_t intOp(const EvalArgs& a, char op, int64_t x, int64_t y) {
  auto ux = static_cast<uint64_t>(x), uy = static_cast<uint64_t>(y);
  switch (op) {
    case '+':
      return wrap(ux + uy);
    case '-':
      return wrap(ux - uy);
    case '*':
      return wrap(ux * uy);
    default:
      DS_CHECK(y != 0, a.node.describe(), ": integer division by zero");
      if (y == -1) return wrap(0 - ux);  // avoids INT64_MIN / -1 overflow
      return x / y;                      // truncates toward zero, like ONNX
  }
}

double floatOp(char op, double x, double y) {
  switch (op) {
    case '+':
      return x + y;
    case '-':
      return x - y;
    case '*':
      return x * y;
    default:
      return x / y;
  }
}

// Broadcasting binary op; `apply` writes element i of `out` from elements xi, yi.
template <typename Apply>
Tensor binary(const EvalArgs& a, Apply apply) {
  const Tensor &x = a.input(0), &y = a.input(1);
  std::vector<int64_t> xi = broadcastIndices(x.shape(), a.out.shape);
  std::vector<int64_t> yi = broadcastIndices(y.shape(), a.out.shape);
  Tensor out(a.out);
  for (int64_t i = 0; i < out.numel(); ++i) apply(out, i, x, xi[i], y, yi[i]);
  return out;
}

Evaluator arithmetic(char op) {
  return [op](const EvalArgs& a) {
    return binary(
        a, [&](Tensor& out, int64_t i, const Tensor& x, int64_t xi, const Tensor& y, int64_t yi) {
          if (isFloat(out.dtype()))
            out.setDouble(i, floatOp(op, x.getDouble(xi), y.getDouble(yi)));
          else
            out.setInt(i, intOp(a, op, x.getInt(xi), y.getInt(yi)));
        });
  };
}

// Equal, Less, Greater on two constants: `compare` of the values (floats as
// doubles, exactly; integers as int64).
template <typename Compare>
Tensor evalComparison(const EvalArgs& a, Compare compare) {
  return binary(
      a, [&](Tensor& out, int64_t i, const Tensor& x, int64_t xi, const Tensor& y, int64_t yi) {
        bool r = isFloat(x.dtype()) ? compare(x.getDouble(xi), y.getDouble(yi))
                                    : compare(x.getInt(xi), y.getInt(yi));
        out.setInt(i, r ? 1 : 0);
      });
}

// An integer bound of Clip: the attribute truncated, saturated to int64 (absent: ±inf).
int64_t intBound(double b) {
  if (b <= -9.2233720368547758e18) return std::numeric_limits<int64_t>::min();
  if (b >= 9.2233720368547758e18) return std::numeric_limits<int64_t>::max();
  return static_cast<int64_t>(b);
}

// Clip: min(max(x, min), max), as the CPU kernel (a clamp in shape arithmetic).
Tensor evalClip(const EvalArgs& a) {
  const Tensor& x = a.input(0);
  const double lo = a.node.f("min"), hi = a.node.f("max");
  Tensor out(a.out);
  for (int64_t i = 0; i < out.numel(); ++i) {
    if (isFloat(x.dtype())) {
      const double raised = x.getDouble(i) < lo ? lo : x.getDouble(i);
      out.setDouble(i, hi < raised ? hi : raised);
    } else {
      const int64_t raised = std::max(x.getInt(i), intBound(lo));
      out.setInt(i, std::min(raised, intBound(hi)));
    }
  }
  return out;
}

Tensor evalNeg(const EvalArgs& a) {
  const Tensor& x = a.input(0);
  Tensor out(a.out);
  for (int64_t i = 0; i < out.numel(); ++i) {
    if (isFloat(x.dtype()))
      out.setDouble(i, -x.getDouble(i));
    else
      out.setInt(i, wrap(0 - static_cast<uint64_t>(x.getInt(i))));
  }
  return out;
}

Tensor evalNot(const EvalArgs& a) {
  const Tensor& x = a.input(0);
  Tensor out(a.out);
  for (int64_t i = 0; i < out.numel(); ++i) out.setInt(i, x.getInt(i) ? 0 : 1);
  return out;
}

const std::map<std::string, Evaluator>& evaluators() {
  static const std::map<std::string, Evaluator> table = {
      {"Shape", evalShape},
      {"Gather", evalGather},
      {"Unsqueeze", evalReshape},
      {"Squeeze", evalReshape},
      {"Reshape", evalReshape},
      {"Identity", evalReshape},
      {"Concat", evalConcat},
      {"Range", evalRange},
      {"ConstantOfShape", evalConstantOfShape},
      {"Cast", evalCast},
      {"Equal", [](const EvalArgs& a) { return evalComparison(a, std::equal_to<>()); }},
      {"Less", [](const EvalArgs& a) { return evalComparison(a, std::less<>()); }},
      {"Greater", [](const EvalArgs& a) { return evalComparison(a, std::greater<>()); }},
      {"Where", evalWhere},
      {"Slice", evalSlice},
      {"Expand", evalExpand},
      {"Transpose", evalTranspose},
      {"Add", arithmetic('+')},
      {"Sub", arithmetic('-')},
      {"Mul", arithmetic('*')},
      {"Div", arithmetic('/')},
      {"Clip", evalClip},
      {"Neg", evalNeg},
      {"Not", evalNot},
  };
  return table;
}

}  // namespace

bool canFold(const Node& node) {
  if (evaluators().count(node.op()) == 0) return false;
  if (node.op() == "Shape") return node.hasInput(0);
  for (size_t i = 0; i < node.numInputs(); ++i) {
    if (!node.hasInput(i)) continue;
    const Value* v = node.input(i);
    if (v->role() != Role::Constant || !v->hasData()) return false;
  }
  return true;
}

std::vector<Tensor> evaluateNode(const Node& node) {
  DS_CHECK(canFold(node), node.describe(), ": cannot be folded");
  std::vector<const Tensor*> in;
  for (size_t i = 0; i < node.numInputs(); ++i)
    in.push_back(node.hasInput(i) && node.op() != "Shape" ? &node.input(i)->data() : nullptr);
  const Evaluator& eval = evaluators().at(node.op());
  std::vector<Tensor> out;
  for (const Value* v : node.outputs()) {
    out.push_back(eval(EvalArgs{node, in, v->type()}));
    DS_CHECK(out.back().type() == v->type(), node.describe(), ": folded to ",
             out.back().type().toString(), ", expected ", v->type().toString());
  }
  return out;
}

bool foldNode(Graph& graph, Node* node) {
  if (!canFold(*node)) return false;
  std::vector<Tensor> results = evaluateNode(*node);
  // Park the uses on placeholders so the node (and its output names) can go first.
  std::vector<std::string> names;
  std::vector<Value*> placeholders;
  for (size_t i = 0; i < results.size(); ++i) {
    Value* out = node->output(i);
    names.push_back(out->name());
    Value* tmp =
        graph.addSource(graph.uniqueName(out->name() + "_folding"), out->type(), Role::Constant);
    graph.replaceAllUsesWith(out, tmp);
    placeholders.push_back(tmp);
  }
  graph.eraseNode(node);
  for (size_t i = 0; i < results.size(); ++i) {
    Value* constant = graph.addConstant(names[i], std::move(results[i]));
    graph.replaceAllUsesWith(placeholders[i], constant);
    graph.eraseSource(placeholders[i]);
  }
  return true;
}

bool foldConstants(Graph& graph) {
  std::set<std::string> candidates;  // constants that may have lost their last user
  bool changed = false, again = true;
  while (again) {
    again = false;
    for (auto it = graph.nodes().begin(); it != graph.nodes().end();) {
      Node* node = (it++)->get();  // advance first: folding erases the node
      if (!canFold(*node)) continue;
      for (const Value* v : node->inputs())
        if (v) candidates.insert(v->name());
      for (const Value* v : node->outputs()) candidates.insert(v->name());
      if (foldNode(graph, node)) again = changed = true;
    }
  }
  for (const std::string& name : candidates) {
    Value* v = graph.findValue(name);
    if (v && v->producer() == nullptr && v->role() == Role::Constant && v->users().empty() &&
        !graph.isOutput(v)) {
      graph.eraseSource(v);
      changed = true;
    }
  }
  return changed;
}

}  // namespace ds
