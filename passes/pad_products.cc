#include "passes/pad_products.h"

#include <algorithm>
#include <vector>

namespace ds {
namespace {

constexpr int64_t kAlignElements = 8;  // 16 bytes of 16-bit values
constexpr int64_t kPadTo = 64;
constexpr int64_t kMinColumns = 512;

// Output columns of a MatMul of 2-D weights B (op(B) is [K, N]), or 0 if it is not one.
int64_t paddableColumns(const Node& n) {
  if (n.op() != "MatMul" || n.numInputs() != 2 || n.input(1)->rank() != 2) return 0;
  const DType t = n.output(0)->dtype();
  if (t != DType::F16 && t != DType::BF16) return 0;
  const int64_t columns = n.output(0)->shape().back();
  return columns >= kMinColumns && columns % kAlignElements != 0 ? columns : 0;
}

void pad(Graph& g, Node* product, int64_t columns) {
  const int64_t padded = (columns + kPadTo - 1) / kPadTo * kPadTo;
  Value* weights = product->input(1);
  const bool trans_b = product->i("transB") != 0;  // B [N, K] rather than [K, N]
  const int64_t axis = trans_b ? 0 : 1;
  Shape zeros_shape = weights->shape();
  zeros_shape[static_cast<size_t>(axis)] = padded - columns;
  Value* zeros = g.addConstant(g.uniqueName(weights->name() + "/pad"),
                               Tensor({weights->dtype(), zeros_shape}));
  const std::string& name = product->name();
  Value* padded_weights =
      g.addNode("Concat", {weights, zeros}, {{"axis", axis}},
                {g.uniqueName(weights->name() + "/padded")}, g.uniqueName(name + "/pad"), product)
          ->output(0);
  Value* out = product->output(0);
  Node* wide =
      g.addNode("MatMul", {product->input(0), padded_weights}, product->attrs(),
                {g.uniqueName(out->name() + "/padded")}, g.uniqueName(name + "/padded"), product);
  const int64_t last = out->rank() - 1;
  Node* slice =
      g.addNode("Slice", {wide->output(0)},
                {{"starts", std::vector<int64_t>{0}},
                 {"ends", std::vector<int64_t>{columns}},
                 {"axes", std::vector<int64_t>{last}}},
                {g.uniqueName(out->name() + "/sliced")}, g.uniqueName(name + "/slice"), product);
  g.replaceAllUsesWith(out, slice->output(0));
  g.eraseNode(product);
}

}  // namespace

bool padProducts(Graph& graph) {
  std::vector<std::pair<Node*, int64_t>> products;
  for (const auto& n : graph.nodes())
    if (const int64_t columns = paddableColumns(*n)) products.emplace_back(n.get(), columns);
  for (const auto& [product, columns] : products) pad(graph, product, columns);
  return !products.empty();
}

}  // namespace ds
