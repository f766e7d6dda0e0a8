// dsrun: executes a plan produced by dscompile on the CPU or CUDA backend: forward
// plans with NumPy feeds and outputs; training plans with datasets, checkpoints and
// ONNX export; plans of several ranks as threads or MPI processes (on GPUs, with
// NCCL or the local device transport). Bad input is one line on stderr, exit 2.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include <unistd.h>

#include "frontend/onnx_export.h"
#include "ir/error.h"
#include "ir/plan.h"
#include "runtime/checkpoint.h"
#include "runtime/cifar10.h"
#include "runtime/comm/device_communicator.h"
#include "runtime/comm_log.h"
#include "runtime/cpu_executor.h"
#include "runtime/flops_profile.h"
#include "runtime/image_folder.h"
#include "runtime/launch.h"
#include "runtime/lr_schedule.h"
#include "runtime/monitor.h"
#include "runtime/npy.h"
#include "runtime/step_profile.h"
#include "runtime/synthetic_data.h"
#include "runtime/train_log.h"
#include "runtime/trainer.h"
#include "runtime/wall_clock.h"
#include "tools/cli_main.h"

#ifdef DS_HAVE_CUDA
#include "kernels/cuda/cuda_executor.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/device_comms.h"
#endif

namespace {

struct Args {
  std::string plan;
  std::string backend = "cpu";
  std::vector<std::string> feeds;  // NAME=FILE.npy
  std::string dump_outputs;
  int rank = 0;
  int repeat = 1;
  int64_t steps = 1;
  std::string data;
  uint64_t seed = 0;
  bool seed_given = false;
  std::string metrics;
  bool poison = false;
  bool print_times = false;
  bool profile = false;
  std::string save, resume, export_onnx;
  int64_t save_every = 0;      // 0: only after the last step
  std::string comm = "local";  // plans with several ranks: local threads or mpi processes
  double comm_timeout = ds::comm::kDefaultTimeoutSeconds;
  std::string fault;  // test hook: RANK:K:MODE (runtime/comm/fault_injection.h)
  bool rank_given = false;
  std::string device_comm = "auto";  // --backend cuda with several ranks
  bool no_cuda_graph = false;
  bool cudnn_benchmark = false;
  bool channels_last = false;
};

void checkBackend(const std::string& backend) {
  if (backend == "cpu") return;
#ifdef DS_HAVE_CUDA
  std::string why = ds::cuda::unavailableReason();
  DS_CHECK(why.empty(), "--backend cuda: no usable GPU (", why, ")");
#else
  throw ds::makeError("--backend cuda: this dsrun was built without CUDA");
#endif
}

// The executor of --backend (checked by checkBackend).
std::unique_ptr<ds::Executor> makeExecutor(const std::string& backend, const ds::PlanFile& plan,
                                           const ds::ExecutorOptions& options) {
#ifdef DS_HAVE_CUDA
  if (backend == "cuda") return std::make_unique<ds::CudaExecutor>(plan, options);
#endif
  (void)backend;
  return std::make_unique<ds::CpuExecutor>(plan, options);
}

// Output names may hold '/' or ':' (ONNX names); file names may not.
std::string fileNameFor(std::string name) {
  for (char& c : name)
    if (c == '/' || c == ':' || c == '\\') c = '_';
  return name + ".npy";
}

// NAME=FILE.npy pairs, read.
std::map<std::string, ds::Tensor> readFeeds(const std::vector<std::string>& feeds) {
  std::map<std::string, ds::Tensor> out;
  for (const std::string& feed : feeds) {
    auto eq = feed.find('=');
    DS_CHECK(eq != std::string::npos && eq > 0, "--feed '", feed, "': expected NAME=FILE.npy");
    try {
      out[feed.substr(0, eq)] = ds::readNpy(feed.substr(eq + 1));
    } catch (const ds::Error& e) {
      throw ds::makeError("--feed ", feed.substr(0, eq), ": ", e.what());
    }
  }
  return out;
}

// Global samples per optimizer step (train_batch_size), 0 when the plan does not say.
int64_t samplesPerStep(const ds::PlanFile& plan) {
  return plan.config().value("train_batch_size", int64_t{0});
}

// A recompiled plan may legitimately change hyperparameters (a lower lr to finish a
// run), so a config that differs from the checkpoint's is a warning naming the keys.
void warnOnConfigChange(const ds::CheckpointInfo& info, const ds::PlanFile& plan) {
  const nlohmann::json now = plan.config();
  std::string keys;
  for (const auto& op : nlohmann::json::diff(info.manifest.value("config", nlohmann::json()), now))
    keys += (keys.empty() ? "" : ", ") + op.value("path", "");
  if (!keys.empty())
    std::cerr << "dsrun: warning: the plan's config differs from the checkpoint's at " << keys
              << "\n";
}

// --resume: the checkpoint, checked against the plan, its seed and data position.
std::optional<ds::CheckpointInfo> readResume(const Args& a, const ds::PlanFile& plan) {
  if (a.resume.empty()) return std::nullopt;
  DS_CHECK(ds::isTrainingPlan(plan), "--resume: ", a.plan, " is not a training plan");
  ds::CheckpointInfo info = ds::readCheckpoint(a.resume, plan);
  const ds::TrainPosition& pos = info.position;
  DS_CHECK(!a.seed_given || a.seed == pos.seed, "--seed ", a.seed, ": the checkpoint in ", a.resume,
           " was trained with seed ", pos.seed,
           "; another seed would not continue the same run (omit --seed)");
  int64_t per_step = samplesPerStep(plan);
  DS_CHECK(per_step == 0 || pos.samples_seen == pos.step * per_step, "--resume ", a.resume,
           ": the checkpoint consumed ", pos.samples_seen, " samples in ", pos.step,
           " steps, but this plan takes ", per_step,
           " per step, so the data would not continue where it stopped");
  warnOnConfigChange(info, plan);
  return info;
}

// A progress bar on a terminal; nothing otherwise (the summary line follows).
class Progress {
 public:
  Progress(int64_t first, int64_t last) : first_(first), last_(last), tty_(isatty(2) != 0) {}
  void update(const ds::StepMetrics& m) {
    if (!tty_) return;
    constexpr int kWidth = 30;
    auto done =
        static_cast<int>(kWidth * (m.step - first_ + 1) / std::max<int64_t>(1, last_ - first_ + 1));
    std::fprintf(stderr, "\r[%s%s] step %lld/%lld  loss %.4f  %.1f samples/s ",
                 std::string(static_cast<size_t>(done), '=').c_str(),
                 std::string(static_cast<size_t>(kWidth - done), ' ').c_str(),
                 static_cast<long long>(m.step), static_cast<long long>(last_), m.loss,
                 m.samples_per_s);
    if (m.step == last_) std::fputc('\n', stderr);
  }
  // Erases the bar, so that a log line on the same terminal starts on a clean line
  // (the next update draws it again).
  void clear() const {
    if (tty_) std::fputs("\r\033[K", stderr);
  }

