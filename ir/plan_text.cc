// Plan attributes and the readable plan dump (`dscompile --dump plan`).
#include <cstdio>
#include <sstream>

#include "ir/error.h"
#include "ir/graph.h"
#include "ir/plan.h"

namespace ds {
namespace {

const char* storageName(int storage) {
  switch (storage) {
    case planpb::ARENA:
      return "arena";
    case planpb::PERSISTENT:
      return "persistent";
    case planpb::HOST_ARENA:
      return "host-arena";
    case planpb::HOST_PERSISTENT:
      return "host-persistent";
  }
  return "?";
}

}  // namespace

void toPlanAttr(const std::string& name, const Attribute& value, planpb::Attr* out) {
  out->set_name(name);
  switch (attrKind(value)) {
    case AttrKind::Int:
      out->set_i(std::get<int64_t>(value));
      break;
    case AttrKind::Float:
      out->set_f(std::get<double>(value));
      break;
    case AttrKind::String:
      out->set_s(std::get<std::string>(value));
      break;
    case AttrKind::Ints:
      for (int64_t v : std::get<std::vector<int64_t>>(value)) out->mutable_ints()->add_v(v);
      out->mutable_ints();
      break;
    case AttrKind::Floats:
      for (double v : std::get<std::vector<double>>(value)) out->mutable_floats()->add_v(v);
      out->mutable_floats();
      break;
    case AttrKind::Strings:
      for (const auto& v : std::get<std::vector<std::string>>(value))
        out->mutable_strings()->add_v(v);
      out->mutable_strings();
      break;
    case AttrKind::Tensor: {
      const Tensor& t = std::get<Tensor>(value);
      auto* pt = out->mutable_tensor();
      pt->set_dtype(static_cast<int32_t>(t.dtype()));
      for (int64_t d : t.shape()) pt->add_shape(d);
      pt->set_data(t.raw(), t.bytes());
      break;
    }
  }
}

Attribute fromPlanAttr(const planpb::Attr& a) {
  switch (a.value_case()) {
    case planpb::Attr::kI:
      return a.i();
    case planpb::Attr::kF:
      return a.f();
    case planpb::Attr::kS:
      return a.s();
    case planpb::Attr::kInts:
      return std::vector<int64_t>(a.ints().v().begin(), a.ints().v().end());
    case planpb::Attr::kFloats:
      return std::vector<double>(a.floats().v().begin(), a.floats().v().end());
    case planpb::Attr::kStrings:
      return std::vector<std::string>(a.strings().v().begin(), a.strings().v().end());
    case planpb::Attr::kTensor: {
      const auto& t = a.tensor();
      DS_CHECK(t.dtype() >= 0 && t.dtype() < kNumDTypes, "plan attribute '", a.name(),
               "' has a bad dtype");
      TensorType type{static_cast<DType>(t.dtype()), Shape(t.shape().begin(), t.shape().end())};
      DS_CHECK(type.bytes() == t.data().size(), "plan attribute '", a.name(), "' is damaged");
      return Tensor(type, std::vector<uint8_t>(t.data().begin(), t.data().end()));
    }
    default:
      throw makeError("plan attribute '", a.name(), "' has no value");
  }
}

namespace {

std::string mib(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return buf;
}

std::string tensorList(const google::protobuf::RepeatedField<int32_t>& ids) {
  std::string s;
  for (int id : ids)
    s += (s.empty() ? "" : ", ") + (id < 0 ? std::string("none") : "t" + std::to_string(id));
  return s;
}

}  // namespace

std::string printPlan(const PlanFile& f, bool with_tensors) {
  const planpb::Plan& p = f.plan;
  std::ostringstream os;
  os << "plan v" << p.format_version() << " from " << p.producer() << ": model " << p.model()
     << ", world size " << p.world_size() << "\n";
  os << "memory: arena " << mib(p.arena_bytes()) << " (peak live " << mib(p.peak_live_bytes())
     << "), persistent " << mib(p.persistent_bytes()) << "\n";
  os << "feeds: " << tensorList(p.feeds()) << "; outputs: " << tensorList(p.outputs()) << "\n";
  if (with_tensors) {
    os << "tensors:\n";
    for (int i = 0; i < p.tensors_size(); ++i) {
      const auto& t = p.tensors(i);
      os << "  t" << i << " " << roleName(static_cast<Role>(t.role())) << " %" << t.name() << " "
         << f.tensorType(i).toString() << " " << storageName(t.storage()) << "@" << t.offset()
         << (t.has_init() ? " init" : "") << "\n";
    }
  }
  for (const auto& rank : p.ranks()) {
    os << "rank " << rank.rank() << ": " << rank.steps_size() << " steps\n";
    for (int i = 0; i < rank.steps_size(); ++i) {
      const auto& s = rank.steps(i);
      os << "  " << i << " [" << p.streams(s.stream()) << "] " << s.op() << "("
         << tensorList(s.inputs()) << ") -> " << tensorList(s.outputs()) << " @" << s.node();
      if (s.phase() == planpb::OPTIMIZER_STEP) os << " optimizer_step";
      if (s.record_event() >= 0) os << " record e" << s.record_event();
      for (int e : s.wait_events()) os << " wait e" << e;
      os << "\n";
    }
  }
  return os.str();
}

}  // namespace ds
