# shellcheck shell=bash
# Sourced by bench/gpu_check.sh and bench/gpu_bench.sh on a lent GPU machine, from the
# repository root, after scripts/gpu_pack.sh filled .gpu/ here (the device tool carries it).
# The caller defines log(). gpu_env_unpack:
#   - unpacks .gpu/payload.tar.xz into a fresh $work (binaries in $bin);
#   - sets $pip_libs (cuDNN, cuBLAS, NCCL, CUDA runtime of PyTorch's pip packages in
#     /opt/torch/.venv, else of whichever python3 has them) and $ds_ld_library_path: the
#     packed libraries, then those; the packed libstdc++/libgcc_s only when the machine's
#     own are older than the build's.
# It does not export LD_LIBRARY_PATH: the packed libraries (libgomp, libcudart, ...) are
# for dsrun and friends, and must not shadow PyTorch's in Python processes.
# Returns 2 when the payload cannot be unpacked.

gpu_env_unpack() {
  work=$(mktemp -d /tmp/dsgpu.XXXXXX)
  tar -C "$work" -xJf .gpu/payload.tar.xz || {
    log "cannot unpack .gpu/payload.tar.xz"
    return 2
  }
  bin=$work/bin

  # PyTorch's pip packages: nvidia/<package>/lib (cu12 layout) or nvidia/cu13/lib.
  pip_libs=$(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib 2>/dev/null | tr '\n' ':')
  if [[ -z $pip_libs ]]; then # elsewhere: ask the Python that has them
    local py dir
    for py in /opt/torch/.venv/bin/python python3; do
      dir=$("$py" -c 'import nvidia, os; print(list(nvidia.__path__)[0])' 2>/dev/null) || continue
      pip_libs=$(ls -d "$dir"/*/lib 2>/dev/null | tr '\n' ':')
      [[ -n $pip_libs ]] && break
    done
  fi
  [[ -n $pip_libs ]] || log "no pip NVIDIA libraries found; relying on the system's cuDNN/cuBLAS/NCCL"
  local base_path=${LD_LIBRARY_PATH:-}
  ds_ld_library_path="$work/lib:${pip_libs}${base_path}"
  # The packed libstdc++ only when the machine's own is older than the build's.
  if ! LD_LIBRARY_PATH=$ds_ld_library_path "$bin/dsmodel" --help > /dev/null 2>&1; then
    ds_ld_library_path="$work/lib:$work/lib-fallback:${pip_libs}${base_path}"
  fi
  # Libraries nothing provides (cuDNN, cuBLAS, NCCL, NVRTC come from the pip packages).
  local missing
  missing=$(LD_LIBRARY_PATH=$ds_ld_library_path ldd "$bin"/* 2>/dev/null | grep "not found" | sort -u)
  [[ -z $missing ]] || log "missing shared libraries: $(echo "$missing" | tr -s ' \t\n' ' ')"
  return 0
}