 private:
  int64_t first_, last_;
  bool tty_;
};

// The data source: --feed datasets, --data cifar10:DIR, imagefolder:DIR or synthetic.
struct DataSources {
  std::unique_ptr<ds::ImageDataset> images;
  std::unique_ptr<ds::SyntheticData> synthetic;
};

// `seed` is the run's: --seed, or the checkpoint's when resuming.
void setData(const Args& a, const ds::PlanFile& plan, uint64_t seed, ds::TrainOptions* options,
             DataSources* sources) {
  options->datasets = readFeeds(a.feeds);
  if (a.data.empty()) return;
  if (a.data == "synthetic") {
    DS_CHECK(a.feeds.empty(), "--data synthetic: give no --feed");
    sources->synthetic = std::make_unique<ds::SyntheticData>(plan, seed);
    options->synthetic = sources->synthetic.get();
    return;
  }
  const size_t colon = a.data.find(':');
  const std::string kind = a.data.substr(0, colon), dir = a.data.substr(colon + 1);
  DS_CHECK(colon != std::string::npos && (kind == "cifar10" || kind == "imagefolder"), "--data '",
           a.data, "': expected cifar10:DIR, imagefolder:DIR or synthetic");
  if (kind == "cifar10")
    sources->images = std::make_unique<ds::Cifar10>(dir, ds::Cifar10Options{seed, true});
  else
    sources->images = std::make_unique<ds::ImageFolder>(dir, ds::ImageFolderOptions{seed, true});
  options->images = sources->images.get();
}

// --save DIR must not hold a later run's checkpoint, which this run would replace.
void checkSaveDir(const Args& a, int64_t start_step) {
  if (a.save.empty()) return;
  int64_t saved = ds::latestCheckpointStep(a.save);
  DS_CHECK(saved <= start_step, "--save ", a.save, ": holds a checkpoint at step ", saved,
           ", beyond this run's start (step ", start_step, "); continue it with --resume ", a.save,
           " or save elsewhere");
}

// Where the flops profiler's report goes: its output_file, opened before training
// (its directory made, as DeepSpeed does) so that a bad path fails at once, and only
// when this run reaches the profiled step (a resumed run past it leaves an earlier
// profile alone); else among the lines rank 0 prints.
class FlopsProfileOutput {
 public:
  FlopsProfileOutput(const ds::FlopsProfilerOptions& profiler, bool profiles_in_this_run)
      : path_(profiler.output_file) {
    if (!profiler.enabled || !profiles_in_this_run || path_.empty()) return;
    std::error_code error;
    const std::filesystem::path parent = std::filesystem::path(path_).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent, error);
    file_.open(path_);
    DS_CHECK(file_.good(), "flops_profiler.output_file: cannot write ", path_);
  }
  void write(const std::string& report, std::vector<std::string>* lines) {
    if (path_.empty()) {
      lines->push_back(report);
      return;
    }
    file_ << report;
    file_.flush();
    DS_CHECK(file_.good(), "flops_profiler.output_file: cannot write ", path_);
  }

