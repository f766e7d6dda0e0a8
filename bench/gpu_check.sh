#!/usr/bin/env bash
# The CUDA backend's check on a lent GPU machine, run from the repository root
# after scripts/gpu_pack.sh filled .gpu/ here (the device tool carries it):
#   1. unpacks .gpu/payload.tar.xz; libraries: the packed ones, then cuDNN, cuBLAS,
#      NCCL (and the CUDA runtime) of PyTorch's pip packages in /opt/torch/.venv;
#   2. nvidia-smi;
#   3. ds_tests --gtest_filter='Cuda*' (and dsrun's multi-rank CUDA test) in one
#      process, then each failed test again in a process of its own: every op in f32 and 16 bits, the collectives of both
#      device transports, MLP, ResNet-18 and a tiny GPT forward and training, ZeRO
#      stages on 4 ranks sharing the GPU and on 1 over NCCL, fp16/bf16, offload,
#      CUDA graphs and peak memory, against the CPU backend (computed on this machine);
#   4. training-step timing of ResNet-18 and ResNet-101 (32×32, batch 128, SGD) on
#      the CPU and CUDA backends with synthetic data.
# Logs go to $OUT (the device tool's output folder; /tmp/gpu_check_out otherwise).
# Exit status: that of the tests.
# Environment (device time is scarce; these bound the run): GPU_CHECK_TESTS_S (420 s for
# the one-process run), GPU_CHECK_RERUN_S (600 s for all reruns of failed tests together),
# GPU_CHECK_TIMING (1; 0 skips section 4, which bench/gpu_bench.sh covers),
# GPU_CHECK_FILTER (the tests: every GPU test; bench/gpu_session.sh runs the memory
# test apart, when nothing else is on the GPU).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
log() { echo "gpu_check: $*" | tee -a "$OUT/summary.txt"; }

