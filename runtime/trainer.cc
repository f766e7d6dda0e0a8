#include "runtime/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <optional>
#include <utility>

#include "ir/error.h"
#include "passes/add_optimizer.h"
#include "runtime/comm/communicator.h"
#include "runtime/feed_ranges.h"
#include "runtime/loss_scaler.h"
#include "runtime/lr_schedule.h"

namespace ds {
namespace {

// Samples [start, start + count) of `data` along axis 0, wrapping around.
Tensor slice(const Tensor& data, int64_t start, int64_t count) {
  int64_t n = data.shape()[0];
  size_t row = data.bytes() / static_cast<size_t>(n);
  Shape shape = data.shape();
  shape[0] = count;
  Tensor out({data.dtype(), shape});
  for (int64_t i = 0; i < count; ++i)
    std::memcpy(out.raw() + static_cast<size_t>(i) * row,
                data.raw() + static_cast<size_t>((start + i) % n) * row, row);
  return out;
}

// The position of feed `name` in the plan's feeds.
int feedIndexOf(const PlanFile& plan, const std::string& name) {
  for (int i = 0; i < plan.plan.feeds_size(); ++i)
    if (plan.plan.tensors(plan.plan.feeds(i)).name() == name) return i;
  throw makeError("the plan has no input '", name, "'");
}

}  // namespace

bool isTrainingPlan(const PlanFile& plan) {
  for (int idx : plan.plan.feeds())
    if (plan.plan.tensors(idx).name() == kLrFeed) return true;
  return false;
}

std::vector<StepMetrics> train(Executor& exec, const PlanFile& plan, const TrainOptions& o) {
  const nlohmann::json config = plan.config();
  std::vector<std::string> data_feeds;
  std::string image_feed, label_feed;
  for (const std::string& name : exec.feedNames()) {
    if (isRuntimeFeed(name)) continue;
    if (o.images) {
      (exec.feedType(name).dtype == DType::I64 ? label_feed : image_feed) = name;
      continue;
    }
    if (o.synthetic) {
      data_feeds.push_back(name);
      continue;
    }
    auto it = o.datasets.find(name);
    DS_CHECK(it != o.datasets.end(), "input '", name, "' (", exec.feedType(name).toString(),
             " per micro-batch) has no dataset: give --feed ", name, "=FILE.npy");
    TensorType want = exec.feedType(name);
    const Tensor& d = it->second;
    DS_CHECK(d.dtype() == want.dtype && d.shape().size() == want.shape.size() &&
                 !d.shape().empty() &&
                 std::equal(d.shape().begin() + 1, d.shape().end(), want.shape.begin() + 1),
             "--feed ", name, ": samples must be ", dtypeName(want.dtype), " of shape ",
             shapeToString(Shape(want.shape.begin() + 1, want.shape.end())), ", got ",
             d.type().toString());
    checkFeedRange(plan, plan.plan.feeds(feedIndexOf(plan, name)), d, "--feed " + name);
    data_feeds.push_back(name);
  }
  for (const auto& [name, d] : o.datasets)
    DS_CHECK(std::find(data_feeds.begin(), data_feeds.end(), name) != data_feeds.end(), "--feed ",
             name, ": the plan has no such input");
  if (o.images) {
    DS_CHECK(!image_feed.empty() && !label_feed.empty() && o.datasets.empty(), o.images->name(),
             ": the plan must have one image input and one label input");
    o.images->checkImageInput(image_feed, exec.feedType(image_feed));
    // Checked now: the loss kernel would only fail at the first batch with a label >= classes.
    auto classes = feedRange(plan, plan.plan.feeds(feedIndexOf(plan, label_feed)));
    DS_CHECK(!classes || classes->end >= o.images->classes(), o.images->name(), ": ",
             classes->reader, " takes ", classes->end,
             " classes but the dataset's labels go up to ", o.images->classes() - 1);
  }
  int loss_out = exec.outputIndex("loss"), norm_out = exec.outputIndex("grad_norm");
  DS_CHECK(loss_out >= 0, "the plan has no 'loss' output");
  std::ofstream metrics;
  if (!o.metrics_path.empty()) {
    // A resumed run continues the file of the run it resumes.
    metrics.open(o.metrics_path, o.start_step > 0 ? std::ios::app : std::ios::trunc);
    DS_CHECK(metrics.good(), o.metrics_path, ": cannot write metrics file");
  }
  // Sample k of the data stream: pure functions of k, so resumed runs continue exactly.
  auto samples = [&](const std::string& name, int64_t first, int64_t count) {
    return o.synthetic ? o.synthetic->batch(name, first, count)
                       : slice(o.datasets.at(name), first, count);
  };
  const int64_t accumulation = config.value("gradient_accumulation_steps", int64_t{1});
  const int64_t world = std::max(1, plan.plan.world_size()), rank = exec.rank();
  Communicator* comm = exec.communicator();
  DS_CHECK(world == 1 || comm, "a plan with ", world, " ranks trains with a communicator");
  const std::vector<std::string> feeds = exec.feedNames();
  const bool loss_scaling = std::find(feeds.begin(), feeds.end(), kLossScaleFeed) != feeds.end();
  LossScaler scaler(lossScalerOptions(config));
  if (!o.loss_scaler.is_null()) scaler.restore(LossScaler::stateFromJson(o.loss_scaler));
  int64_t skipped = o.skipped_steps;
  // Gradient accumulation: micro-step g of step s on rank r takes the contiguous
  // slice of the step's global batch that starts at sample (g x world + r) x
  // micro-batch; the optimizer-step part of the plan runs after the last one.
  const int64_t micro = exec.feedType(o.images ? image_feed : data_feeds.at(0)).shape[0];
  const int64_t batch = micro * accumulation;
  using MicroBatch = std::vector<std::pair<std::string, Tensor>>;
  auto microBatch = [&](int64_t step, int64_t g) {
    const int64_t first = (step - 1) * batch * world + (g * world + rank) * micro;
    MicroBatch micro_batch;
    if (o.images) {
      Tensor images, labels;
      o.images->batch(first, exec.feedType(image_feed), &images, &labels);
      micro_batch.emplace_back(image_feed, std::move(images));
      micro_batch.emplace_back(label_feed, std::move(labels));
    }
    for (const std::string& name : data_feeds)
      micro_batch.emplace_back(name, samples(name, first, micro));
    return micro_batch;
  };
  std::optional<MicroBatch> prefetched;
  const std::vector<StepPart> parts = stepParts(plan, static_cast<int>(rank));
  std::vector<StepMetrics> out;
  for (int64_t step = o.start_step + 1; step <= o.steps; ++step) {
    auto start = std::chrono::steady_clock::now();
    // The schedule and Adam's bias correction count applied steps only.
    const int64_t applied = step - skipped;
    double lr = learningRate(config, applied);
    exec.setFeed(kLrFeed, Tensor::fromDoubles(DType::F32, {}, {lr}));
    exec.setFeed(kStepFeed, Tensor::fromInts(DType::I64, {}, {applied}));
    if (auto momentum = scheduledMomentum(config, applied))
      exec.setFeed(kMomentumFeed, Tensor::fromDoubles(DType::F32, {}, {*momentum}));
    const double loss_scale = scaler.scale();
    if (loss_scaling)
      exec.setFeed(kLossScaleFeed, Tensor::fromDoubles(DType::F32, {}, {loss_scale}));
    double loss_sum = 0;
    std::vector<PartTimes> micro_step_times;
    for (int64_t g = 0; g < accumulation; ++g) {
      MicroBatch micro_batch = prefetched ? std::move(*prefetched) : microBatch(step, g);
      prefetched.reset();
      for (const auto& [name, value] : micro_batch) exec.setFeed(name, value);
      const bool optimizer_step = g + 1 == accumulation;
      exec.run(optimizer_step);
      // The next micro-batch is made while the device (if any) runs this one.
      if (g + 1 < accumulation)
        prefetched = microBatch(step, g + 1);
      else if (step < o.steps)
        prefetched = microBatch(step + 1, 0);
      loss_sum += exec.output(static_cast<size_t>(loss_out)).getDouble(0);
      if (std::vector<double> seconds = exec.lastRunSeconds(); !seconds.empty())
        micro_step_times.push_back(partTimes(parts, seconds));
      if (o.after_micro_step) o.after_micro_step(optimizer_step);
    }
    // The global batch's loss: the mean over every rank's micro-batches.
    if (world > 1) comm->allReduce(&loss_sum, &loss_sum, 1, DType::F64, {"loss metric", ""});
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    StepMetrics m;
    m.step = step;
    m.loss = loss_sum / static_cast<double>(accumulation * world);
    m.lr = lr;
    m.grad_norm = norm_out >= 0 ? exec.output(static_cast<size_t>(norm_out)).getDouble(0) : 0.0;
    m.seconds = seconds;
    m.samples_per_s = static_cast<double>(batch * world) / seconds;
    if (loss_scaling) {
      // Every rank sees the same global norm, so every rank skips or none does.
      m.loss_scale = loss_scale;
      m.skipped = scaler.dynamic() && !std::isfinite(m.grad_norm);
      scaler.update(m.skipped);
      skipped += m.skipped ? 1 : 0;
      m.loss_scaler = scaler.toJson();
    }
    m.skipped_steps = skipped;
    m.micro_step_times = std::move(micro_step_times);
    if (metrics.is_open())
      metrics << nlohmann::json{{"step", m.step},
                                {"loss", m.loss},
                                {"lr", m.lr},
                                {"grad_norm", m.grad_norm},
                                {"loss_scale", m.loss_scale},
                                {"skipped", m.skipped},
                                {"samples_per_s", m.samples_per_s}}
                     .dump()
              << "\n";
    out.push_back(m);
    if (o.after_step) o.after_step(m);
  }
  return out;
}

}  // namespace ds
