#include "runtime/step_profile.h"

#include <algorithm>
#include <iomanip>
#include <map>
#include <numeric>
#include <sstream>

#include "ir/error.h"

namespace ds {

namespace {

std::string shapesOf(const PlanFile& plan, const google::protobuf::RepeatedField<int32_t>& list) {
  std::string out;
  for (int t : list) {
    if (!out.empty()) out += ", ";
    out += t < 0 ? "-" : plan.tensorType(t).toString();
  }
  return out;
}

}  // namespace

std::string stepProfileReport(const PlanFile& plan, int rank, const std::vector<double>& seconds,
                              int64_t runs, size_t top_steps) {
  const planpb::RankPlan& r = plan.plan.ranks(rank);
  DS_CHECK(seconds.size() == static_cast<size_t>(r.steps_size()) && runs > 0,
           "a step profile needs one time per step of rank ", rank, " and at least one run");
  const double total = std::accumulate(seconds.begin(), seconds.end(), 0.0);
  const double share = total > 0 ? 100.0 / total : 0.0;
  struct OpTime {
    int steps = 0;
    double seconds = 0;
  };
  std::map<std::string, OpTime> by_op;
  for (int s = 0; s < r.steps_size(); ++s) {
    OpTime& t = by_op[r.steps(s).op()];
    ++t.steps;
    t.seconds += seconds[static_cast<size_t>(s)];
  }
  std::vector<std::pair<std::string, OpTime>> ops(by_op.begin(), by_op.end());
  std::stable_sort(ops.begin(), ops.end(), [](const auto& a, const auto& b) {
    return a.second.seconds > b.second.seconds;
  });
  std::ostringstream out;
  out << std::fixed << std::setprecision(3);
  out << "profile of rank " << rank << ", " << runs << " run(s): " << 1e3 * total / runs
      << " ms per run in " << r.steps_size() << " steps\n";
  out << "  " << std::left << std::setw(32) << "op" << std::right << std::setw(7) << "steps"
      << std::setw(14) << "ms per run" << std::setw(9) << "share"
      << "\n";
  for (const auto& [op, t] : ops)
    out << "  " << std::left << std::setw(32) << op << std::right << std::setw(7) << t.steps
        << std::setw(14) << 1e3 * t.seconds / runs << std::setw(8) << std::setprecision(1)
        << t.seconds * share << "%\n"
        << std::setprecision(3);
  std::vector<int> order(static_cast<size_t>(r.steps_size()));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return seconds[static_cast<size_t>(a)] > seconds[static_cast<size_t>(b)];
  });
  order.resize(std::min(order.size(), top_steps));
  out << "slowest steps (ms per run):\n";
  for (int s : order) {
    const planpb::Step& step = r.steps(s);
    out << "  " << std::setw(10) << 1e3 * seconds[static_cast<size_t>(s)] / runs << "  #" << s
        << " " << step.op() << " @" << step.node() << " (" << shapesOf(plan, step.inputs())
        << ") -> (" << shapesOf(plan, step.outputs()) << ")\n";
  }
  return out.str();
}

}  // namespace ds
