// ONNX import driver: reads the file, declares graph inputs and initialisers,
// converts nodes in order (folding constants as it goes, since later shape rules
// need them), then removes what nothing uses and verifies the result.
#include "frontend/onnx_import.h"

#include <fcntl.h>
#include <onnx/onnx_pb.h>
#include <unistd.h>

#include <filesystem>
#include <set>

#include "frontend/onnx_internal.h"
#include "ir/error.h"
#include "ir/verifier.h"
#include "passes/dead_code.h"
#include "passes/fold_constants.h"

namespace ds {

inline constexpr int64_t kMinOpset = 11;
inline constexpr int64_t kMaxOpset = 21;

Attribute attributeFromOnnx(const onnx::AttributeProto& a, const std::string& base_dir) {
  using A = onnx::AttributeProto;
  switch (a.type()) {
    case A::INT:
      return a.i();
    case A::FLOAT:
      return static_cast<double>(a.f());
    case A::STRING:
      return a.s();
    case A::INTS:
      return std::vector<int64_t>(a.ints().begin(), a.ints().end());
    case A::FLOATS:
      return std::vector<double>(a.floats().begin(), a.floats().end());
    case A::STRINGS:
      return std::vector<std::string>(a.strings().begin(), a.strings().end());
    case A::TENSOR:
      return tensorFromOnnx(a.t(), base_dir);
    default:
      throw makeError("attribute '", a.name(), "' has unsupported type ",
                      A::AttributeType_Name(a.type()));
  }
}

std::vector<std::string> supportedOnnxOps() {
  std::vector<std::string> ops;
  for (const auto& [op, converter] : onnxConverters()) ops.push_back(op);
  return ops;
}

namespace {

std::string joined(const std::vector<std::string>& items) {
  std::string s;
  for (const auto& item : items) s += (s.empty() ? "" : ", ") + item;
  return s;
}

class Importer {
 public:
  Importer(const onnx::ModelProto& model, const ImportOptions& options, std::string base_dir)
      : model_(model), options_(options), base_dir_(std::move(base_dir)) {}

  std::unique_ptr<Graph> run() {
    opset_ = findOpset();
    const onnx::GraphProto& g = model_.graph();
    graph_ = std::make_unique<Graph>(g.name().empty() ? "main" : g.name());
    declareInitializers(g);
    declareInputs(g);
    for (const onnx::NodeProto& node : g.node()) convertNode(node);
    for (const onnx::ValueInfoProto& out : g.output())
      graph_->addOutput(lookup(out.name(), "graph output"));
    markBuffers();
    eliminateDeadCode(*graph_);
    verifyGraph(*graph_);
    return std::move(graph_);
  }

 private:
  int64_t findOpset() const {
    for (const auto& op : model_.opset_import()) {
      if (op.domain().empty() || op.domain() == "ai.onnx") {
        DS_CHECK(op.version() >= kMinOpset && op.version() <= kMaxOpset, "opset ", op.version(),
                 " is not supported (supported: ", kMinOpset, " to ", kMaxOpset, ")");
        return op.version();
      }
    }
    throw makeError("the model imports no default-domain opset");
  }

  void declareInitializers(const onnx::GraphProto& g) {
    for (const onnx::TensorProto& init : g.initializer()) {
      Tensor t = tensorFromOnnx(init, base_dir_);
      Role role = isFloat(t.dtype()) ? Role::Parameter : Role::Constant;
      TensorType type = t.type();
      graph_->addSource(init.name(), type, role, std::make_shared<const Tensor>(std::move(t)));
      values_[init.name()] = graph_->value(init.name());
    }
  }

  TensorType inputType(const onnx::ValueInfoProto& in) const {
    DS_CHECK(in.type().has_tensor_type(), "graph input '", in.name(),
             "' is not a tensor (sequence, map and optional inputs are not supported)");
    const auto& tt = in.type().tensor_type();
    auto dtype = dtypeFromOnnx(tt.elem_type());
    DS_CHECK(dtype.has_value(), "graph input '", in.name(), "': element type ",
             onnxTypeName(tt.elem_type()), " is not supported");
    DS_CHECK(tt.has_shape(), "graph input '", in.name(), "' has no shape");
    TensorType type{*dtype, {}};
    for (int axis = 0; axis < tt.shape().dim_size(); ++axis) {
      const auto& dim = tt.shape().dim(axis);
      if (dim.has_dim_value()) {
        type.shape.push_back(dim.dim_value());
        continue;
      }
      std::string symbol = dim.has_dim_param() ? "'" + dim.dim_param() + "'" : "(unnamed)";
      DS_CHECK(axis == 0, "graph input '", in.name(), "': dimension ", axis, " is symbolic ",
               symbol, "; only the batch axis (0) may be symbolic");
      DS_CHECK(options_.batch.has_value(), "graph input '", in.name(),
               "' has a symbolic batch dimension ", symbol,
               "; give --batch N or train_micro_batch_size_per_gpu in the config");
      type.shape.push_back(*options_.batch);
    }
    if (options_.batch && !type.shape.empty() && tt.shape().dim(0).has_dim_value())
      DS_CHECK(type.shape[0] == *options_.batch, "graph input '", in.name(),
               "' has a static batch of ", type.shape[0], " but the micro-batch is ",
               *options_.batch);
    return type;
  }

