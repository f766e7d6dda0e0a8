#!/usr/bin/env bash
# Fails when a C++ or CUDA file does not follow .clang-format.
set -euo pipefail
cd "$(dirname "$0")/.."
git ls-files '*.cc' '*.h' '*.cu' | xargs clang-format --dry-run --Werror
