// Printer half of the text IR (see ir/text.h for the grammar).
#include <charconv>
#include <cmath>
#include <sstream>

#include "ir/text.h"

namespace ds {
namespace {

bool isBareNameChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-' ||
         c == '/';
}

std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out + "\"";
}

std::string nameToken(const std::string& name) {
  bool bare = !name.empty();
  for (char c : name) bare = bare && isBareNameChar(c);
  return bare ? name : quoted(name);
}

std::string formatDouble(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v);
  std::string s(buf, res.ptr);
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

// Floats of narrow dtypes print in the shortest form that round-trips that dtype.
std::string formatElement(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::F32:
    case DType::F16:
    case DType::BF16: {
      float f = static_cast<float>(t.getDouble(i));
      if (std::isnan(f) || std::isinf(f)) return formatDouble(f);
      char buf[64];
      auto res = std::to_chars(buf, buf + sizeof(buf), f);
      std::string s(buf, res.ptr);
      if (s.find_first_of(".e") == std::string::npos) s += ".0";
      return s;
    }
    case DType::F64:
      return formatDouble(t.getDouble(i));
    default:
      return std::to_string(t.getInt(i));
  }
}

std::string formatData(const Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (i) s += ", ";
    s += formatElement(t, i);
  }
  return s + "]";
}

template <typename T, typename F>
std::string formatList(const std::vector<T>& list, const char* empty, F format) {
  if (list.empty()) return std::string(empty) + "[]";
  std::string s = "[";
  for (size_t i = 0; i < list.size(); ++i) {
    if (i) s += ", ";
    s += format(list[i]);
  }
  return s + "]";
}

std::string formatAttr(const Attribute& a) {
  switch (attrKind(a)) {
    case AttrKind::Int:
      return std::to_string(std::get<int64_t>(a));
    case AttrKind::Float:
      return formatDouble(std::get<double>(a));
    case AttrKind::String:
      return quoted(std::get<std::string>(a));
    case AttrKind::Ints:
      return formatList(std::get<std::vector<int64_t>>(a), "ints",
                        [](int64_t v) { return std::to_string(v); });
    case AttrKind::Floats:
      return formatList(std::get<std::vector<double>>(a), "floats", formatDouble);
    case AttrKind::Strings:
      return formatList(std::get<std::vector<std::string>>(a), "strings", quoted);
    case AttrKind::Tensor: {
      const Tensor& t = std::get<Tensor>(a);
      return "tensor<" + t.type().toString() + ">" + formatData(t);
    }
  }
  return "";
}

void printSource(std::ostream& os, const Value& v, const PrintOptions& options) {
  os << "  " << roleName(v.role()) << " %" << nameToken(v.name()) << " : " << v.type().toString();
  if (const ShardLayout* layout = v.shardLayout()) {
    os << " sharded(" << layout->world_size << ";";
    for (size_t i = 0; i < layout->pieces.size(); ++i) {
      const ShardPiece& p = layout->pieces[i];
      os << (i ? ", %" : " %") << nameToken(p.name) << " " << shapeToString(p.shape) << " at "
         << p.offset;
    }
    os << ")";
  }
  // Constants always show their value; one parsed from an elided dump has none and
  // prints as elided again, so dumps round-trip.
  bool wants_data = v.role() == Role::Constant || options.print_weights;
  if (wants_data && v.hasData() && v.data().numel() <= options.max_data_elements)
    os << " = " << formatData(v.data());
  else if (wants_data && (v.hasData() || v.role() == Role::Constant))
    os << " = <elided>";
  os << "\n";
}

void printNode(std::ostream& os, const Node& n) {
  os << "  ";
  for (size_t i = 0; i < n.numOutputs(); ++i)
    os << (i ? ", " : "") << "%" << nameToken(n.output(i)->name());
  os << " = " << n.op() << "(";
  for (size_t i = 0; i < n.numInputs(); ++i) {
    os << (i ? ", " : "");
    os << (n.hasInput(i) ? "%" + nameToken(n.input(i)->name()) : "none");
  }
  os << ")";
  if (!n.attrs().empty()) {
    os << " {";
    bool first = true;
    for (const auto& [name, value] : n.attrs()) {
      os << (first ? "" : ", ") << name << " = " << formatAttr(value);
      first = false;
    }
    os << "}";
  }
  os << " : ";
  for (size_t i = 0; i < n.numOutputs(); ++i) {
    const Value* v = n.output(i);
    os << (i ? ", " : "");
    if (v->role() != Role::Activation) os << roleName(v->role()) << " ";
    os << v->type().toString();
  }
  os << " @" << nameToken(n.name());
  if (n.phase() == Phase::OptimizerStep) os << " optimizer_step";
  if (n.onHost()) os << " host";
  os << "\n";
}

}  // namespace

std::string printGraph(const Graph& graph, const PrintOptions& options) {
  std::ostringstream os;
  os << "graph " << nameToken(graph.name()) << " {\n";
  for (const Value* v : graph.sources()) printSource(os, *v, options);
  for (const auto& n : graph.nodes()) printNode(os, *n);
  for (const Graph::StateUpdate& u : graph.stateUpdates())
    os << "  update %" << nameToken(u.state->name()) << " = %" << nameToken(u.next->name()) << "\n";
  os << "  return";
  for (size_t i = 0; i < graph.outputs().size(); ++i)
    os << (i ? ", " : " ") << "%" << nameToken(graph.outputs()[i]->name());
  os << "\n}\n";
  return os.str();
}

}  // namespace ds
