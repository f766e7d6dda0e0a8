#!/usr/bin/env bash
# The main job: set up, build, generate the reference workload's ResNet-101
# (ImageNet stem, 10 classes, 32x32 CIFAR-10 images), compile it for ZeRO-3 on
# 8 GPUs with the reference DeepSpeed config and print the plan summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
mkdir -p out
./build/dsmodel resnet101 --classes 10 --image 32 -o out/resnet101.onnx
./build/dscompile out/resnet101.onnx --zero 3 --gpus 8 \
  --config configs/ds_config_resnet101_zero3.json --dump summary
