#include "ir/plan_verifier.h"

#include <algorithm>
#include <map>
#include <sstream>
#include <vector>

#include "ir/error.h"
#include "ir/stream_order.h"

namespace ds {
namespace {

struct Collective {
  const planpb::Step* step;
  std::string signature;  // what every rank must agree on
};

std::string signature(const PlanFile& plan, const planpb::Step& step) {
  std::ostringstream s;
  s << step.op() << " {";
  for (const planpb::Attr& a : step.attrs()) s << " " << a.ShortDebugString();
  s << " } (";
  for (int t : step.inputs()) s << " " << (t < 0 ? "absent" : plan.tensorType(t).toString());
  s << " ) -> (";
  for (int t : step.outputs()) s << " " << plan.tensorType(t).toString();
  s << " )";
  return s.str();
}

std::vector<Collective> collectivesOf(const PlanFile& plan, const planpb::RankPlan& rank) {
  std::vector<Collective> out;
  for (const planpb::Step& step : rank.steps())
    if (isCollectiveOp(step.op())) out.push_back({&step, signature(plan, step)});
  return out;
}

int64_t worldSizeAttr(const planpb::Step& step) {
  for (const planpb::Attr& a : step.attrs())
    if (a.name() == "world_size") return a.i();
  return -1;
}

}  // namespace

bool isCollectiveOp(const std::string& op) {
  return op == "AllReduce" || op == "ReduceScatter" || op == "AllGather" || op == "Broadcast";
}

void verifyPlanCollectives(const PlanFile& plan) {
  const planpb::Plan& p = plan.plan;
  if (p.ranks_size() == 0) return;
  const std::vector<Collective> reference = collectivesOf(plan, p.ranks(0));
  for (const Collective& c : reference)
    DS_CHECK(worldSizeAttr(*c.step) == p.ranks_size(), "plan: collective node '", c.step->node(),
             "' (", c.step->op(), ") has world_size ", worldSizeAttr(*c.step), " but the plan has ",
             p.ranks_size(), " ranks");
  for (int r = 1; r < p.ranks_size(); ++r) {
    const std::vector<Collective> mine = collectivesOf(plan, p.ranks(r));
    for (size_t i = 0; i < std::min(mine.size(), reference.size()); ++i)
      DS_CHECK(mine[i].signature == reference[i].signature, "plan: rank ", r, "'s collective #",
               i + 1, " (node '", mine[i].step->node(), "') does not match rank 0's (node '",
               reference[i].step->node(), "'): ", mine[i].signature, " vs ",
               reference[i].signature);
    DS_CHECK(mine.size() == reference.size(), "plan: rank ", r, " issues ", mine.size(),
             " collectives but rank 0 issues ", reference.size());
  }
}

void verifyPlanStreams(const PlanFile& plan) {
  const planpb::Plan& p = plan.plan;
  for (const planpb::RankPlan& rank : p.ranks()) {
    std::map<int32_t, int32_t> recorded_on;  // event -> the stream recording it
    for (const planpb::Step& step : rank.steps()) {
      auto where = [&] {
        return "plan: rank " + std::to_string(rank.rank()) + " step '" + step.node() + "' (" +
               step.op() + ")";
      };
      DS_CHECK(step.stream() >= 0 && step.stream() < p.streams_size(), where(), " runs on stream ",
               step.stream(), " but the plan has ", p.streams_size());
      for (int32_t e : step.wait_events()) {
        auto it = recorded_on.find(e);
        DS_CHECK(it != recorded_on.end(), where(), " waits on event ", e,
                 ", which no earlier step records");
        DS_CHECK(it->second != step.stream(), where(), " waits on event ", e, " of its own stream");
      }
      if (step.record_event() < 0) continue;
      DS_CHECK(step.record_event() < p.num_events(), where(), " records event ",
               step.record_event(), " but the plan has ", p.num_events());
      DS_CHECK(recorded_on.emplace(step.record_event(), step.stream()).second, where(),
               " records event ", step.record_event(), " a second time");
    }
  }
}

namespace {

bool inHostMemory(const planpb::TensorInfo& t) {
  return t.storage() == planpb::HOST_ARENA || t.storage() == planpb::HOST_PERSISTENT;
}

// The side a Copy writes ("to"); the other side is the one it reads.
bool copiesToHost(const planpb::Step& step) {
  for (const planpb::Attr& a : step.attrs())
    if (a.name() == "to") return a.s() == "host";
  throw makeError("plan: Copy step '", step.node(), "' has no 'to' attribute");
}

}  // namespace

void verifyPlanPlacement(const PlanFile& plan) {
  const planpb::Plan& p = plan.plan;
  for (const planpb::RankPlan& rank : p.ranks())
    for (const planpb::Step& step : rank.steps()) {
      // A plan without a stream list runs every step on one compute stream.
      DS_CHECK(step.stream() >= 0 && step.stream() < std::max(1, p.streams_size()), "plan: rank ",
               rank.rank(), " step '", step.node(), "' runs on stream ", step.stream(),
               " but the plan has ", p.streams_size());
      const bool host_step = p.streams_size() > 0 && p.streams(step.stream()) == "host";
      const bool copy = step.op() == "Copy";
      const bool to_host = copy && copiesToHost(step);
      auto check = [&](int tensor, bool written) {
        if (tensor < 0) return;
        const bool want_host = copy ? to_host == written : host_step;
        const planpb::TensorInfo& t = p.tensors(tensor);
        DS_CHECK(inHostMemory(t) == want_host, "plan: rank ", rank.rank(), " step '", step.node(),
                 "' (", step.op(), ") ", written ? "writes" : "reads", " '", t.name(), "' in ",
                 inHostMemory(t) ? "host" : "device", " memory, where a ",
                 copy ? std::string("copy to the ") + (to_host ? "host" : "device")
                      : std::string(host_step ? "host" : "device") + " step",
                 " needs ", want_host ? "host" : "device", " memory (the plan lacks a Copy)");
      };
      for (int t : step.inputs()) check(t, false);
      for (int t : step.outputs()) check(t, true);
    }
}

void verifyPlanMemoryOrder(const PlanFile& plan) {
  if (plan.plan.streams_size() <= 1) return;  // one stream runs in order
  for (const planpb::RankPlan& rank : plan.plan.ranks())
    for (bool optimizer_run : {true, false}) {
      StreamOrder order(plan, rank, optimizer_run);
      for (int i = 0; i < rank.steps_size(); ++i) {
        if (!order.runs(i)) continue;
        for (int before : order.hazards(i))
          if (before >= 0) {
            const planpb::Step &writer = rank.steps(i), &user = rank.steps(before);
            throw makeError("plan: rank ", rank.rank(), " step '", writer.node(), "' (",
                            writer.op(), ") uses bytes that step '", user.node(), "' (", user.op(),
                            ") on stream '", plan.plan.streams(user.stream()),
                            "' may still be using: no event orders them (a plan from an ",
                            "older dscompile? compile it again)");
          }
        order.commit(i);
      }
    }
}

}  // namespace ds
