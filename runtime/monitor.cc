#include "runtime/monitor.h"

#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <system_error>
#include <utility>

#include "ir/error.h"
#include "runtime/loss_scaler.h"
#include "runtime/lr_schedule.h"
#include "runtime/tensorboard_writer.h"

namespace ds {

std::string pythonRepr(double v) {
  char buffer[64];
  const double magnitude = std::fabs(v);
  const bool fixed = std::isfinite(v) && (v == 0 || (magnitude >= 1e-4 && magnitude < 1e16));
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, v,
                                 fixed ? std::chars_format::fixed : std::chars_format::scientific);
  std::string text(buffer, end);
  if (fixed && text.find('.') == std::string::npos) text += ".0";
  return text;
}

namespace {

// The event's file name: DeepSpeed's sanitising of '/' and ' '.
std::string fileName(const std::string& event) {
  std::string name = event;
  for (char& c : name)
    if (c == '/' || c == ' ') c = '_';
  return name + ".csv";
}

// The header's column: the last part of the event's name.
std::string column(const std::string& event) {
  const size_t slash = event.rfind('/');
  return slash == std::string::npos ? event : event.substr(slash + 1);
}

}  // namespace

std::vector<MonitorEvent> stepEvents(const StepMetrics& m, const nlohmann::json& config) {
  const int64_t batch = config.value("train_batch_size", int64_t{0});
  // Step s + 1 runs at schedule step s + 1 − skipped: a skipped step leaves it.
  const double next_lr = learningRate(config, m.step + 1 - m.skipped_steps);
  std::vector<MonitorEvent> events = {{"Train/Samples/train_loss", m.loss, (m.step - 1) * batch},
                                      {"Train/Samples/lr", next_lr, m.step * batch}};
  if (!m.loss_scaler.is_null())
    events.push_back({"Train/Samples/loss_scale", LossScaler::stateFromJson(m.loss_scaler).scale,
                      m.step * batch});
  if (timesSteps(config) && !m.micro_step_times.empty()) {
    for (const NamedPart& part : namedParts(sumOf(m.micro_step_times)))
      events.push_back({std::string("Train/Samples/elapsed_time_ms_") + part.event,
                        1e3 * part.seconds, m.step * batch});
  }
  return events;
}

namespace {

// DeepSpeed's csv_monitor: one CSV file per event.
class CsvMonitor : public MonitorWriter {
 public:
  explicit CsvMonitor(std::filesystem::path directory) : directory_(std::move(directory)) {}

  void write(const std::vector<MonitorEvent>& events) override {
    for (const MonitorEvent& e : events) {
      const std::filesystem::path path = directory_ / fileName(e.name);
      std::error_code error;
      const bool fresh =
          !std::filesystem::exists(path) || std::filesystem::file_size(path, error) == 0;
      std::ofstream out(path, std::ios::app);
      if (fresh) out << "step," << column(e.name) << "\n";
      out << e.samples << "," << pythonRepr(e.value) << "\n";
      out.flush();
      DS_CHECK(out.good(), "csv_monitor: cannot write ", path.string());
    }
  }

 private:
  std::filesystem::path directory_;
};

// DeepSpeed's tensorboard monitor: each event a scalar at step = its samples.
class TensorBoardMonitor : public MonitorWriter {
 public:
  explicit TensorBoardMonitor(const std::filesystem::path& directory)
      : writer_(directory.string()) {}

  void write(const std::vector<MonitorEvent>& events) override {
    for (const MonitorEvent& e : events)
      writer_.addScalar(e.name, static_cast<float>(e.value), e.samples);
  }

 private:
  TensorBoardWriter writer_;
};

// The directory of the monitor `section` configures, created; nullopt when the
// section is absent or not enabled.
std::optional<std::filesystem::path> monitorDirectory(const nlohmann::json& config,
                                                      const std::string& section) {
  auto it = config.find(section);
  if (it == config.end() || !it->is_object() || !it->value("enabled", false)) return std::nullopt;
  const std::filesystem::path directory =
      std::filesystem::path(it->value("output_path", std::string())) /
      it->value("job_name", std::string("DeepSpeedJobName"));
  std::error_code error;
  std::filesystem::create_directories(directory, error);
  DS_CHECK(!error, section, ": cannot create ", directory.string(), ": ", error.message());
  return directory;
}

}  // namespace

std::vector<std::unique_ptr<MonitorWriter>> monitorsFromConfig(const nlohmann::json& config) {
  std::vector<std::unique_ptr<MonitorWriter>> monitors;
  if (auto dir = monitorDirectory(config, "csv_monitor"))
    monitors.push_back(std::make_unique<CsvMonitor>(*dir));
  if (auto dir = monitorDirectory(config, "tensorboard"))
    monitors.push_back(std::make_unique<TensorBoardMonitor>(*dir));
  return monitors;
}

}  // namespace ds