 private:
  std::string path_;
  std::ofstream file_;
};

// Trains one rank; rank 0 reports (metrics file, the config's monitors, DeepSpeed's
// log lines, flops profile and comms log, progress, the summary line).
int trainPlan(const Args& a, const ds::PlanFile& plan, ds::Executor& exec,
              const std::optional<ds::CheckpointInfo>& resume) {
  const bool reporting = exec.rank() == 0;
  ds::TrainOptions options;
  options.steps = a.steps;
  if (reporting) options.metrics_path = a.metrics;
  ds::TrainPosition pos;
  pos.seed = a.seed;
  if (resume) pos = resume->position;
  options.skipped_steps = pos.skipped_steps;
  options.loss_scaler = pos.loss_scaler;
  DataSources sources;
  setData(a, plan, pos.seed, &options, &sources);
  if (resume) ds::restoreCheckpoint(*resume, exec);
  checkSaveDir(a, pos.step);
  options.start_step = pos.step;
  if (a.steps <= pos.step) {
    if (reporting)
      std::cerr << "dsrun: the checkpoint is at step " << pos.step << " already (--steps "
                << a.steps << "): nothing to train\n";
    return 0;
  }
  Progress progress(pos.step + 1, a.steps);
  const nlohmann::json config = plan.config();
  std::vector<std::unique_ptr<ds::MonitorWriter>> monitors;
  if (reporting) monitors = ds::monitorsFromConfig(config);
  ds::TrainLog log(config);
  const ds::FlopsProfilerOptions profiler = ds::flopsProfilerOptions(config);
  std::optional<FlopsProfileOutput> profile_output;
  if (reporting)
    profile_output.emplace(
        profiler, pos.step < profiler.profiledStep() && profiler.profiledStep() <= a.steps);
  options.after_step = [&](const ds::StepMetrics& m) {
    if (reporting) {
      std::vector<std::string> lines = log.lines(m);
      if (profiler.enabled && m.step == profiler.profiledStep())
        profile_output->write(ds::flopsProfileReport(plan, exec.rank(), m, exec.lastRunSeconds()),
                              &lines);
      if (!lines.empty()) progress.clear();
      for (const std::string& line : lines) std::cout << line << "\n";
      std::cout.flush();
      progress.update(m);
    }
    if (!monitors.empty()) {
      const std::vector<ds::MonitorEvent> events = ds::stepEvents(m, config);
      for (const auto& monitor : monitors) monitor->write(events);
    }
    bool due = m.step == a.steps || (a.save_every > 0 && m.step % a.save_every == 0);
    if (a.save.empty() || !due) return;
    ds::saveCheckpoint(
        a.save, exec,
        {m.step, m.step * samplesPerStep(plan), pos.seed, m.skipped_steps, m.loss_scaler});
  };
  const ds::CommLogOptions comm_options = ds::commLogOptions(config);
  std::optional<ds::CommLog> comm_log;
  if (reporting && comm_options.enabled) {
    comm_log.emplace(plan, exec.rank(), comm_options);
    options.after_micro_step = [&](bool optimizer_step) {
      const std::vector<std::string> lines =
          comm_log->record(exec.lastRunSeconds(), optimizer_step);
      if (!lines.empty()) progress.clear();
      for (const std::string& line : lines) std::cout << line << "\n";
      if (!lines.empty()) std::cout.flush();
    };
  }
  auto start = std::chrono::steady_clock::now();
  std::vector<ds::StepMetrics> steps = ds::train(exec, plan, options);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!reporting) return 0;
  if (comm_log) std::cout << comm_log->summary() << std::flush;  // DeepSpeed's log_summary()
  std::cerr << "dsrun: trained " << steps.size() << " steps in " << seconds << " s; loss "
            << steps.front().loss << " -> " << steps.back().loss << ", last lr " << steps.back().lr
            << ", grad_norm " << steps.back().grad_norm << "\n";
  return 0;
}

