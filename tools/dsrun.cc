// dsrun: executes a plan produced by dscompile. Today: forward plans on the CPU
// backend with NumPy feeds and outputs. Bad input is one line on stderr, exit 2.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <map>

#include "ir/error.h"
#include "ir/plan.h"
#include "runtime/cpu_executor.h"
#include "runtime/npy.h"
#include "runtime/trainer.h"

#ifdef DS_HAVE_CUDA
#include "kernels/cuda/device.h"
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
  std::string metrics;
  bool poison = false;
};

void checkBackend(const std::string& backend) {
  if (backend == "cpu") return;
#ifdef DS_HAVE_CUDA
  std::string why = ds::cuda::unavailableReason();
  DS_CHECK(why.empty(), "--backend cuda: no usable GPU (", why, ")");
  throw ds::makeError(
      "--backend cuda: the CUDA executor is not implemented yet; use --backend cpu");
#else
  throw ds::makeError("--backend cuda: this dsrun was built without CUDA");
#endif
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
    out[feed.substr(0, eq)] = ds::readNpy(feed.substr(eq + 1));
  }
  return out;
}

int trainPlan(const Args& a, const ds::PlanFile& plan, ds::Executor& exec) {
  ds::TrainOptions options;
  options.steps = a.steps;
  options.datasets = readFeeds(a.feeds);
  options.metrics_path = a.metrics;
  std::unique_ptr<ds::Cifar10> cifar;
  if (!a.data.empty()) {
    const std::string prefix = "cifar10:";
    DS_CHECK(a.data.rfind(prefix, 0) == 0, "--data '", a.data, "': expected cifar10:DIR");
    cifar = std::make_unique<ds::Cifar10>(a.data.substr(prefix.size()),
                                          ds::Cifar10Options{a.seed, true});
    options.cifar = cifar.get();
  }
  auto start = std::chrono::steady_clock::now();
  std::vector<ds::StepMetrics> steps = ds::train(exec, plan, options);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cerr << "dsrun: trained " << steps.size() << " steps in " << seconds << " s; loss "
            << steps.front().loss << " -> " << steps.back().loss << ", last lr " << steps.back().lr
            << ", grad_norm " << steps.back().grad_norm << "\n";
  return 0;
}

int run(const Args& a) {
  checkBackend(a.backend);
  ds::PlanFile plan = ds::readPlanFile(a.plan);
  ds::ExecutorOptions options;
  options.rank = a.rank;
  options.poison_freed = a.poison;
  ds::CpuExecutor exec(plan, options);
  if (ds::isTrainingPlan(plan)) return trainPlan(a, plan, exec);
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
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                     .count());
  }
  if (!a.dump_outputs.empty()) {
    std::filesystem::create_directories(a.dump_outputs);
    for (size_t i = 0; i < exec.numOutputs(); ++i)
      ds::writeNpy(
          (std::filesystem::path(a.dump_outputs) / fileNameFor(exec.outputName(i))).string(),
          exec.output(i));
  }
  std::sort(ms.begin(), ms.end());
  std::cerr << "dsrun: ran " << plan.plan.ranks(a.rank).steps_size() << " steps of rank " << a.rank
            << " on the " << a.backend << " backend " << a.repeat << " time(s); median "
            << ms[ms.size() / 2] << " ms, min " << ms.front() << " ms per run\n";
  return 0;
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
  app.add_option("--steps", args.steps, "training plans: optimizer steps to run")
      ->check(CLI::PositiveNumber);
  app.add_option("--data", args.data,
                 "training data instead of --feed: cifar10:DIR (CIFAR-10 binary batches; shuffled "
                 "per epoch, random crop and flip, normalised)");
  app.add_option("--seed", args.seed, "seed of data shuffling and augmentation (default 0)");
  app.add_option("--metrics", args.metrics,
                 "training plans: write one JSON object per step (step, loss, lr, grad_norm, ...)");
  app.add_option("--repeat", args.repeat, "run the plan N times and report the median time")
      ->check(CLI::PositiveNumber);
  app.add_flag("--poison-freed", args.poison,
               "debug: overwrite each arena tensor after its last use (checks the memory plan)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::cerr << "dsrun: error: " << e.what() << " (see --help)\n";
    return ds::kUserErrorExitCode;
  }
  try {
    return run(args);
  } catch (const ds::Error& e) {
    std::cerr << "dsrun: error: " << e.what() << "\n";
    return ds::kUserErrorExitCode;
  }
}
