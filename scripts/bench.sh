#!/usr/bin/env bash
# Benchmarks `edgellm bench` against llama.cpp (llama-cpp-python) on the default model and Gemma 3
# 270M in one run: a thin wrapper of benches/compare_llamacpp.sh, which takes the same options:
#
#   scripts/bench.sh [--threads 1,2] [--reps 5] [-p 512] [-n 128] [--tg-prompt 128] [--json-out F]
#
# Choose --threads no larger than the number of idle cores: llama.cpp's OpenMP threads busy-wait,
# and when they must share cores with other work its speed collapses (on a shared 2-core machine
# we measured SmolLM2 decode fall from 140 tok/s at 1 thread to 2 tok/s at 2 threads), which makes
# the ratio meaningless. The table header shows the load average at the start and end of each run.
#
# EDGELLM_BENCH_PYTHON: a python that has llama_cpp (else a venv in ~/.cache/edgellm/bench-venv is
# created and `pip install llama-cpp-python numpy` run once). EDGELLM_MODEL_DIR: model folder.
set -euo pipefail
exec "$(dirname "$0")/../benches/compare_llamacpp.sh" "$@"