// dsrun --profile: the executor's step times as a table (docs/cpu_backend.md).
void printProfile(const ds::PlanFile& plan, const ds::Executor& exec) {
  ds::Executor::StepTimes t = exec.stepTimes();
  std::cerr << ds::stepProfileReport(plan, exec.rank(), t.seconds, t.runs);
}

// Feeds, runs --repeat times; the reporting rank (0) writes outputs and the timing.
void runForward(const Args& a, const ds::PlanFile& plan, ds::Executor& exec, int rank) {
  for (const std::string& feed : a.feeds) {
    auto eq = feed.find('=');
    DS_CHECK(eq != std::string::npos && eq > 0, "--feed '", feed, "': expected NAME=FILE.npy");
    std::string name = feed.substr(0, eq), path = feed.substr(eq + 1);
    try {
      exec.setFeed(name, ds::readNpy(path));
    } catch (const ds::Error& e) {
      throw ds::makeError("--feed ", name, "=", path, ": ", e.what());
    }
  }
  // Steady-state timing: plan loading and kernel construction happen above, once.
  std::vector<double> ms;
  for (int i = 0; i < a.repeat; ++i) {
    auto start = std::chrono::steady_clock::now();
    exec.run();
    exec.waitForRuns();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                     .count());
  }
  if (rank != a.rank) return;  // several ranks: only rank 0 reports
  if (a.print_times)
    for (size_t i = 0; i < ms.size(); ++i)
      std::cerr << "dsrun: run " << i + 1 << " took " << ms[i] << " ms\n";
  if (a.profile) printProfile(plan, exec);
  if (!a.dump_outputs.empty()) {
    std::filesystem::create_directories(a.dump_outputs);
    for (size_t i = 0; i < exec.numOutputs(); ++i)
      ds::writeNpy(
          (std::filesystem::path(a.dump_outputs) / fileNameFor(exec.outputName(i))).string(),
          exec.output(i));
  }
  if (!a.export_onnx.empty()) ds::exportOnnx(exec, a.export_onnx);
  std::sort(ms.begin(), ms.end());
  std::cerr << "dsrun: ran " << plan.plan.ranks(rank).steps_size() << " steps of rank " << rank
            << " on the " << a.backend << " backend " << a.repeat << " time(s); median "
            << ms[ms.size() / 2] << " ms, min " << ms.front() << " ms per run\n";
}

// Whether the config asks for what needs every step timed: DeepSpeed's timers
// (runtime/wall_clock.h) or its comms logger (runtime/comm_log.h).
bool timesTrainingSteps(const ds::PlanFile& plan) {
  if (!ds::isTrainingPlan(plan)) return false;
  const nlohmann::json config = plan.config();
  return ds::timesSteps(config) || ds::commLogOptions(config).enabled;
}

// The executor options the flags give rank `rank`.
ds::ExecutorOptions executorOptions(const Args& a, const ds::PlanFile& plan, int rank,
                                    const std::optional<ds::CheckpointInfo>& resume) {
  ds::ExecutorOptions options;
  options.rank = rank;
  options.poison_freed = a.poison;
  options.seed = resume ? resume->position.seed : a.seed;
  options.profile = a.profile || timesTrainingSteps(plan);
  options.cuda_graph = !a.no_cuda_graph;
  options.cudnn_benchmark = a.cudnn_benchmark;
  options.cuda_channels_last = a.channels_last;
  return options;
}

int runOneRank(const Args& a, const ds::PlanFile& plan) {
  std::optional<ds::CheckpointInfo> resume = readResume(a, plan);
  if (!a.export_onnx.empty()) ds::checkOnnxExportable(plan);
  ds::ExecutorOptions options = executorOptions(a, plan, a.rank, resume);
  std::unique_ptr<ds::Executor> executor = makeExecutor(a.backend, plan, options);
  ds::Executor& exec = *executor;
  if (ds::isTrainingPlan(plan)) {
    int rc = trainPlan(a, plan, exec, resume);
    if (!a.export_onnx.empty()) ds::exportOnnx(exec, a.export_onnx);
    if (a.profile) printProfile(plan, exec);
    return rc;
  }
  DS_CHECK(a.save.empty(), "--save: ", a.plan, " is not a training plan");
  runForward(a, plan, exec, a.rank);
  return 0;
}

