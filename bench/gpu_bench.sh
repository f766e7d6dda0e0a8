#!/usr/bin/env bash
# Issue 7's GPU benchmarks in one run on a lent GPU machine, from the repository root,
# after scripts/gpu_pack.sh filled .gpu/ here (the device tool carries it: carry [".gpu"]):
#   bash bench/gpu_bench.sh
# Workloads, in this order so that a run cut short still says something:
#   1. ref       the reference workload at world size 1: ResNet-101 (ImageNet stem, 10
#                classes), 32x32, micro-batch 128, fp16 dynamic loss scaling, AdamW, ZeRO-3
#                with optimizer offload (configs/ds_config_resnet101_zero3.json):
#                dsrun | PyTorch eager AMP | DeepSpeed ZeRO-3 (offload; without it too when
#                offload fails or dsrun ran without it) | torch.compile (phase 2)
#   2. r101_224  ResNet-101 224x224, 1000 classes, batch 64, fp16, AdamW:
#                dsrun | eager AMP channels_last | torch.compile channels_last (phase 2)
#   3. gpt       GPT-2-small size (12 x 768, 12 heads, vocab 50257, seq 1024), batch 8, bf16,
#                AdamW: dsrun | eager bf16 autocast | torch.compile (phase 2); tokens/s, MFU
# dsrun: dsmodel + dscompile here, then `dsrun --backend cuda` with one batch fed from
# host memory (`--feed`, the row `dsrun`), again with `--channels-last` (NHWC
# activations, `dsrun-channels-last`), and with BENCH_SYNTHETIC=1 with `--data
# synthetic` (`dsrun-synthetic`, which also generates every sample on the host each
# step); GPT: --data synthetic only.
# When a plan fails on CUDA (the backend's first slice rejects 16-bit and offloaded
# plans), the next variant is tried: ref -> no_offload -> fp32; main -> fp32. Each
# failure is a line of the results. Peers: bench/gpu_peers.py, one process each.
#
# Results in $OUT (the device tool's output folder; /tmp/gpu_bench_out otherwise):
#   bench.jsonl (one JSON object per measurement or failure), bench.md (GPU, driver, date,
#   versions, the table, the commands), bench.log (progress and every command's output),
#   nvidia-smi.txt. The table is printed last.
#
# Time: everything runs under `timeout`, within BENCH_BUDGET_S (default 300 s) of wall
# time: phase 1 (65%, shared 45/30/25 between the workloads, time one leaves over going to
# the next) runs dsrun, eager and DeepSpeed workload by workload; phase 2 the torch.compile
# peers in the same order with what is left (each compile takes a minute or more).
# Environment:
#   BENCH_BUDGET_S, BENCH_PHASE1_PCT (65), BENCH_STEPS (timed steps, default 20),
#   BENCH_WARMUP (default 5; more while fp16 steps overflow, at most BENCH_EXTRA_WARMUP=20),
#   BENCH_WORKLOADS ("ref r101_224 gpt"), BENCH_PEERS ("eager deepspeed compile"),
#   BENCH_SYNTHETIC (0; 1 adds the dsrun-synthetic rows),
#   BENCH_DS_PREBUILT (a folder bench/gpu_ds_prebuild.sh filled ahead), BENCH_PYTHON (default /opt/torch/.venv/bin/python3,
#   else python3), BENCH_MODE:
#     gpu    (default) the above, binaries from .gpu/payload.tar.xz
#     plans  no GPU: dsmodel + dscompile of every plan and config variant at full size
#            with BUILD_DIR's binaries (default build); no dsrun, no peers
#     smoke  no GPU: everything on the CPU at tiny sizes (ResNet-18, a 2-layer GPT) with
#            BUILD_DIR's binaries: checks the script's plumbing, not speed
#     warmup the torch.compile peers alone, one step each and no dsrun: run ahead (while
#            the tests run) so that the timed compile peers find Inductor's caches warm
#   BENCH_LOG_DIR: where each command's log goes (default: a temporary folder whose logs
#   are appended to bench.log at the end; bench/gpu_session.sh puts them in its results,
#   so that a run cut short keeps them).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
OUT=${OUT:-/tmp/gpu_bench_out}
mkdir -p "$OUT"
mode=${BENCH_MODE:-gpu}
budget=${BENCH_BUDGET_S:-300}
steps=${BENCH_STEPS:-20}
warmup=${BENCH_WARMUP:-5}
extra=${BENCH_EXTRA_WARMUP:-20}  # dsrun's extra steps, for a warm-up past fp16 overflows
workloads=${BENCH_WORKLOADS:-ref r101_224 gpt}
reserve=10  # seconds kept for the table at the end
min_run=20  # a command is not started with less than this left
t0=$(date +%s)
deadline=$((t0 + budget))
jsonl=$OUT/bench.jsonl
md=$OUT/bench.md
progress=$OUT/bench.log
: > "$jsonl"
: > "$progress"
log() { echo "gpu_bench: $*" | tee -a "$progress"; }

