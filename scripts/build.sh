#!/usr/bin/env bash
# Configures and builds dscompile into build/ (CUDA parts too when nvcc is found).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DDS_WERROR=ON >/dev/null
cmake --build build -j"$(nproc)"