// Plans with several ranks (or under mpirun): the launcher runs every rank, each
// with its communicator; rank 0 writes the outputs and the timing line. Every
// failed rank's error is one line; a stuck rank or MPI means leaving at once.
int runRanks(const Args& a, const ds::PlanFile& plan) {
  const int n = plan.plan.ranks_size();
  DS_CHECK(!a.rank_given, "--rank: a plan with ", n,
           " ranks runs all of them (threads with "
           "--comm local, one per process under mpirun with --comm mpi)");
  const bool training = ds::isTrainingPlan(plan);
  DS_CHECK(training || (a.save.empty() && a.resume.empty() && a.export_onnx.empty()),
           "--save, --resume and --export-onnx need a training plan");
  const std::optional<ds::CheckpointInfo> resume = readResume(a, plan);
  if (!a.export_onnx.empty()) ds::checkOnnxExportable(plan);
  ds::LaunchOptions launch{a.comm, a.comm_timeout, ds::FaultSpec{}};
  if (!a.fault.empty()) launch.fault = ds::parseFaultSpec(a.fault);
  ds::LaunchResult result = ds::launchRanks(n, launch, [&](ds::Communicator& comm) {
    ds::ExecutorOptions options = executorOptions(a, plan, comm.rank(), resume);
    options.comm = &comm;
    std::unique_ptr<ds::DeviceCommunicator> device_comm;
#ifdef DS_HAVE_CUDA
    if (a.backend == "cuda")
      device_comm = ds::cuda::makeDeviceCommunicator(comm, a.device_comm, a.comm_timeout);
#endif
    options.device_comm = device_comm.get();
    std::unique_ptr<ds::Executor> executor = makeExecutor(a.backend, plan, options);
    ds::Executor& exec = *executor;
    if (training) {
      trainPlan(a, plan, exec, resume);
      if (!a.export_onnx.empty()) ds::exportOnnx(exec, a.export_onnx);
      if (a.profile && comm.rank() == 0) printProfile(plan, exec);
    } else {
      runForward(a, plan, exec, comm.rank());
    }
  });
  for (const std::string& e : result.errors) std::cerr << "dsrun: error: " << e << "\n";
  int rc = result.ok() ? 0 : ds::kUserErrorExitCode;
  if (result.must_exit) {
    std::cerr.flush();
    std::_Exit(rc);
  }
  return rc;
}

