#!/usr/bin/env bash
# DeepSpeed for bench/gpu_bench.sh's DeepSpeed peer, on a lent GPU machine: installs the
# wheels scripts/gpu_pack.sh carried in .gpu/wheels into DIR/pysite and JIT-builds
# DeepSpeed's CPU Adam (optimizer offload) and fused Adam ops into DIR/torch_ext, niced.
#   bash bench/gpu_ds_prebuild.sh DIR [PYTHON]
# gpu_bench.sh runs it in the background itself; run it ahead (while the tests run) and
# pass BENCH_DS_PREBUILT=DIR so that no build competes with the timed runs for the CPUs.
# Exit status: 3 when the wheels do not install, 4 when an op does not build.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
dir=${1:?usage: gpu_ds_prebuild.sh DIR [PYTHON]}
py=${2:-python3}
[[ -z ${2:-} && -x /opt/torch/.venv/bin/python3 ]] && py=/opt/torch/.venv/bin/python3
mkdir -p "$dir"
"$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$dir/pysite" \
  .gpu/wheels/*.whl || exit 3
# ninja (torch's JIT builds) lives beside the interpreter. DS_SKIP_CUDA_CHECK: DeepSpeed
# refuses an nvcc whose minor version differs from torch's CUDA, which its table of
# compatible versions does not yet know for CUDA 13.
PATH="$(dirname "$(command -v "$py")"):$PATH"
export PATH PYTHONPATH=$dir/pysite TORCH_EXTENSIONS_DIR=$dir/torch_ext MAX_JOBS=4 \
  TORCH_CUDA_ARCH_LIST=9.0 DS_SKIP_CUDA_CHECK=1
nice -n 19 "$py" bench/gpu_peers.py ds-prebuild CPUAdamBuilder &
cpu_adam=$!
nice -n 19 "$py" bench/gpu_peers.py ds-prebuild FusedAdamBuilder &
fused_adam=$!
rc=0
wait $cpu_adam || rc=4
wait $fused_adam || rc=4
exit $rc
