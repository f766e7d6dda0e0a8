#!/usr/bin/env bash
# Packs what bench/gpu_check.sh and bench/gpu_bench.sh need on a lent GPU machine into
# .gpu/ (git-ignored; this script adds /.gpu/ to .git/info/exclude when it is not):
# the stripped ds_tests, dsrun, dscompile and dsmodel of a CUDA build, and the
# shared libraries they need that such a machine lacks (oneDNN, protobuf, ONNX,
# libgomp, the CUDA runtime, ...), as one xz archive, since the device tool
# carries at most 64 MiB and oneDNN alone is 40 MB. cuDNN, cuBLAS, NCCL and NVRTC are
# not packed: the machine has them in PyTorch's pip packages. libstdc++ and
# libgcc_s go to a fallback folder used only when the machine's own are too old.
# The GPU tests build their models and CPU references on the machine itself, so
# no test data is packed.
#
# Then .gpu/wheels: DeepSpeed for bench/gpu_bench.sh's DeepSpeed peer (the machine has
# PyTorch but no DeepSpeed, and no network), from PyPI: DeepSpeed's sdist built here into
# a pure-Python wheel (DS_BUILD_OPS=0: its C++/CUDA ops are JIT-built on the machine),
# and the dependencies its torch venv lacks (hjson, pydantic with pydantic-core,
# annotated-types, typing-inspection, typing-extensions) as binary wheels for its Python
# (3.12; einops, msgpack, ninja, numpy, packaging, psutil, py-cpuinfo and tqdm are there).
#
#   scripts/gpu_pack.sh [BUILD_DIR]    # default: build; payload, then wheels
#   scripts/gpu_pack.sh --wheels-only  # only (re)fill .gpu/wheels, keep the payload
# env: GPU_PACK_WHEELS=0 (no wheels fetched; .gpu/wheels from an earlier run kept),
#      DEEPSPEED_VERSION (0.19.8), GPU_PYTHON_VERSION
#      (3.12), PIP (python3 -m pip)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
limit_mib=60
wheels_only=0
[[ $build == --wheels-only ]] && wheels_only=1
ds_version=${DEEPSPEED_VERSION:-0.19.8}
py_version=${GPU_PYTHON_VERSION:-3.12}
read -r -a pip <<< "${PIP:-python3 -m pip}"

# .gpu/ must never be committed (the device tool carries it as an ignored path).
if git rev-parse --git-dir > /dev/null 2>&1 && ! git check-ignore -q .gpu/payload.tar.xz; then
  echo "/.gpu/" >> "$(git rev-parse --git-path info/exclude)"
  echo "gpu_pack: added /.gpu/ to $(git rev-parse --git-path info/exclude)"
fi

# DeepSpeed and the packages the GPU machine's torch venv lacks, into .gpu/wheels.
pack_wheels() {
  local tmp
  tmp=$(mktemp -d)
  rm -rf .gpu/wheels
  mkdir -p .gpu/wheels
  local fail="gpu_pack: cannot fetch DeepSpeed's wheels from PyPI (see above); the DeepSpeed peer
of bench/gpu_bench.sh needs them. Without network, set GPU_PACK_WHEELS=0: the payload is then
packed alone and the benchmark reports the DeepSpeed peer as not carried."
  if ! "${pip[@]}" download -q --no-deps --no-binary :all: "deepspeed==$ds_version" -d "$tmp"; then
    echo "$fail" >&2
    rm -rf "$tmp"
    return 3
  fi
  if ! DS_BUILD_OPS=0 "${pip[@]}" wheel -q --no-deps "$tmp/deepspeed-$ds_version.tar.gz" \
    -w .gpu/wheels; then
    echo "gpu_pack: building DeepSpeed's wheel from its sdist failed (see above)" >&2
    rm -rf "$tmp"
    return 3
  fi
  rm -rf "$tmp"
  if ! "${pip[@]}" download -q --only-binary=:all: --python-version "$py_version" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .gpu/wheels hjson pydantic typing-extensions; then
    echo "$fail" >&2
    return 3
  fi
  # Pure Python only, for a wheel that travels to another Python.
  local whl
  for whl in .gpu/wheels/deepspeed-*.whl; do
    if [[ $whl != *-py3-none-any.whl ]]; then
      echo "gpu_pack: DeepSpeed's wheel is not pure Python: $whl" >&2
      return 3
    fi
  done
  echo "gpu_pack: .gpu/wheels $(du -sk .gpu/wheels | cut -f1) KiB: $(ls .gpu/wheels | tr '\n' ' ')"
}

