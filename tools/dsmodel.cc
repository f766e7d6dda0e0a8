// dsmodel: writes ONNX training models (MLP, torchvision ResNets, GPT-2) with
// deterministic PyTorch-style initial weights, so benchmarks need no Python.
//
//   dsmodel mlp [--in 784 --hidden 256,256 --classes 10] -o mlp.onnx
//   dsmodel resnet50 [--stem imagenet|cifar --classes 10 --image 32] -o r50.onnx
//   dsmodel gpt [--preset small|xl] [--layers .. --d-model .. --heads .. ] -o gpt.onnx
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>

#include "ir/error.h"
#include "models/models.h"

namespace {

// Options every subcommand takes.
struct CommonOptions {
  std::string output;
  uint64_t seed = 0;
  uint64_t external_threshold = ds::kDefaultExternalDataThreshold;
};

void addCommonOptions(CLI::App* command, CommonOptions& common) {
  command->add_option("-o,--output", common.output, "ONNX file to write")->required();
  command->add_option("--seed", common.seed, "seed of the initial weights")->capture_default_str();
  command
      ->add_option("--external-data-threshold", common.external_threshold,
                   "initializer bytes above which all weights go to <output>.data")
      ->capture_default_str();
}

// Fails early, before minutes of weight generation, when the output cannot be created.
void checkWritable(const std::string& path) {
  const bool existed = std::filesystem::exists(path);
  std::ofstream probe(path, std::ios::binary | std::ios::app);
  DS_CHECK(probe.good(), "cannot write '", path,
           "': ", errno != 0 ? std::strerror(errno) : "I/O error");
  probe.close();
  if (!existed) std::filesystem::remove(path);
}

CLI::App* addMlpCommand(CLI::App& app, ds::MlpOptions& mlp, std::string& chosen) {
  CLI::App* command = app.add_subcommand("mlp", "Gemm/ReLU multi-layer perceptron");
  command->add_option("--in", mlp.in, "input features")->capture_default_str();
  command->add_option("--hidden", mlp.hidden, "hidden widths, comma-separated")
      ->delimiter(',')
      ->capture_default_str();
  command->add_option("--classes", mlp.classes, "output classes")->capture_default_str();
  command->callback([&chosen] { chosen = "mlp"; });
  return command;
}

void addResNetCommands(CLI::App& app, ds::ResNetOptions& resnet, std::string& chosen,
                       std::vector<CLI::App*>& commands) {
  for (int depth : {18, 34, 50, 101, 152}) {
    const std::string name = "resnet" + std::to_string(depth);
    CLI::App* command = app.add_subcommand(name, "torchvision " + name + " (training-mode BN)");
    auto* stem = command->add_option_function<std::string>(
        "--stem",
        [&resnet](const std::string& value) {
          resnet.stem = value == "cifar" ? ds::ResNetStem::kCifar : ds::ResNetStem::kImageNet;
        },
        "imagenet: 7x7/2 conv + 3x3/2 max pool; cifar: 3x3/1 conv, no pool");
    stem->check(CLI::IsMember({"imagenet", "cifar"}))->default_str("imagenet");
    command->add_option("--classes", resnet.classes, "output classes")->capture_default_str();
    command->add_option("--image", resnet.image, "input height = width")->capture_default_str();
    command->callback([&resnet, &chosen, depth, name] {
      resnet.depth = depth;
      chosen = name;
    });
    commands.push_back(command);
  }
}

CLI::App* addGptCommand(CLI::App& app, ds::GptOptions& gpt, std::string& preset,
                        std::string& chosen) {
  CLI::App* command = app.add_subcommand("gpt", "GPT-2 decoder, lm_head tied to wte");
  command->add_option("--preset", preset, "small (124M) or xl (1.5B); explicit flags override")
      ->check(CLI::IsMember({"small", "xl"}));
  auto* layers = command->add_option("--layers", gpt.layers, "transformer blocks");
  auto* d_model = command->add_option("--d-model", gpt.d_model, "embedding width");
  auto* heads = command->add_option("--heads", gpt.heads, "attention heads");
  auto* vocab = command->add_option("--vocab", gpt.vocab, "vocabulary size");
  auto* seq = command->add_option("--seq", gpt.seq, "sequence length (fixed)");
  for (auto* option : {layers, d_model, heads, vocab, seq}) option->capture_default_str();
  command->callback([=, &gpt, &preset, &chosen] {
    if (!preset.empty()) {  // preset values for every size flag not given explicitly
      const ds::GptOptions base = ds::gptPreset(preset);
      if (layers->count() == 0) gpt.layers = base.layers;
      if (d_model->count() == 0) gpt.d_model = base.d_model;
      if (heads->count() == 0) gpt.heads = base.heads;
      if (vocab->count() == 0) gpt.vocab = base.vocab;
      if (seq->count() == 0) gpt.seq = base.seq;
    }
    chosen = "gpt";
  });
  return command;
}

int run(int argc, char** argv) {
  CLI::App app{"dsmodel: write ONNX training models with deterministic initial weights"};
  app.require_subcommand(1);
  CommonOptions common;
  ds::MlpOptions mlp;
  ds::ResNetOptions resnet;
  ds::GptOptions gpt;
  std::string preset, chosen;
  std::vector<CLI::App*> commands;
  commands.push_back(addMlpCommand(app, mlp, chosen));
  addResNetCommands(app, resnet, chosen, commands);
  commands.push_back(addGptCommand(app, gpt, preset, chosen));
  for (CLI::App* command : commands) addCommonOptions(command, common);
  const auto named = [&](CLI::App* command) { return command->get_name() == argv[1]; };
  if (argc > 1 && argv[1][0] != '-' && std::none_of(commands.begin(), commands.end(), named)) {
    std::cerr << "dsmodel: error: unknown model '" << argv[1]
              << "' (expected mlp, resnet18, resnet34, resnet50, resnet101, resnet152 or gpt)\n";
    return ds::kUserErrorExitCode;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "dsmodel: error: " << e.what() << " (see dsmodel --help)\n";
    return ds::kUserErrorExitCode;
  }
  checkWritable(common.output);
  const auto start = std::chrono::steady_clock::now();
  onnx::ModelProto model;
  if (chosen == "mlp") {
    mlp.seed = common.seed;
    model = ds::buildMlp(mlp);
  } else if (chosen == "gpt") {
    gpt.seed = common.seed;
    model = ds::buildGpt(gpt);
  } else {
    resnet.seed = common.seed;
    model = ds::buildResNet(resnet);
  }
  ds::saveModel(model, common.output, common.external_threshold);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("dsmodel: wrote %s (%lld parameters) to %s in %.1f s\n", chosen.c_str(),
              static_cast<long long>(ds::countParameters(model)), common.output.c_str(), seconds);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "dsmodel: error: " << e.what() << "\n";
    return ds::kUserErrorExitCode;
  }
}
