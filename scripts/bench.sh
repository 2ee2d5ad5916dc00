#!/usr/bin/env bash
# Benchmarks `edgellm bench` against llama.cpp (llama-cpp-python) on the default model and Gemma 3
# 270M in one run, same threads and prompt, and prints a table (see scripts/bench.py).
#
#   scripts/bench.sh [--threads N] [--prompt-tokens 128] [--gen-tokens 64] [--reps 3] [--json-out F]
#
# EDGELLM_BENCH_PYTHON: a python that has llama_cpp (else a venv in ~/.cache/edgellm/bench-venv is
# created and `pip install llama-cpp-python numpy` run once). EDGELLM_MODEL_DIR: model folder.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -j"${EDGELLM_BUILD_JOBS:-2}" --bin edgellm
BIN="${CARGO_TARGET_DIR:-target}/release/edgellm"

PY="${EDGELLM_BENCH_PYTHON:-}"
if [ -z "$PY" ]; then
    VENV="$HOME/.cache/edgellm/bench-venv"
    if ! "$VENV/bin/python" -c "import llama_cpp, numpy" 2>/dev/null; then
        echo "installing llama-cpp-python into $VENV (once) ..." >&2
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet llama-cpp-python numpy
    fi
    PY="$VENV/bin/python"
fi

MODELS="${EDGELLM_MODEL_DIR:-$HOME/.cache/edgellm/models}"
ARGS=()
for m in SmolLM2-135M-Instruct.Q4_1.gguf gemma-3-270m-q4_k_m.gguf; do
    if [ -f "$MODELS/$m" ]; then
        ARGS+=(--model "$MODELS/$m")
    else
        echo "skipping $m: not in $MODELS (run scripts/fetch_models.sh)" >&2
    fi
done
if [ ${#ARGS[@]} -eq 0 ]; then
    echo "error: no models found in $MODELS" >&2
    exit 1
fi
exec "$PY" scripts/bench.py --edgellm "$BIN" "${ARGS[@]}" "$@"
