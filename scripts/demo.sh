#!/usr/bin/env bash
# The main job: set up, build, generate the reference workload's ResNet-101
# (ImageNet stem, 10 classes, 32x32 CIFAR-10 images), compile it for ZeRO-3 on
# 8 GPUs with the reference DeepSpeed config and print the plan summary; then
# train it a few steps on the CPU (one rank, fp32, synthetic CIFAR-shaped data).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
mkdir -p out
./build/dsmodel resnet101 --classes 10 --image 32 -o out/resnet101.onnx
./build/dscompile out/resnet101.onnx --zero 3 --gpus 8 \
  --config configs/ds_config_resnet101_zero3.json --dump summary

# Training on the CPU: one rank in fp32 with the reference optimizer and schedule.
.venv/bin/python - <<'PY'
import numpy as np
rng = np.random.default_rng(0)
np.save("out/images.npy", rng.uniform(-1, 1, (64, 3, 32, 32)).astype(np.float32))
np.save("out/labels.npy", rng.integers(0, 10, 64).astype(np.int64))
PY
./build/dscompile out/resnet101.onnx --config configs/ds_config_cpu_demo.json \
  --loss cross_entropy -o out/resnet101_train.plan
./build/dsrun out/resnet101_train.plan --feed input=out/images.npy --feed label=out/labels.npy \
  --steps 3 --metrics out/metrics.jsonl
cat out/metrics.jsonl
