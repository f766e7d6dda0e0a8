#!/usr/bin/env bash
# The main job: set up, build, generate the reference workload's ResNet-101
# (ImageNet stem, 10 classes, 32x32 CIFAR-10 images), compile its training plan for
# ZeRO-3 on 8 GPUs with the reference DeepSpeed config (fp16, AdamW, WarmupLR,
# optimizer offload) and print the summary (per-rank memory, communication,
# predicted step time); then train it 30 steps on the CPU with the same recipe on
# 2 ranks (ZeRO-3, fp16, offload) on CIFAR-10-format data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
mkdir -p out
./build/dsmodel resnet101 --classes 10 --image 32 -o out/resnet101.onnx
./build/dscompile out/resnet101.onnx --zero 3 --gpus 8 --loss cross_entropy \
  --config configs/ds_config_resnet101_zero3.json --dump summary

# Training on the CPU: 2 ranks, ZeRO-3, fp16, optimizer offload, on CIFAR-10-format
# data: $CIFAR10_DIR if set (the binary batches from the CIFAR-10 site), else a small
# learnable set in that format. Then a sharded checkpoint and the trained model as
# ONNX (consolidated from the shards).
data=${CIFAR10_DIR:-out/cifar_like}
[ -n "${CIFAR10_DIR:-}" ] || .venv/bin/python scripts/make_cifar_like.py "$data"
./build/dscompile out/resnet101.onnx --config configs/ds_config_cpu_demo.json --gpus 2 \
  --loss cross_entropy -o out/resnet101_train.plan
rm -rf out/checkpoint  # a previous demo's: this run starts over
./build/dsrun out/resnet101_train.plan --data "cifar10:$data" --steps 30 \
  --metrics out/metrics.jsonl --save out/checkpoint --export-onnx out/resnet101_trained.onnx
.venv/bin/python - <<'PY'
import json
steps = [json.loads(line) for line in open("out/metrics.jsonl")]
losses = [s["loss"] for s in steps]
print("loss per step:", " ".join(f"{x:.3f}" for x in losses))
skipped = [s["step"] for s in steps if s["skipped"]]
print(f"fp16 loss scale {steps[0]['loss_scale']:g} -> {steps[-1]['loss_scale']:g}; "
      f"steps skipped on gradient overflow: {skipped or 'none'}")
print(f"mean loss of the first 5 steps {sum(losses[:5]) / 5:.3f}, of the last 5 {sum(losses[-5:]) / 5:.3f}")
PY
