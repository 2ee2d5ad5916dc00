#!/usr/bin/env bash
# Builds the CPU emulation tests of the CUDA kernels with the system C++ compiler and runs them.
#   kernels/emu/run.sh                  # optimised build
#   EMU_SANITIZE=thread kernels/emu/run.sh   # also report data races (a missing __syncthreads)
# Output goes to ${EDGELLM_BUILD_DIR:-build}/emu. Needs a C++17 compiler (CXX, default c++) and pthreads.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${EDGELLM_BUILD_DIR:-$ROOT/build}/emu
CXX=${CXX:-c++}
mkdir -p "$OUT"
FLAGS=(-std=c++17 -O2 -g -Wall -Wextra -Werror -Wno-unknown-pragmas -pthread)
if [[ -n "${EMU_SANITIZE:-}" ]]; then
    FLAGS+=(-fsanitize="$EMU_SANITIZE" -fno-omit-frame-pointer)
fi
for test in "$ROOT"/kernels/emu/*_test.cpp; do
    name=$(basename "$test" .cpp)
    "$CXX" "${FLAGS[@]}" -o "$OUT/$name" "$test"
    echo "==> $name"
    "$OUT/$name"
done