# Unpacks the payload and finds the pip NVIDIA libraries (bench/gpu_env.sh).
source bench/gpu_env.sh
gpu_env_unpack || exit 2
export LD_LIBRARY_PATH=$ds_ld_library_path
# Tests that run dsrun, dscompile and dsmodel find them here (tests/test_util.h).
export DS_BINARY_DIR=$bin
# Belt and braces: f32 must not run on TF32 tensor cores (the kernels ask for FMA math).
export NVIDIA_TF32_OVERRIDE=0
log "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
ldd "$bin/ds_tests" > "$OUT/ldd_ds_tests.txt" 2>&1
ldd "$bin/ds_tests" | grep "not found" | tee -a "$OUT/summary.txt"
# cuDNN loads its engine libraries lazily; list what this machine has.
ls ${pip_libs//:/ } 2>/dev/null | grep -E "cudnn|cublas|cudart|nvrtc" | sort -u > "$OUT/pip_cuda_libs.txt"

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
head -15 "$OUT/nvidia-smi.txt"

# ---- 3. tests: all in one process first (hundreds of processes would each pay for
# a CUDA context), then every test that failed again in a process of its own, since
# a device fault is sticky and fails every later test of its process ----
start=$(date +%s)
tests_rc=0
filter=${GPU_CHECK_FILTER:-Cuda*:Nccl*:CommDsrun.SeveralRanksOnTheCudaBackend}
"$bin/ds_tests" --gtest_list_tests --gtest_filter="$filter" |
  awk '/^[^ ]/ {suite = $1} /^  / {print suite $1}' > "$OUT/test_names.txt"
if [[ ! -s "$OUT/test_names.txt" ]]; then
  log "ds_tests lists no Cuda* tests (does it start? see ldd_ds_tests.txt)"
  "$bin/ds_tests" --gtest_list_tests > "$OUT/tests.log" 2>&1
  tests_rc=2
fi
timeout -k 5 "${GPU_CHECK_TESTS_S:-420}" "$bin/ds_tests" --gtest_filter="$filter" --gtest_color=no \
  > "$OUT/tests.log" 2>&1 < /dev/null
all_rc=$?
# Failed tests, and when the process died, every test it never finished.
{
  sed -n 's/^\[  FAILED  \] \([^ ,]*\).*(.*/\1/p' "$OUT/tests.log"
  if ((all_rc != 0 && all_rc != 1)); then
    grep -oE '^\[ +(OK|SKIPPED|FAILED) +\] [^ ,]+' "$OUT/tests.log" | awk '{print $NF}' | sort -u > "$work/done.txt"
    grep -vxF -f "$work/done.txt" "$OUT/test_names.txt"
  fi
} | sort -u > "$OUT/rerun.txt"
log "ds_tests $filter in one process: exit $all_rc in $(($(date +%s) - start)) s;" \
  "$(grep -c '^\[       OK \]' "$OUT/tests.log") passed," \
  "$(grep -c '^\[  SKIPPED \] .*(' "$OUT/tests.log") skipped; rerunning $(wc -l < "$OUT/rerun.txt") alone"
# A GPU test skips only where no GPU is usable: here that is a failure, not a pass.
no_gpu_pattern='no GPU:\|no GPU visible\|no usable GPU\|needs NCCL and a GPU'
no_gpu=$(grep -c "$no_gpu_pattern" "$OUT/tests.log")
if ((no_gpu > 0)); then
  tests_rc=2
  log "$no_gpu tests skipped for want of a usable GPU: $(grep -m1 "$no_gpu_pattern" "$OUT/tests.log")"
fi
grep '^\[  SKIPPED \] .*(' "$OUT/tests.log" | sed 's/^/skipped: /' | head -20 >> "$OUT/summary.txt"
rerun_end=$(($(date +%s) + ${GPU_CHECK_RERUN_S:-600}))
while read -r name; do
  [[ -z $name ]] && continue
  left=$((rerun_end - $(date +%s)))
  if ((left < 5)); then
    tests_rc=1
    log "NOT RUN alone: $name (failed or unfinished in the shared process; GPU_CHECK_RERUN_S spent)"
    continue
  fi
  ((left > 60)) && left=60  # one test alone: a hang must not eat the others' time
  # stdin from /dev/null: the loop reads the names from it.
  timeout -k 5 "$left" "$bin/ds_tests" --gtest_filter="$name" --gtest_color=no \
    >> "$OUT/rerun.log" 2>&1 < /dev/null
  rc=$?
  if ((rc != 0)); then
    tests_rc=1
    log "FAILED $name (exit $rc, alone)"
  else
    log "passed alone: $name (failed in the shared process: a fault of an earlier test?)"
  fi
done < "$OUT/rerun.txt"
cat "$OUT/tests.log" "$OUT/rerun.log" 2> /dev/null | grep -B3 -A12 "Failure\|exception" |
  head -200 > "$OUT/failures.txt"

# ---- 4. timing ----
if [[ ${GPU_CHECK_TIMING:-1} == 0 ]]; then
  rm -rf "$work"
  exit $tests_rc
fi
plans=$work/plans
mkdir -p "$plans"
cat > "$plans/config.json" << 'JSON'
{"train_micro_batch_size_per_gpu": 128,
 "optimizer": {"type": "SGD", "params": {"lr": 0.01, "momentum": 0.9}}}
JSON
for depth in 18 101; do  # CPU timing: ResNet-18 only (bench/gpu_bench.sh times the rest)
  model=resnet$depth
  "$bin/dsmodel" "$model" --image 32 --classes 10 -o "$plans/$model.onnx" > /dev/null &&
    "$bin/dscompile" "$plans/$model.onnx" --config "$plans/config.json" --loss cross_entropy \
      -o "$plans/$model.plan" > "$OUT/compile_$model.log" 2>&1 ||
    { log "$model: compile failed (see compile_$model.log)"; continue; }
  for backend in cuda cpu; do
    [[ $backend == cpu && $depth != 18 ]] && continue
    steps=10
    [[ $backend == cpu ]] && steps=2
    timeout 240 "$bin/dsrun" "$plans/$model.plan" --backend "$backend" --data synthetic \
      --steps "$steps" --metrics "$OUT/metrics_${model}_$backend.jsonl" \
      > "$OUT/dsrun_${model}_$backend.log" 2>&1
    rc=$?
    log "$model batch 128 $backend: exit $rc; $(tail -1 "$OUT/dsrun_${model}_$backend.log")"
    # Steady state: samples/s of the last step (the first pays for warm-up).
    [[ -s "$OUT/metrics_${model}_$backend.jsonl" ]] &&
      log "  last step: $(tail -1 "$OUT/metrics_${model}_$backend.jsonl")"
  done
done
rm -rf "$work"
exit $tests_rc