case $mode in
  gpu | plans | smoke | warmup) ;;
  *) log "BENCH_MODE must be gpu, plans, smoke or warmup, not '$mode'"; exit 2 ;;
esac
py=${BENCH_PYTHON:-}
if [[ -z $py ]]; then
  py=python3
  [[ -x /opt/torch/.venv/bin/python3 ]] && py=/opt/torch/.venv/bin/python3
fi
# ninja (torch.compile, DeepSpeed's op builds) lives beside the interpreter.
PATH="$(dirname "$(command -v "$py")"):$PATH"
export PATH PYTHONUNBUFFERED=1
# torch.compile's caches (on by default in recent PyTorch; asked for here): the warmup
# mode's compiles fill them for the timed compile peers.
export TORCHINDUCTOR_FX_GRAPH_CACHE=1 TORCHINDUCTOR_AUTOGRAD_CACHE=1

if [[ $mode == warmup ]]; then  # PyTorch only: no binaries
  work=$(mktemp -d /tmp/dsbench.XXXXXX)
  bin=
  ds_ld_library_path=
  device=cuda
  steps=1
  warmup=0
  extra=0
  BENCH_PEERS=compile
elif [[ $mode == gpu ]]; then
  [[ -f .gpu/payload.tar.xz ]] || { log "no .gpu/payload.tar.xz: run scripts/gpu_pack.sh and carry .gpu"; exit 2; }
  # shellcheck source=bench/gpu_env.sh
  source bench/gpu_env.sh
  gpu_env_unpack || exit 2
  device=cuda
else
  work=$(mktemp -d /tmp/dsbench.XXXXXX)
  bin=${BUILD_DIR:-build}
  ds_ld_library_path=${LD_LIBRARY_PATH:-}
  device=cpu
  for b in dsmodel dscompile dsrun; do
    [[ -x $bin/$b ]] || { log "$bin/$b is missing (BUILD_DIR)"; exit 2; }
  done
fi
if [[ $mode == smoke ]]; then
  steps=${BENCH_STEPS:-2}
  warmup=${BENCH_WARMUP:-1}
  extra=${BENCH_EXTRA_WARMUP:-2}
fi
logs=${BENCH_LOG_DIR:-$work/logs}
plans=$work/plans
site=$work/pysite           # DeepSpeed and the packages it needs (pip --target)
extensions=$work/torch_ext  # DeepSpeed's JIT-built ops, shared by the prebuild and the peer
mkdir -p "$logs" "$plans"
commands=$work/commands.txt
: > "$commands"
bg_pid=
cleanup() {
  if [[ -n $bg_pid ]]; then # the DeepSpeed setup job and the builds it started
    pkill -TERM -P "$bg_pid" 2> /dev/null
    kill "$bg_pid" 2> /dev/null
  fi
  rm -rf "$work"
}
trap cleanup EXIT

