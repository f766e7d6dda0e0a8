#!/usr/bin/env bash
# Packs what bench/gpu_check.sh needs on a lent GPU machine into .gpu/ (git-ignored):
# the stripped ds_tests, dsrun, dscompile and dsmodel of a CUDA build, and the
# shared libraries they need that such a machine lacks (oneDNN, protobuf, ONNX,
# libgomp, the CUDA runtime, ...), as one xz archive, since the device tool
# carries at most 64 MiB and oneDNN alone is 40 MB. cuDNN, cuBLAS and NCCL are
# not packed: the machine has them in PyTorch's pip packages. libstdc++ and
# libgcc_s go to a fallback folder used only when the machine's own are too old.
# The GPU tests build their models and CPU references on the machine itself, so
# no test data is packed.
#
#   scripts/gpu_pack.sh [BUILD_DIR]    # default: build
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
limit_mib=60
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
    libcuda.so* | libcudnn* | libcublas* | libnccl*) continue ;;
    libstdc++.so* | libgcc_s.so*) dest=lib-fallback ;;
    *) dest=lib ;;
  esac
  cp -L "$lib" "$stage/$dest/$name"
  strip --strip-unneeded "$stage/$dest/$name" 2>/dev/null || true
done

rm -rf .gpu
mkdir -p .gpu
tar -C "$stage" -cf - bin lib lib-fallback | xz -T2 -6 > .gpu/payload.tar.xz
bytes=$(stat -c %s .gpu/payload.tar.xz)
echo "gpu_pack: .gpu/payload.tar.xz $((bytes / 1024 / 1024)) MiB (unpacked $(du -sm "$stage" | cut -f1) MiB):"
ls "$stage/bin" "$stage/lib" "$stage/lib-fallback" | tr '\n' ' '
echo
if ((bytes > limit_mib * 1024 * 1024)); then
  echo "gpu_pack: over the ${limit_mib} MiB budget" >&2
  exit 1
fi