  void declareInputs(const onnx::GraphProto& g) {
    std::set<std::string> labels(options_.labels.begin(), options_.labels.end());
    for (const onnx::ValueInfoProto& in : g.input()) {
      if (values_.count(in.name())) continue;  // initialisers listed as inputs (IR version < 4)
      TensorType type = inputType(in);
      if (auto c = options_.constant_inputs.find(in.name()); c != options_.constant_inputs.end()) {
        DS_CHECK(c->second.type() == type, "constant for graph input '", in.name(), "' is ",
                 c->second.type().toString(), ", expected ", type.toString());
        values_[in.name()] = graph_->addConstant(in.name(), c->second);
        continue;
      }
      Role role = labels.erase(in.name()) ? Role::Label : Role::Input;
      values_[in.name()] = graph_->addSource(in.name(), type, role);
    }
    DS_CHECK(labels.empty(), "label '", *labels.begin(), "' is not a graph input");
  }

  Value* lookup(const std::string& name, const char* what) const {
    auto it = values_.find(name);
    DS_CHECK(it != values_.end(), what, " '", name,
             "' is not defined before its use (the graph is not topologically sorted?)");
    return it->second;
  }

  void convertNode(const onnx::NodeProto& proto) {
    std::string name =
        proto.name().empty() ? proto.op_type() + "_" + std::to_string(node_count_) : proto.name();
    ++node_count_;
    const auto& converters = onnxConverters();
    auto conv = converters.find(proto.op_type());
    bool default_domain = proto.domain().empty() || proto.domain() == "ai.onnx";
    DS_CHECK(default_domain && conv != converters.end(), "node '", name, "' (op ",
             proto.domain().empty() ? "" : proto.domain() + ".", proto.op_type(), ", opset ",
             opset_, ") is not supported; supported ops: ", joined(supportedOnnxOps()));
    OnnxNode node{proto, opset_, *graph_, name, {}, {}, {}};
    for (const std::string& in : proto.input())
      node.inputs.push_back(in.empty() ? nullptr : lookup(in, "input"));
    for (const auto& a : proto.attribute()) {
      try {
        node.attrs[a.name()] = attributeFromOnnx(a, base_dir_);
      } catch (const Error& e) {
        throw makeError(node.describe(), ": ", e.what());
      }
    }
    node.outputs.assign(proto.output().begin(), proto.output().end());
    std::vector<Value*> outs = conv->second(node);
    foldProducers(outs);
    for (size_t i = 0; i < outs.size() && i < node.outputs.size(); ++i)
      if (outs[i] && !node.outputs[i].empty()) values_[node.outputs[i]] = outs[i];
  }

  // Folds the nodes just emitted when their inputs are constant, so that shape
  // rules of later nodes (Reshape's shape, Slice's starts, ...) can read them.
  // Folding keeps value names, so the outputs are looked up again by name.
  void foldProducers(std::vector<Value*>& outs) {
    std::vector<std::string> names;
    for (Value* v : outs) names.push_back(v ? v->name() : "");
    for (Value* v : outs) {
      if (v && v->producer() && canFold(*v->producer())) {
        foldNode(*graph_, v->producer());
        break;  // one node per ONNX node can fold: its outputs are now constants
      }
    }
    for (size_t i = 0; i < outs.size(); ++i)
      if (!names[i].empty()) outs[i] = graph_->value(names[i]);
  }

  // BatchNorm running statistics are persistent buffers, not trainable parameters.
  void markBuffers() {
    for (const auto& n : graph_->nodes()) {
      if (n->op() != "BatchNormalization") continue;
      for (size_t i = 3; i < 5 && i < n->numInputs(); ++i)
        if (n->hasInput(i) && n->input(i)->role() == Role::Parameter)
          n->input(i)->setRole(Role::Buffer);
    }
  }

  const onnx::ModelProto& model_;
  const ImportOptions& options_;
  std::string base_dir_;
  int64_t opset_ = 0;
  int64_t node_count_ = 0;
  std::unique_ptr<Graph> graph_;
  std::map<std::string, Value*> values_;  // ONNX name -> IR value
};

}  // namespace

std::unique_ptr<Graph> importOnnxModel(const onnx::ModelProto& model, const ImportOptions& options,
                                       const std::string& base_dir, const std::string& origin) {
  try {
    return Importer(model, options, base_dir).run();
  } catch (const Error& e) {
    throw makeError(origin, ": ", e.what());
  }
}

onnx::ModelProto readOnnxModel(const std::string& path, const std::string& why) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  DS_CHECK(fd >= 0, path, ": cannot open file", why);
  onnx::ModelProto model;
  const bool parsed = model.ParseFromFileDescriptor(fd);
  ::close(fd);
  DS_CHECK(parsed, path,
           ": not an ONNX model (the file does not parse as an ONNX ModelProto; truncated?)");
  return model;
}

std::unique_ptr<Graph> importOnnxFile(const std::string& path, const ImportOptions& options) {
  const onnx::ModelProto model = readOnnxModel(path);
  DS_CHECK(model.has_graph() && model.ir_version() > 0, path,
           ": not an ONNX model (no ir_version or graph)");
  std::string base_dir = std::filesystem::path(path).parent_path().string();
  return importOnnxModel(model, options, base_dir.empty() ? "." : base_dir, path);
}

}  // namespace ds