workload_end=$deadline
# limited NAME CAP CMD...: CMD under `timeout`, at most CAP seconds and what is left of the
# workload's share; output in $logs/NAME.log. Status 200: not started (no time left).
limited() {
  local name=$1 cap=$2
  shift 2
  local now left start rc
  now=$(date +%s)
  left=$((workload_end - now))
  ((deadline - reserve - now < left)) && left=$((deadline - reserve - now))
  if ((left < min_run)); then
    echo "not run: ${left} s of the time budget left" > "$logs/$name.log"
    log "$name: not run (${left} s of the budget left)"
    return 200
  fi
  ((cap > left)) && cap=$left
  local text=$*
  [[ -n $ds_ld_library_path ]] && text=${text//"$ds_ld_library_path"/\$DS_LIBS}
  echo "${text//"$work"/\$WORK}" >> "$commands"
  start=$(date +%s)
  timeout -k 10 "$cap" "$@" > "$logs/$name.log" 2>&1
  rc=$?
  log "$name: exit $rc in $(($(date +%s) - start)) s (limit $cap s)"
  return $rc
}
ds=(env)  # dsmodel, dscompile, dsrun: with the packed libraries
[[ -n $ds_ld_library_path ]] && ds=(env "LD_LIBRARY_PATH=$ds_ld_library_path")
peers() { "$py" bench/gpu_peers.py "$@"; }
# BENCH_PEERS: which peers run besides dsrun (default: eager deepspeed compile).
wanted() { [[ " ${BENCH_PEERS:-eager deepspeed compile} " == *" $1 "* ]]; }
last_ok() { tail -1 "$jsonl" | grep -q '"status": "ok"'; }

# ---- the machine ----
{
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "mode: $mode; budget ${budget} s; steps ${steps} timed after ${warmup} warm-up"
  echo "host: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
    echo "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv,noheader 2>&1 | head -1)"
  else
    echo "gpu: none (nvidia-smi not found)"
  fi
  echo "python: $py ($("$py" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1 | tail -1))"
  echo "binaries: $([[ $mode == gpu ]] && echo ".gpu/payload.tar.xz" || echo "$bin")"
} > "$work/header.txt"
tee -a "$progress" < "$work/header.txt"

# ---- DeepSpeed, in the background: install the carried wheels, then JIT-build its
# CPU Adam (offload) and fused Adam ops, niced, while the GPU runs the first peers ----
# BENCH_DS_PREBUILT=DIR: bench/gpu_ds_prebuild.sh DIR already ran (ahead of the timed runs).
ds_state=absent
if [[ -n ${BENCH_DS_PREBUILT:-} ]]; then
  site=$BENCH_DS_PREBUILT/pysite
  extensions=$BENCH_DS_PREBUILT/torch_ext
  [[ -d $site/deepspeed ]] && ds_state=ready
  log "DeepSpeed prebuilt in $BENCH_DS_PREBUILT: $ds_state"
  echo "(before) bash bench/gpu_ds_prebuild.sh \$DS_DIR" >> "$commands"
elif wanted deepspeed && compgen -G ".gpu/wheels/deepspeed-*.whl" > /dev/null &&
  [[ $mode != plans ]]; then
  bash bench/gpu_ds_prebuild.sh "$work/ds" "$py" > "$logs/deepspeed_setup.log" 2>&1 &
  site=$work/ds/pysite
  extensions=$work/ds/torch_ext
  bg_pid=$!
  ds_state=installing
  echo "(background) bash bench/gpu_ds_prebuild.sh \$WORK/ds" >> "$commands"
fi

# ---- workloads ----
# Per workload: its sizes as dsmodel and gpu_peers.py flags, and dscompile's variants.
setup_workload() {
  local w=$1
  case $w in
    ref)
      model_args=(resnet101 --image 32 --classes 10)
      size_flags=(--model resnet101 --image 32 --classes 10 --batch 128)
      batch=128
      variants=(ref no_offload fp32)
      if [[ $mode == smoke ]]; then
        model_args=(resnet18 --image 32 --classes 10)
        size_flags=(--model resnet18 --image 32 --classes 10 --batch 2)
        batch=2
      fi
      ;;
    r101_224)
      model_args=(resnet101 --image 224 --classes 1000)
      size_flags=(--model resnet101 --image 224 --classes 1000 --batch 64)
      batch=64
      variants=(main fp32)
      if [[ $mode == smoke ]]; then
        model_args=(resnet18 --image 64 --classes 1000)
        size_flags=(--model resnet18 --image 64 --classes 1000 --batch 2)
        batch=2
      fi
      ;;
    gpt)
      model_args=(gpt --layers 12 --d-model 768 --heads 12 --vocab 50257 --seq 1024)
      size_flags=(--layers 12 --d-model 768 --heads 12 --vocab 50257 --seq 1024 --batch 8)
      batch=8
      variants=(main fp32)
      if [[ $mode == smoke ]]; then
        model_args=(gpt --layers 2 --d-model 64 --heads 4 --vocab 100 --seq 64)
        size_flags=(--layers 2 --d-model 64 --heads 4 --vocab 100 --seq 64 --batch 2)
        batch=2
      fi
      ;;
  esac
}

