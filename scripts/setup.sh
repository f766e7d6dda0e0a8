#!/usr/bin/env bash
# Installs every Debian package the build, the demo and the tests need.
# Idempotent and non-interactive: safe to run on every CI job and fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake ninja-build pkg-config clang-format bc graphviz
  libonnx-dev libonnx-testdata libprotobuf-dev protobuf-compiler
  libgtest-dev nlohmann-json3-dev libcli11-dev libdnnl-dev ocl-icd-opencl-dev opencl-headers
  libisal-dev libjpeg-dev libpng-dev
  python3-torch python3-torchvision python3-onnx python3-numpy
  openmpi-bin libopenmpi-dev
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Python tools for the oracles (ONNX's newer node-test data, ONNX Runtime,
# TensorBoard's event reader) live in a project-local virtual environment,
# git-ignored, so nothing touches the system.
venv=.venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import onnx, onnxruntime, numpy, tensorboard' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check onnx onnxruntime numpy tensorboard
fi
# cuDNN's C++ graph API (header-only) for fused attention on the GPU: the build uses
# only the wheel's headers, so none of its Python dependencies are installed.
if ! compgen -G "$venv/lib/python3*/site-packages/include/cudnn_frontend.h" > /dev/null; then
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps nvidia-cudnn-frontend==1.32.0
fi
