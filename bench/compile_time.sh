#!/usr/bin/env bash
# Times `dscompile resnet101.onnx --zero 3 --gpus 8 --dump summary` (target: under
# 3 s on the 2-core CI machine) next to `dsmodel`, which writes the same model, as
# a peer measured in the same run. Usage: bench/compile_time.sh [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
[ -x build/dscompile ] || bash scripts/build.sh
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
./build/dsmodel resnet101 --classes 10 -o "$dir/resnet101.onnx" >/dev/null

time_it() {  # prints the best of $runs wall times in seconds
  local best=999
  for _ in $(seq "$runs"); do
    local start end t
    start=$(date +%s.%N)
    "$@" >/dev/null
    end=$(date +%s.%N)
    t=$(echo "$end - $start" | bc)
    best=$(echo "if ($t < $best) $t else $best" | bc)
  done
  printf '%.3f' "$best"
}

compile=$(time_it ./build/dscompile "$dir/resnet101.onnx" --zero 3 --gpus 8 \
  --config configs/ds_config_resnet101_zero3.json --dump summary)
generate=$(time_it ./build/dsmodel resnet101 --classes 10 -o "$dir/peer.onnx")
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "dscompile resnet101 --zero 3 --gpus 8 --dump summary: best of $runs = ${compile} s (target < 3 s)"
echo "peer: dsmodel resnet101 (writes the same 170 MB model): best of $runs = ${generate} s"
echo "ratio dscompile / dsmodel: $(echo "scale=2; $compile / $generate" | bc)"