note() { # WORKLOAD PEER STATUS TEXT [more gpu_peers.py flags]
  local w=$1 p=$2 s=$3 text=$4
  shift 4
  peers note --workload "$w" "${size_flags[@]}" --peer "$p" --status "$s" --error "$text" \
    --json-out "$jsonl" "$@" > /dev/null
}

# Why a command left no result line: the budget, a timeout, or its last words.
why_not() { # NAME RC
  local name=$1 rc=$2
  case $rc in
    200) echo "not run: time budget spent" ;;
    124 | 137) echo "timed out ($(grep -o 'limit [0-9]* s' "$progress" | tail -1))" ;;
    *) echo "exit $rc: $(grep -v '^\s*$' "$logs/$name.log" | tail -1 | cut -c1-300)" ;;
  esac
}

# dsrun_plan W VARIANT: dscompile's plan; 0 when it compiled.
dsrun_plan() {
  local w=$1 v=$2
  local cfg=$plans/${w}_$v.json
  peers config --workload "$w" "${size_flags[@]}" --variant "$v" -o "$cfg" ||
    { note "$w" dsrun failed "cannot write the $v config" --variant "$v"; return 1; }
  limited "dscompile_${w}_$v" 180 "${ds[@]}" "$bin/dscompile" "$plans/$w.onnx" --config "$cfg" --gpus 1 \
    --batch "$batch" --loss cross_entropy -o "$plans/${w}_$v.plan" --dump summary
  local rc=$?
  if ((rc != 0)); then
    note "$w" dsrun failed "dscompile ($v config): $(why_not "dscompile_${w}_$v" $rc)" --variant "$v"
    return 1
  fi
  local predicted
  predicted=$(grep -m1 '^predicted' "$logs/dscompile_${w}_$v.log")
  [[ -z $predicted ]] || log "  $predicted"
  return 0
}

# dsrun_time W VARIANT PEER DATA [DSRUN-FLAGS...]: trains warmup + steps and writes
# the result line; 0 when it trained.
dsrun_time() {
  local w=$1 v=$2 peer=$3 data=$4 name=dsrun_${1}_${2}_${4}_$3
  shift 4
  local extra_flags=("$@")
  local metrics=$work/metrics_$name.jsonl data_args=(--data synthetic) precision=()
  [[ $data == feed ]] && data_args=(--feed "input=$plans/feeds/input.npy" --feed "label=$plans/feeds/label.npy")
  [[ $v == fp32 ]] && precision=(--precision fp32)
  rm -f "$metrics"
  # The PyTorch peers set torch.backends.cudnn.benchmark; dsrun times cuDNN's candidates too.
  local backend=cuda gpu_flags=(--cudnn-benchmark)
  [[ $mode == smoke ]] && backend=cpu gpu_flags=()
  [[ $mode == smoke ]] && extra_flags=()
  limited "$name" 180 "${ds[@]}" "$bin/dsrun" "$plans/${w}_$v.plan" --backend "$backend" "${gpu_flags[@]}" \
    "${extra_flags[@]}" "${data_args[@]}" --steps $((warmup + steps + extra)) --metrics "$metrics"
  local rc=$?
  peers dsrun --workload "$w" "${size_flags[@]}" "${precision[@]}" --peer "$peer" --metrics "$metrics" \
    --rc "$rc" --log "$logs/$name.log" --summary "$logs/dscompile_${w}_$v.log" --warmup "$warmup" --steps "$steps" \
    --variant "$v" --data "$data" --backend "$backend" --json-out "$jsonl" > /dev/null
  log "  $(tail -1 "$jsonl" | cut -c1-400)"
  last_ok
}

# run_peer W PEER-LABEL CAP gpu_peers.py-peer-flags...: one PyTorch/DeepSpeed peer.
run_peer() {
  local w=$1 label=$2 cap=$3
  shift 3
  local name=peer_${w}_$label before rc
  before=$(wc -l < "$jsonl")
  limited "$name" "$cap" "${peer_env[@]}" "$py" bench/gpu_peers.py peer --workload "$w" \
    "${size_flags[@]}" --device "$device" --steps "$steps" --warmup "$warmup" \
    --max-extra-warmup "$extra" --json-out "$jsonl" "$@"
  rc=$?
  if (($(wc -l < "$jsonl") == before)); then
    local status=failed
    ((rc == 200)) && status=skipped
    note "$w" "$label" "$status" "$(why_not "$name" $rc)"
  fi
  log "  $(tail -1 "$jsonl" | cut -c1-400)"
  last_ok
}