int run(const Args& a) {
  checkBackend(a.backend);
  ds::PlanFile plan = ds::readPlanFile(a.plan);
  // dsrun is the trainer: a scheduler's "auto" total_num_steps is this run's --steps.
  if (ds::isTrainingPlan(plan))
    plan.plan.set_config_json(ds::withTotalSteps(plan.config(), a.steps).dump());
  // A named device transport runs even one rank through it (NCCL at world size 1).
  const bool device_comm = a.backend == "cuda" && a.device_comm != "auto";
  DS_CHECK(a.data.empty() || ds::isTrainingPlan(plan), "--data: ", a.plan,
           " is a forward-only plan (compiled without a loss or an optimizer); feed it with "
           "--feed NAME=FILE.npy");
  if (a.backend == "cuda" && timesTrainingSteps(plan))
    std::cerr << "dsrun: note: the config's wall_clock_breakdown, flops_profiler or "
                 "comms_logger times every step: the GPU runs without CUDA graphs and waits at "
                 "each micro-step's end\n";
  if (plan.plan.ranks_size() > 1 || a.comm == "mpi" || device_comm) return runRanks(a, plan);
  return runOneRank(a, plan);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dsrun: execute a dscompile plan"};
  Args args;
  app.add_option("plan", args.plan, "plan file written by dscompile -o")->required();
  app.add_option("--backend", args.backend, "cpu (default) or cuda")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option(
      "--feed", args.feeds,
      "NAME=FILE.npy: the value of plan input NAME (training: its dataset, samples along axis 0)");
  app.add_option("--dump-outputs", args.dump_outputs, "write each output as DIR/NAME.npy");
  app.add_option("--rank", args.rank, "which rank of the plan to run (default 0)");
  app.add_option("--steps", args.steps,
                 "training plans: train up to optimizer step N (with --resume, counting the "
                 "checkpoint's steps)")
      ->check(CLI::PositiveNumber);
  app.add_option(
      "--data", args.data,
      "training data instead of --feed: imagefolder:DIR (DIR/<class>/<image>.jpg or .png as "
      "torchvision's ImageFolder; RandomResizedCrop to the input's size, flip, "
      "ImageNet normalisation), cifar10:DIR (CIFAR-10 binary batches; shuffled "
      "per epoch, random crop and flip, normalised) or synthetic (seeded random "
      "samples: floats standard normal, labels in [0, classes))");
  app.add_option("--seed", args.seed,
                 "seed of data order, augmentation, synthetic data and dropout masks (default 0; "
                 "--resume takes the checkpoint's)");
  CLI::Option* save =
      app.add_option(
             "--save", args.save,
             "training plans: checkpoint into DIR after the last step (DIR/latest names the "
             "newest DIR/step-N; written atomically; see docs/checkpoints.md)")
          ->type_name("DIR");
  app.add_option("--save-every", args.save_every, "with --save: also checkpoint every K steps")
      ->check(CLI::PositiveNumber)
      ->needs(save);
  app.add_option("--resume", args.resume,
                 "training plans: continue from the latest checkpoint in DIR (parameters, "
                 "optimizer state, step, data position, seed); --steps counts the resumed steps")
      ->type_name("DIR");
  app.add_option("--export-onnx", args.export_onnx,
                 "after training: write the source ONNX model with the trained parameters and "
                 "BatchNorm statistics to FILE")
      ->type_name("FILE");
  app.add_option("--metrics", args.metrics,
                 "training plans: write one JSON object per step (step, loss, lr, grad_norm, ...)");
  app.add_flag("--print-times", args.print_times, "with --repeat: print each run's time");
  app.add_flag("--profile", args.profile,
               "time every step and print the time per op and the slowest steps of rank 0 "
               "(training: per micro-step; cuda: device time from events, runs not captured "
               "as CUDA graphs)");
  app.add_option("--repeat", args.repeat, "run the plan N times and report the median time")
      ->check(CLI::PositiveNumber);
  app.add_option("--comm", args.comm,
                 "plans with several ranks: local (one thread per rank; the default) or mpi "
                 "(one process per rank; the default under mpirun: mpirun -np N dsrun PLAN)")
      ->check(CLI::IsMember({"local", "mpi"}));
  app.add_option("--device-comm", args.device_comm,
                 "--backend cuda, plans with several ranks: nccl (one GPU per rank), local "
                 "(rank threads sharing GPU 0) or auto (nccl when every rank has a GPU; the "
                 "default)")
      ->check(CLI::IsMember({"auto", "nccl", "local"}));
  app.add_flag("--no-cuda-graph", args.no_cuda_graph,
               "--backend cuda: enqueue every step of every run instead of replaying the "
               "step captured as a CUDA graph");
  app.add_flag("--cudnn-benchmark", args.cudnn_benchmark,
               "--backend cuda: choose each convolution's algorithm by timing cuDNN's "
               "candidates at load (as torch.backends.cudnn.benchmark) instead of from its "
               "heuristics, the fastest whether deterministic or not, and run fused attention's "
               "non-deterministic backward: results can then differ in their last bits between "
               "runs");
  app.add_flag("--channels-last", args.channels_last,
               "--backend cuda: keep fp16/bf16 activations channels-last (NHWC) between the "
               "convolutions, BatchNorms and element-wise steps that take them, as PyTorch's "
               "channels_last memory format (the CPU backend does this for f32 always)");
  app.add_option("--comm-timeout", args.comm_timeout,
                 "seconds a rank waits in a collective for the others before it fails, naming "
                 "the missing ranks (default 300)")
      ->check(CLI::PositiveNumber);
  app.add_option("--fault", args.fault,
                 "test hook: RANK:K:MODE makes rank RANK throw, kill itself or hang at its K-th "
                 "collective")
      ->group("");  // hidden
  app.add_flag("--poison-freed", args.poison,
               "debug: overwrite each arena tensor after its last use (checks the memory plan)");
  auto flag_counts = [&] {
    args.seed_given = app.count("--seed") > 0;
    args.rank_given = app.count("--rank") > 0;
    if (app.count("--comm") == 0) args.comm = ds::defaultComm();
  };
  return ds::tools::runCli("dsrun", app, argc, argv, flag_counts, [&] { return run(args); });
}