check_size() {
  local bytes
  bytes=$(du -sb .gpu | cut -f1)
  echo "gpu_pack: .gpu $((bytes / 1024 / 1024)) MiB in all"
  if ((bytes > limit_mib * 1024 * 1024)); then
    echo "gpu_pack: over the ${limit_mib} MiB budget" >&2
    exit 1
  fi
}

if ((wheels_only)); then
  [[ -f .gpu/payload.tar.xz ]] || echo "gpu_pack: note: no .gpu/payload.tar.xz yet" >&2
  pack_wheels || exit 3
  check_size
  exit 0
fi
for b in ds_tests dsrun dscompile dsmodel; do
  [[ -x "$build/$b" ]] || { echo "gpu_pack: $build/$b is missing (build it first)" >&2; exit 2; }
done
nm -C "$build/ds_tests" | grep 'ds::CudaExecutor::run' > /dev/null ||
  { echo "gpu_pack: $build was built without CUDA (no CudaExecutor in ds_tests)" >&2; exit 2; }

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib" "$stage/lib-fallback"
for b in ds_tests dsrun dscompile dsmodel; do
  cp "$build/$b" "$stage/bin/"
  strip "$stage/bin/$b"
done

# Every library the binaries load, but glibc's (the machine's own must be used) and
# the GPU libraries the machine provides (driver, cuDNN, cuBLAS, NCCL).
ldd "$stage"/bin/* | awk '/=> \// {print $3}' | sort -u | while read -r lib; do
  name=$(basename "$lib")
  case "$name" in
    libc.so* | libm.so* | libdl.so* | libpthread.so* | librt.so* | ld-linux*) continue ;;
    libcuda.so* | libcudnn* | libcublas* | libnccl* | libnvrtc*) continue ;;
    libstdc++.so* | libgcc_s.so*) dest=lib-fallback ;;
    *) dest=lib ;;
  esac
  cp -L "$lib" "$stage/$dest/$name"
  strip --strip-unneeded "$stage/$dest/$name" 2>/dev/null || true
done

# Only the payload is replaced: wheels packed before stay (GPU_PACK_WHEELS=0 keeps them).
rm -f .gpu/payload.tar.xz
mkdir -p .gpu
# What was packed, so that a stale payload is seen: printed by bench/gpu_session.sh.
{
  echo "commit $(git rev-parse --short HEAD 2> /dev/null || echo unknown)$(git diff --quiet HEAD 2> /dev/null || echo ' (with uncommitted changes)')"
  echo "packed $(date -u +%Y-%m-%dT%H:%MZ) from $build"
  for b in ds_tests dsrun dscompile dsmodel; do
    echo "$b built $(date -u -r "$build/$b" +%Y-%m-%dT%H:%MZ)"
  done
} > "$stage/STAMP"
tar -C "$stage" -cf - bin lib lib-fallback | xz -T2 -6 > .gpu/payload.tar.xz
cp "$stage/STAMP" .gpu/STAMP
bytes=$(stat -c %s .gpu/payload.tar.xz)
echo "gpu_pack: .gpu/payload.tar.xz $((bytes / 1024 / 1024)) MiB (unpacked $(du -sm "$stage" | cut -f1) MiB):"
ls "$stage/bin" "$stage/lib" "$stage/lib-fallback" | tr '\n' ' '
echo
if [[ ${GPU_PACK_WHEELS:-1} != 0 ]]; then
  pack_wheels || exit 3
fi
check_size