deepspeed_peers() { # W DSRUN-VARIANT
  local w=$1 dsrun_variant=$2
  # run_peer sees this (bash scopes dynamically); the other peers run without it.
  local -a peer_env=(env "PYTHONPATH=$site" "TORCH_EXTENSIONS_DIR=$extensions" MAX_JOBS=4
    TORCH_CUDA_ARCH_LIST=9.0 DS_SKIP_CUDA_CHECK=1)
  if [[ $ds_state == absent ]]; then
    note "$w" deepspeed-ref failed "DeepSpeed unavailable: not carried (scripts/gpu_pack.sh puts its wheels in .gpu/wheels) or its prebuild failed"
    return
  fi
  # Wait for the background install and op builds, leaving time for the peers (a peer
  # started while a build runs waits for it on the extension's lock file).
  while [[ -n $bg_pid ]] && kill -0 "$bg_pid" 2> /dev/null && (($(date +%s) < workload_end - 60)); do
    sleep 2
  done
  if [[ -n $bg_pid ]] && ! kill -0 "$bg_pid" 2> /dev/null; then
    wait "$bg_pid"
    local rc=$?
    bg_pid=
    log "deepspeed setup: exit $rc; $(grep 'ds-prebuild' "$logs/deepspeed_setup.log" | tr '\n' ' ')"
    if ((rc == 3)); then
      ds_state=absent
      note "$w" deepspeed-ref failed "pip install of .gpu/wheels failed: $(grep -v '^\s*$' "$logs/deepspeed_setup.log" | tail -1 | cut -c1-300)"
      return
    fi
  fi
  run_peer "$w" deepspeed-ref 180 --peer deepspeed --ds-variant ref
  local ref_ok=$?
  if ((ref_ok != 0)) || [[ $dsrun_variant != ref ]]; then
    # dsrun ran without offload, or DeepSpeed's offload failed: ZeRO-3 without offload
    # (FusedAdam; torch.optim.AdamW if FusedAdam cannot be built).
    run_peer "$w" deepspeed-no_offload 150 --peer deepspeed --ds-variant no_offload ||
      run_peer "$w" deepspeed-torch_adam 150 --peer deepspeed --ds-variant torch_adam
  fi
}

# Phase 1, workload by workload: dsrun, eager, DeepSpeed (ref), within 65% of the budget
# shared 45/30/25 (time one leaves over goes to the next). Phase 2: torch.compile of each
# workload, in the same order, with what is left (its compile is the longest wait, so
# every workload gets its dsrun-vs-eager numbers first).
declare -A share=([ref]=45 [r101_224]=30 [gpt]=25)
declare -A used_variant=()  # per workload: the dsrun plan variant that trained
phase1_pct=${BENCH_PHASE1_PCT:-65}
peer_env=()  # deepspeed_peers' environment (a local there)
selected=()
total_share=0
for w in $workloads; do
  case $w in
    ref | r101_224 | gpt) selected+=("$w"); total_share=$((total_share + share[$w])) ;;
    *) log "unknown workload '$w' (ref, r101_224, gpt)" ;;
  esac
