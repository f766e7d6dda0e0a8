#!/usr/bin/env bash
# Sets up, builds and runs every test (GPU tests skip without a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/check_format.sh
bash scripts/build.sh
ctest --test-dir build --output-on-failure -j"$(nproc)"
