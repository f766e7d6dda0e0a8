#include "runtime/monitor.h"

#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <system_error>

#include "ir/error.h"
#include "runtime/loss_scaler.h"
#include "runtime/lr_schedule.h"

namespace ds {
namespace {

// The shortest text that reads back as `v` exactly, as Python's repr writes it (the
// CSV DeepSpeed's monitor writes): fixed notation from 1e-4 to 1e16, with ".0" on
// whole numbers, scientific outside.
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
  return events;
}

std::optional<CsvMonitor> CsvMonitor::fromConfig(const nlohmann::json& config) {
  auto section = config.find("csv_monitor");
  if (section == config.end() || !section->is_object() || !section->value("enabled", false))
    return std::nullopt;
  // DeepSpeed's defaults: the working directory, job "DeepSpeedJobName".
  const std::filesystem::path directory =
      std::filesystem::path(section->value("output_path", std::string())) /
      section->value("job_name", std::string("DeepSpeedJobName"));
  std::error_code error;
  std::filesystem::create_directories(directory, error);
  DS_CHECK(!error, "csv_monitor: cannot create ", directory.string(), ": ", error.message());
  return CsvMonitor(directory.string());
}

void CsvMonitor::write(const std::vector<MonitorEvent>& events) {
  for (const MonitorEvent& e : events) {
    const std::filesystem::path path = std::filesystem::path(directory_) / fileName(e.name);
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

}  // namespace ds
