// DeepSpeed's csv_monitor and tensorboard monitors (runtime/monitor.h): dsrun writes
// DeepSpeed's events of each optimizer step, at DeepSpeed's sample counts, checked
// against the step metrics dsrun writes (--metrics), a schedule worked out by hand
// and TensorBoard's own reader.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/tensorboard_writer.h"
#include "tests/training_fixtures.h"

namespace ds {
namespace {

// fp16 (a loss scale that grows every 2 steps), WarmupLR over 10 steps to 0.01,
// train batch 8 (4 x 2 accumulation steps), the given csv_monitor (and
// tensorboard) section.
std::string compileMonitored(const std::string& name, const nlohmann::json& csv_monitor,
                             const nlohmann::json& tensorboard = nullptr) {
  nlohmann::json config = {
      {"train_micro_batch_size_per_gpu", 4},
      {"gradient_accumulation_steps", 2},
      {"optimizer", {{"type", "AdamW"}, {"params", {{"lr", 0.01}}}}},
      {"scheduler",
       {{"type", "WarmupLR"},
        {"params",
         {{"warmup_min_lr", 0},
          {"warmup_max_lr", 0.01},
          {"warmup_num_steps", 10},
          {"warmup_type", "linear"}}}}},
      {"fp16", {{"enabled", true}, {"initial_scale_power", 8}, {"loss_scale_window", 2}}},
      {"csv_monitor", csv_monitor}};
  if (!tensorboard.is_null()) config["tensorboard"] = tensorboard;
  const std::string path = test::scratch(name + ".json");
  test::writeFile(path, config.dump());
  return test::compileText(test::mlpText(false), name, "--loss cross_entropy --config " + path);
}

// A CSV file's header and its (samples, value) rows.
struct Csv {
  std::string header;
  std::vector<std::pair<int64_t, double>> rows;
};

Csv readCsv(const std::string& path) {
  Csv csv;
  std::ifstream in(path);
  EXPECT_TRUE(std::getline(in, csv.header)) << path;
  for (std::string line; std::getline(in, line);) {
    const size_t comma = line.find(',');
    EXPECT_NE(comma, std::string::npos) << path << ": " << line;
    csv.rows.emplace_back(std::stoll(line.substr(0, comma)), std::stod(line.substr(comma + 1)));
  }
  return csv;
}

TEST(CsvMonitor, WritesDeepSpeedsEventsAtTheirSampleCounts) {
  const std::string dir = test::freshDir("csv_monitor_events");
  const std::string plan =
      compileMonitored("csv_monitor_events", {{"enabled", true}, {"output_path", dir}});
  test::TrainedRun run = test::trainPlan(plan, "csv_monitor_events", 4, 0.3);
  ASSERT_EQ(run.metrics.size(), 4u);
  for (const nlohmann::json& m : run.metrics) ASSERT_FALSE(m["skipped"].get<bool>());
  const std::string job = dir + "/DeepSpeedJobName/";  // DeepSpeed's default job name

  // The loss at the samples trained before the step.
  Csv loss = readCsv(job + "Train_Samples_train_loss.csv");
  EXPECT_EQ(loss.header, "step,train_loss");
  ASSERT_EQ(loss.rows.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(loss.rows[i].first, static_cast<int64_t>(8 * i));
    EXPECT_EQ(loss.rows[i].second, run.metrics[i]["loss"].get<double>());
  }
  // The lr and loss scale after the step: the next step's.
  Csv lr = readCsv(job + "Train_Samples_lr.csv"),
      scale = readCsv(job + "Train_Samples_loss_scale.csv");
  EXPECT_EQ(lr.header, "step,lr");
  EXPECT_EQ(scale.header, "step,loss_scale");
  ASSERT_EQ(lr.rows.size(), 4u);
  ASSERT_EQ(scale.rows.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(lr.rows[i].first, static_cast<int64_t>(8 * (i + 1)));
    EXPECT_EQ(scale.rows[i].first, static_cast<int64_t>(8 * (i + 1)));
    if (i + 1 < 4) {
      EXPECT_EQ(lr.rows[i].second, run.metrics[i + 1]["lr"].get<double>());
      EXPECT_EQ(scale.rows[i].second, run.metrics[i + 1]["loss_scale"].get<double>());
    }
  }
  // Step 5 would run at WarmupLR iteration 3: 0.01 x 3 / 10. The scale doubled
  // after steps 2 and 4 (loss_scale_window 2): 2^8 x 4.
  EXPECT_NEAR(lr.rows[3].second, 0.003, 1e-12);
  EXPECT_EQ(scale.rows[3].second, 1024.0);
  EXPECT_EQ(scale.rows[0].second, 256.0);
  // Numbers as Python's csv module writes them (repr): 256.0, 0.003.
  EXPECT_EQ(test::readBytes(job + "Train_Samples_loss_scale.csv").substr(0, 24),
            "step,loss_scale\n8,256.0\n");
  const std::string lr_text = test::readBytes(job + "Train_Samples_lr.csv");
  EXPECT_EQ(lr_text.substr(lr_text.rfind("32,")), "32,0.003\n");
}

TEST(TensorBoardMonitor, Crc32cIsTheCastagnoliChecksum) {
  // The standard check value of CRC-32C, and TFRecord's mask of it.
  const std::string digits = "123456789";
  EXPECT_EQ(crc32c(digits.data(), digits.size()), 0xe3069283u);
  const uint32_t crc = 0xe3069283u;
  EXPECT_EQ(maskedCrc32c(digits.data(), digits.size()), ((crc >> 15) | (crc << 17)) + 0xa282ead8u);
  EXPECT_EQ(crc32c("", 0), 0u);
}

// Scalars read back by TensorBoard, a 0 among them (which a plain proto3 float would
// leave out), from two writers of one process in one directory.
TEST(TensorBoardMonitor, WrittenScalarsReadBackIncludingZero) {
  const std::string python = DS_SOURCE_DIR "/.venv/bin/python";
  ASSERT_TRUE(std::filesystem::exists(python)) << python << ": run scripts/setup.sh";
  const std::string dir = test::freshDir("tb_writer");
  std::filesystem::create_directories(dir);
  {
    TensorBoardWriter first(dir), second(dir);
    EXPECT_NE(first.path(), second.path());
    first.addScalar("a", 0.0f, 0);
    first.addScalar("a", -1.5f, 7);
    second.addScalar("b", 3.25f, 2);
  }
  auto r = test::runCommand(python + " " DS_SOURCE_DIR "/tests/tensorboard_read.py " + dir);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(r.output),
            nlohmann::json::parse(R"({"a": [[0, 0.0], [7, -1.5]], "b": [[2, 3.25]]})"));
}

// TensorBoard itself (its EventAccumulator, which checks every record's CRCs) reads
// back the events the CSV monitor writes beside it, as float32 scalars at the same
// sample counts.
TEST(TensorBoardMonitor, TensorBoardReadsTheCsvMonitorsEvents) {
  const std::string python = DS_SOURCE_DIR "/.venv/bin/python";
  ASSERT_TRUE(std::filesystem::exists(python)) << python << ": run scripts/setup.sh";
  const std::string csv_dir = test::freshDir("tb_monitor_csv");
  const std::string tb_dir = test::freshDir("tb_monitor_tb");
  nlohmann::json config = {{"enabled", true}, {"output_path", csv_dir}, {"job_name", "run"}};
  const std::string plan = compileMonitored(
      "tb_monitor", config, {{"enabled", true}, {"output_path", tb_dir}, {"job_name", "run"}});
  test::trainPlan(plan, "tb_monitor", 3, 0.3);
  auto r =
      test::runCommand(python + " " DS_SOURCE_DIR "/tests/tensorboard_read.py " + tb_dir + "/run");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json scalars = nlohmann::json::parse(r.output);
  for (const char* event :
       {"Train/Samples/train_loss", "Train/Samples/lr", "Train/Samples/loss_scale"}) {
    SCOPED_TRACE(event);
    std::string file = event;
    std::replace(file.begin(), file.end(), '/', '_');
    const Csv csv = readCsv(csv_dir + "/run/" + file + ".csv");
    ASSERT_TRUE(scalars.contains(event)) << r.output;
    ASSERT_EQ(scalars[event].size(), csv.rows.size());
    ASSERT_EQ(csv.rows.size(), 3u);
    for (size_t i = 0; i < csv.rows.size(); ++i) {
      EXPECT_EQ(scalars[event][i][0].get<int64_t>(), csv.rows[i].first);
      EXPECT_EQ(scalars[event][i][1].get<double>(), static_cast<float>(csv.rows[i].second));
    }
  }
}

TEST(CsvMonitor, AResumedRunAppendsToTheFilesWithoutASecondHeader) {
  const std::string straight_dir = test::freshDir("csv_monitor_straight");
  const std::string resumed_dir = test::freshDir("csv_monitor_resumed");
  const std::string straight =
      compileMonitored("csv_monitor_straight",
                       {{"enabled", true}, {"output_path", straight_dir}, {"job_name", "j"}});
  const std::string resumed = compileMonitored(
      "csv_monitor_resumed", {{"enabled", true}, {"output_path", resumed_dir}, {"job_name", "j"}});
  test::trainPlan(straight, "csv_monitor_straight", 4, 0.3);
  const std::string checkpoints = test::freshDir("csv_monitor_checkpoints");
  test::trainPlan(resumed, "csv_monitor_first", 2, 0.3, " --save " + checkpoints);
  test::trainPlan(resumed, "csv_monitor_second", 4, 0.3, " --resume " + checkpoints);
  for (const char* file :
       {"Train_Samples_train_loss.csv", "Train_Samples_lr.csv", "Train_Samples_loss_scale.csv"}) {
    SCOPED_TRACE(file);
    const std::string a = test::readBytes(straight_dir + "/j/" + file);
    EXPECT_EQ(std::count(a.begin(), a.end(), '\n'), 5);  // a header and 4 rows
    EXPECT_EQ(test::readBytes(resumed_dir + "/j/" + file), a);
  }
}

// A monitor directory that cannot be made (under a file) is a one-line error naming
// the section, before any step trains.
TEST(CsvMonitor, AnUnwritableOutputPathIsAOneLineError) {
  const std::string file = test::scratch("monitor_not_a_dir");
  test::writeFile(file, "a file");
  for (const char* section : {"csv_monitor", "tensorboard"}) {
    SCOPED_TRACE(section);
    const nlohmann::json monitor = {{"enabled", true}, {"output_path", file}};
    const std::string plan =
        section == std::string("csv_monitor")
            ? compileMonitored("monitor_unwritable_csv", monitor)
            : compileMonitored("monitor_unwritable_tb", {{"enabled", false}}, monitor);
    test::expectOneLineError(
        test::tool("dsrun",
                   plan + test::writeFeedData(plan, "monitor_unwritable", 16, 0.3) + " --steps 1"),
        std::string(section) + ": cannot create " + file + "/DeepSpeedJobName");
  }
}

TEST(CsvMonitor, DisabledWritesNothing) {
  const std::string dir = test::freshDir("csv_monitor_disabled");
  const std::string plan =
      compileMonitored("csv_monitor_disabled", {{"enabled", false}, {"output_path", dir}});
  test::trainPlan(plan, "csv_monitor_disabled", 1, 0.3);
  EXPECT_FALSE(std::filesystem::exists(dir));
}

}  // namespace
}  // namespace ds
