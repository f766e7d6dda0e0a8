// DeepSpeed's comms_logger (deepspeed/utils/comms_logging.py) for dsrun: each
// collective of rank 0's plan, timed (the executor times every step, as with
// wall_clock_breakdown), recorded under DeepSpeed's op name and message size: that
// of the op's input, as DeepSpeed records its `tensor` argument (a gather's shard,
// a reduce-scatter's whole buffer). verbose prints one line per collective as
// DeepSpeed's does:
//   comm op: all_reduce | time (ms): 0.52 | msg size: 1.0 MB | algbw (Gbps): 16.11 | ...
// and rank 0 prints DeepSpeed's log_summary() table when training ends (a DeepSpeed
// script calls it itself): per op, in the order first logged, and message size, the
// count, total and mean latency, and the mean algorithm and bus bandwidth (means
// trimmed of 10% at each end), with DeepSpeed's calc_bw_log arithmetic, in Gbit/s.
// prof_all (the default) logs every op; without it, the ops prof_ops names (names
// of ops a plan never runs log nothing).
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ir/plan.h"

namespace ds {

struct CommLogOptions {
  bool enabled = false;
  bool verbose = false;
  bool prof_all = true;
  std::vector<std::string> prof_ops;
};

// The comms_logger section of `config` (the plan's effective config), with
// DeepSpeed's defaults.
CommLogOptions commLogOptions(const nlohmann::json& config);

// DeepSpeed's name of a plan collective: all_reduce, all_gather_into_tensor,
// reduce_scatter_tensor, broadcast.
std::string deepSpeedCommName(const std::string& op);

// DeepSpeed's convert_size: bytes in B, KB, MB, ... (powers of 1024) rounded to
// two decimals as Python's round() does, printed as Python prints the float.
std::string convertSize(int64_t bytes);

class CommLog {
 public:
  CommLog(const PlanFile& plan, int rank, CommLogOptions options);

  // One run's per-step times (Executor::lastRunSeconds); `optimizer_step`: whether
  // the run included the optimizer-step phase. Returns the verbose lines.
  std::vector<std::string> record(std::span<const double> seconds, bool optimizer_step);
  // DeepSpeed's summary table (its header alone when nothing was logged).
  std::string summary() const;

 private:
  struct Logged {  // one collective step
    size_t step;
    std::string name;
    int64_t bytes;
    bool optimizer_phase;
  };
  struct Record {
    std::vector<double> latencies_ms, algbw, busbw;
  };

  int64_t world_;
  size_t steps_;  // the rank's
  CommLogOptions options_;
  std::vector<Logged> logged_;
  // By op name in the order first logged, then by message size.
  std::vector<std::pair<std::string, std::map<int64_t, Record>>> records_;
};

}  // namespace ds
