#!/usr/bin/env bash
# CPU forward time of dsrun next to ONNX Runtime and PyTorch on the same models and
# thread count: ResNet-50 (batch 8, 224x224, 1000 classes) and a GPT-2-small-sized
# GPT (12 layers, d_model 768, 12 heads, vocab 50257, seq 128, batch 1).
#
# dsrun and ORT run the same ONNX file (dsmodel's, training-mode BatchNormalization);
# PyTorch runs torchvision's resnet50 / models/export_torch.py's GPT in train() mode
# under no_grad, so all three normalise by batch statistics. What "cold" and
# "steady" mean for each runtime is printed under the table (bench/cpu_forward.py).
#
# Usage: bench/cpu_forward.sh [runs]     (default 3, ~5 min on 2 cores)
#   env: BUILD_DIR (default build), THREADS (default nproc), VENV_PYTHON, TORCH_PYTHON
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
build=${BUILD_DIR:-build}
threads=${THREADS:-$(nproc)}
# Interpreters with ONNX Runtime (+ numpy) and with PyTorch; overridable for machines
# where one python has both (the GPU machine: VENV_PYTHON=TORCH_PYTHON=python3).
venv_python=${VENV_PYTHON:-.venv/bin/python}
torch_python=${TORCH_PYTHON:-/usr/bin/python3}
[ -x "$build/dsrun" ] || bash scripts/build.sh
command -v "$venv_python" >/dev/null || { echo "missing $venv_python: run scripts/setup.sh" >&2; exit 2; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
helper="$venv_python bench/cpu_forward.py"

echo "machine: $threads cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
  "$(free -g | awk '/Mem:/ {print $2}') GiB"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ); build: $build ($(grep -m1 CMAKE_BUILD_TYPE "$build/CMakeCache.txt" | cut -d= -f2)); threads: $threads; runs: $runs"
echo "load average before: $(cut -d" " -f1-3 /proc/loadavg)"

bench_model() {  # name family batch dsmodel-args...
  local name=$1 family=$2 batch=$3
  shift 3
  local d="$dir/$family"
  mkdir -p "$d/feeds"
  "$build/dsmodel" "$family" "$@" -o "$d/model.onnx" >/dev/null
  "$build/dscompile" "$d/model.onnx" --batch "$batch" -o "$d/model.plan" >/dev/null
  $helper inputs "$family" "$d/feeds"
  $helper dsrun "$name" "$build/dsrun" "$d/model.plan" "$d/feeds" --runs "$runs" \
    --threads "$threads" -o "$dir/$family.dsrun.json"
  $helper ort "$name" "$d/model.onnx" "$d/feeds" --runs "$runs" --threads "$threads" \
    -o "$dir/$family.ort.json"
  if $torch_python -c 'import torch, torchvision' 2>/dev/null; then
    $torch_python bench/cpu_forward.py torch "$name" "$family" --runs "$runs" \
      --threads "$threads" -o "$dir/$family.torch.json"
  else
    echo "$name: PyTorch skipped ($torch_python has no torch + torchvision)" >&2
  fi
  rm -f "$d/model.onnx" "$d/model.plan"
}

bench_model "resnet50 b8 224x224" resnet50 8 --image 224 --classes 1000
bench_model "gpt 12x768 h12 v50257 s128 b1" gpt 1 --layers 12 --d-model 768 --heads 12 \
  --vocab 50257 --seq 128
echo
$helper table "$dir"/resnet50.*.json "$dir"/gpt.*.json
echo "load average after: $(cut -d" " -f1-3 /proc/loadavg) (other work on the machine skews all three alike)"
