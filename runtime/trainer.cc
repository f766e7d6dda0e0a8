#include "runtime/trainer.h"

#include <chrono>
#include <cstring>
#include <fstream>

#include "ir/error.h"
#include "passes/add_optimizer.h"
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

}  // namespace

bool isTrainingPlan(const PlanFile& plan) {
  for (int idx : plan.plan.feeds())
    if (plan.plan.tensors(idx).name() == kLrFeed) return true;
  return false;
}

std::vector<StepMetrics> train(Executor& exec, const PlanFile& plan, const TrainOptions& o) {
  nlohmann::json config =
      nlohmann::json::parse(plan.plan.config_json().empty() ? "{}" : plan.plan.config_json());
  std::vector<std::string> data_feeds;
  std::string image_feed, label_feed;
  for (const std::string& name : exec.feedNames()) {
    if (name == kLrFeed || name == kStepFeed) continue;
    if (o.cifar) {
      (exec.feedType(name).dtype == DType::I64 ? label_feed : image_feed) = name;
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
    data_feeds.push_back(name);
  }
  for (const auto& [name, d] : o.datasets)
    DS_CHECK(std::find(data_feeds.begin(), data_feeds.end(), name) != data_feeds.end(), "--feed ",
             name, ": the plan has no such input");
  if (o.cifar) {
    DS_CHECK(!image_feed.empty() && !label_feed.empty() && o.datasets.empty(),
             "--data cifar10: the plan must have one image input and one label input");
    TensorType want = exec.feedType(image_feed);
    DS_CHECK(want.dtype == DType::F32 && want.rank() == 4 && want.shape[1] == 3 &&
                 want.shape[2] == 32 && want.shape[3] == 32,
             "--data cifar10: input '", image_feed, "' must be f32[batch,3,32,32], is ",
             want.toString());
  }
  int loss_out = exec.outputIndex("loss"), norm_out = exec.outputIndex("grad_norm");
  DS_CHECK(loss_out >= 0, "the plan has no 'loss' output");
  std::ofstream metrics;
  if (!o.metrics_path.empty()) {
    metrics.open(o.metrics_path);
    DS_CHECK(metrics.good(), o.metrics_path, ": cannot write metrics file");
  }
  std::vector<StepMetrics> out;
  for (int64_t step = 1; step <= o.steps; ++step) {
    auto start = std::chrono::steady_clock::now();
    int64_t batch = 0;
    if (o.cifar) {
      batch = exec.feedType(image_feed).shape[0];
      Tensor images, labels;
      o.cifar->batch((step - 1) * batch, batch, &images, &labels);
      exec.setFeed(image_feed, images);
      exec.setFeed(label_feed, labels);
    }
    for (const std::string& name : data_feeds) {
      batch = exec.feedType(name).shape[0];
      exec.setFeed(name, slice(o.datasets.at(name), (step - 1) * batch, batch));
    }
    double lr = learningRate(config, step);
    exec.setFeed(kLrFeed, Tensor::fromDoubles(DType::F32, {}, {lr}));
    exec.setFeed(kStepFeed, Tensor::fromInts(DType::I64, {}, {step}));
    exec.run();
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    StepMetrics m{step, exec.output(static_cast<size_t>(loss_out)).getDouble(0), lr,
                  norm_out >= 0 ? exec.output(static_cast<size_t>(norm_out)).getDouble(0) : 0.0,
                  static_cast<double>(batch) / seconds};
    if (metrics.is_open())
      metrics << nlohmann::json{{"step", m.step},
                                {"loss", m.loss},
                                {"lr", m.lr},
                                {"grad_norm", m.grad_norm},
                                {"loss_scale", 1.0},
                                {"skipped", false},
                                {"samples_per_s", m.samples_per_s}}
                     .dump()
              << "\n";
    out.push_back(m);
  }
  return out;
}

}  // namespace ds
