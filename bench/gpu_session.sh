#!/usr/bin/env bash
# Issue 7's whole GPU check in one call of the device tool (device time is scarce:
# 15 minutes a session, and no machine starts with under 4 left), from the repository
# root after scripts/gpu_pack.sh filled .gpu/ here; carry [".gpu"]:
#   bash bench/gpu_session.sh [BUDGET_S]     # BUDGET_S: wall time to end within (540)
# One call (BUDGET_S 560, the tool's timeout_s 590) fits the 15 minutes with the
# machine's start. GPU_SESSION_PARTS ("tests bench") splits it over two calls: "tests"
# (with a DeepSpeed prebuild kept in .gpu_state/ds for the next call on the same warm
# machine, which must come within its idle release), then "bench".
# 1. The peak-memory test, first and alone: it measures the whole device
#    (check_memory/). Then
# 2. DeepSpeed's ops build (bench/gpu_ds_prebuild.sh) and the torch.compile peers
#    compile once each (gpu_bench.sh's warmup mode, so that the timed ones find
#    Inductor's caches warm), both in the background at the lowest priority, while
# 3. every other GPU test runs (bench/gpu_check.sh, at most GPU_CHECK_TESTS_S=200 s,
#    failed tests again alone within 45 s); then
# 4. the benchmarks, every peer in the same run (bench/gpu_bench.sh), with what is left.
# Everything lands in $OUT/results.tgz (check/ and bench/: the device tool returns at
# most 8 files), written every 20 s as well as at the end, so a call cut short
# still returns what it did; the summary, failures and results table are printed last.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
budget=${1:-540}
out=${OUT:-/tmp/gpu_session_out}
res=$(mktemp -d /tmp/gpu_session.XXXXXX)
mkdir -p "$out" "$res/check" "$res/check_memory" "$res/bench"
start=$(date +%s)
left() { echo $((budget - ($(date +%s) - start))); }
# tar exits 1 when a log grows while it reads it: the snapshot is still good. Each
# snapshot has its own temporary name, so that two never write one file.
save() {
  local part=$out/.results.$BASHPID.part
  tar -C "$res" --warning=no-file-changed -czf "$part" check check_memory bench 2> /dev/null
  if (($? <= 1)); then mv -f "$part" "$out/results.tgz"; else rm -f "$part"; fi
}
(while sleep 20; do save; done) &
saver=$!
# The device tool stops a call past its limit: what was done still goes back.
trap 'save; exit 124' TERM
cat .gpu/STAMP 2> /dev/null | tee "$res/check/STAMP" || echo "gpu_session: .gpu/STAMP missing"

parts=${GPU_SESSION_PARTS:-tests bench}
ds=$PWD/.gpu_state/ds  # git-ignored and not carried: kept between calls on a warm machine
check_rc=0
if [[ $parts == *tests* ]]; then
  OUT=$res/check_memory GPU_CHECK_TESTS_S=60 GPU_CHECK_RERUN_S=0 GPU_CHECK_TIMING=0 \
    GPU_CHECK_FILTER='CudaMemory.*' bash bench/gpu_check.sh > "$res/check_memory/stdout.txt" 2>&1
  memory_rc=$?
  rm -rf "$ds"
  # In sessions of their own: stopping one stops its compilers too.
  setsid nice -n 19 bash bench/gpu_ds_prebuild.sh "$ds" > "$res/bench/ds_prebuild.log" 2>&1 &
  prebuild=$!
  # One warm-up per workload, side by side: one after another, the last would not
  # finish before the tests do (a ResNet-101 compile takes a minute and a half).
  warmups=()
  if [[ $parts == *bench* ]]; then
    for w in ref r101_224 gpt; do
      mkdir -p "$res/bench/compile_warmup/$w"
      OUT=$res/bench/compile_warmup/$w BENCH_MODE=warmup BENCH_WORKLOADS=$w \
        BENCH_BUDGET_S=$(($(left) - 330)) TORCHINDUCTOR_COMPILE_THREADS=4 \
        setsid nice -n 19 bash bench/gpu_bench.sh > "$res/bench/compile_warmup/$w/stdout.txt" 2>&1 &
      warmups+=($!)
    done
  fi
  OUT=$res/check GPU_CHECK_TESTS_S=${GPU_CHECK_TESTS_S:-200} GPU_CHECK_RERUN_S=${GPU_CHECK_RERUN_S:-45} \
    GPU_CHECK_TIMING=0 GPU_CHECK_FILTER='Cuda*:Nccl*:CommDsrun.SeveralRanksOnTheCudaBackend-CudaMemory.*' \
    bash bench/gpu_check.sh > "$res/check/stdout.txt" 2>&1
  check_rc=$?
  # The prebuild may not take the time the benchmarks need (or, alone, the budget).
  reserve=20
  [[ $parts == *bench* ]] && reserve=330
  while kill -0 "$prebuild" 2> /dev/null && (($(left) > reserve)); do sleep 2; done
  if kill -0 "$prebuild" 2> /dev/null; then
    kill -- -"$prebuild" 2> /dev/null
    # torch's build lock files outlive a killed build, and a peer would wait on them.
    find "$ds/torch_ext" -name lock -delete 2> /dev/null
    echo "gpu_session: DeepSpeed prebuild stopped unfinished (budget)"
  fi
  wait "$prebuild"
  prebuild_rc=$?
  # The timed runs must have the machine alone.
  for pid in "${warmups[@]}"; do
    if kill -0 "$pid" 2> /dev/null; then
      kill -- -"$pid" 2> /dev/null
      echo "gpu_session: a torch.compile warm-up stopped unfinished (its caches keep what it did)"
    fi
    wait "$pid"
  done
  ((check_rc == 0)) && check_rc=$memory_rc
  echo "gpu_session: tests exit $check_rc (memory test $memory_rc); DeepSpeed prebuild exit" \
    "$prebuild_rc at +$(($(date +%s) - start)) s"
  save
fi
if [[ $parts == *bench* ]]; then
  [[ -d $ds ]] || echo "gpu_session: no DeepSpeed prebuilt in $ds; the peer builds its ops itself"
  mkdir -p "$res/bench/logs"
  OUT=$res/bench BENCH_LOG_DIR=$res/bench/logs BENCH_DS_PREBUILT=$([[ -d $ds ]] && echo "$ds") \
    BENCH_BUDGET_S=$(($(left) - 15)) bash bench/gpu_bench.sh > "$res/bench/stdout.txt" 2>&1
  echo "gpu_session: benchmarks exit $? at +$(($(date +%s) - start)) s"
  rm -rf "$ds"
fi
kill "$saver" 2> /dev/null
wait "$saver" 2> /dev/null
save
grep -v LD_LIBRARY_PATH "$res/check/summary.txt" "$res/check_memory/summary.txt" 2> /dev/null
head -c 4000 "$res/check/failures.txt" 2> /dev/null
grep -A3 "plan (arena\|device MiB\|library handles" "$res/check_memory/tests.log" 2> /dev/null | head -20
sed -n '/^| workload/,/^$/p' "$res/bench/bench.md" 2> /dev/null
rm -rf "$res"
exit $check_rc