done
((total_share > 0)) || total_share=100
cumulative=0
for w in "${selected[@]}"; do
  cumulative=$((cumulative + share[$w]))
  workload_end=$((t0 + budget * phase1_pct * cumulative / (100 * total_share)))
  ((workload_end > deadline)) && workload_end=$deadline
  setup_workload "$w"
  [[ $mode == warmup ]] && continue
  log "== $w: until +$((workload_end - t0)) s of the budget (now +$(($(date +%s) - t0)) s) =="

  # dsrun: model, plan (variants until one trains), timing.
  if limited "dsmodel_$w" 180 "${ds[@]}" "$bin/dsmodel" "${model_args[@]}" -o "$plans/$w.onnx"; then
    [[ $w != gpt && $mode != plans ]] && peers feeds --workload "$w" "${size_flags[@]}" "$plans/feeds"
    used=
    for v in "${variants[@]}"; do
      dsrun_plan "$w" "$v" || continue
      [[ $mode == plans ]] && continue
      if [[ $w == gpt ]]; then
        dsrun_time "$w" "$v" dsrun synthetic && { used=$v; break; }
      else
        dsrun_time "$w" "$v" dsrun feed && { used=$v; break; }
      fi
    done
  else
    note "$w" dsrun failed "dsmodel: $(why_not "dsmodel_$w" $?)"
    used=
  fi
  if [[ $mode == plans ]]; then
    rm -f "$plans"/*.plan "$plans"/*.onnx "$plans"/*.onnx.data
    continue
  fi

  # The peers before dsrun's further runs (NHWC, profiles), which then get only what
  # is left of this workload's share, never the peers' time.
  wanted eager && run_peer "$w" eager 150 --peer eager
  [[ $w == ref ]] && wanted deepspeed && deepspeed_peers "$w" "${used:-none}"
  if [[ -n $used && $w != gpt ]]; then
    [[ ${BENCH_SYNTHETIC:-0} == 1 ]] && dsrun_time "$w" "$used" dsrun-synthetic synthetic
    # NHWC activations (dsrun --channels-last, off by default until measured here).
    [[ $used != fp32 ]] && dsrun_time "$w" "$used" dsrun-channels-last feed --channels-last
  fi
  # The plan that trained stays for the profiles after the compile peers.
  used_variant[$w]=$used
  for f in "$plans"/*.plan; do
    [[ -e $f && $f != "$plans/${w}_$used.plan" ]] && rm -f "$f"
  done
  rm -f "$plans"/*.onnx "$plans"/*.onnx.data "$plans"/feeds/*.npy
done

if [[ $mode != plans ]] && wanted compile; then
  workload_end=$deadline
  for w in "${selected[@]}"; do
    setup_workload "$w"
    log "== $w: torch.compile (now +$(($(date +%s) - t0)) s) =="
    run_peer "$w" compile 240 --peer compile
  done
fi

# Phase 3, with what is left: where dsrun's device time goes, per op (diagnostics, after
# every peer was measured).
if [[ $mode == gpu ]]; then
  workload_end=$deadline
  for w in "${selected[@]}"; do
    used=${used_variant[$w]:-}
    [[ -n $used ]] || continue
    limited "profile_$w" 60 "${ds[@]}" "$bin/dsrun" "$plans/${w}_$used.plan" --backend cuda \
      --cudnn-benchmark --data synthetic --steps 4 --profile && cp "$logs/profile_$w.log" "$OUT/profile_$w.txt"
    [[ $w == r101_224 && $used != fp32 ]] &&
      limited "profile_${w}_nhwc" 60 "${ds[@]}" "$bin/dsrun" "$plans/${w}_$used.plan" --backend cuda \
        --cudnn-benchmark --channels-last --data synthetic --steps 4 --profile &&
      cp "$logs/profile_${w}_nhwc.log" "$OUT/profile_${w}_nhwc.txt"
  done
fi

# ---- results ----
if [[ -n $bg_pid ]] && kill -0 "$bg_pid" 2> /dev/null; then
  log "deepspeed setup still running at the end (see bench.log)"
fi
{
  echo "# dsrun GPU benchmarks (issue 7) — $(date -u +%Y-%m-%d)"
  echo
  sed 's/^/- /' "$work/header.txt"
  echo
  peers table --warmup "$warmup" "$jsonl"
  echo
  echo "dsrun ÷ peer: the row's throughput divided into dsrun's (the \`dsrun\` row: one batch fed"
  echo "from host memory each step); above 1 means dsrun is faster. Median of $steps timed steps"
  echo "after $warmup warm-up steps (more while fp16's loss scale is still overflowing, at most"
  echo "$extra more), each step synchronised. PyTorch/DeepSpeed train on one batch resident on the"
  echo "GPU. MFU: (6 N + 12 L T d) x tokens/s over 989 TFLOP/s (H100 SXM dense bf16), the PaLM"
  echo "paper's model FLOPs (Appendix B); see bench/gpu_peers.py."
  echo
  echo "## Commands"
  echo
  echo '```'
  cat "$commands"
  echo '```'
} > "$md"
for f in "$logs"/*.log; do
  [[ -e $f ]] || continue
  {
    echo
    echo "===== $(basename "$f") (last 150 lines) ====="
    tail -n 150 "$f"
  } >> "$progress"
done
log "done in $(($(date +%s) - t0)) s; results in $OUT (bench.jsonl, bench.md, bench.log)"
echo
cat "$md"
