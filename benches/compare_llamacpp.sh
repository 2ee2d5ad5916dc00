#!/usr/bin/env bash
# edgellm beside llama.cpp (llama-cpp-python) on the same GGUF files and thread counts, runs
# alternated repetition by repetition; prints pp/tg tokens/s, ratios, the fraction of the memory
# bandwidth floor, load time and RSS against the memory target (see benches/compare_llamacpp.py).
#
#   benches/compare_llamacpp.sh [--threads 1,2] [--reps 5] [--models "smollm2 gemma3" | PATH...]
#                               [-p 512] [-n 128] [--tg-prompt 128] [--json-out FILE] [--no-build]
#
# --models takes model names (smollm2, gemma3, or a file name in the model folder) or paths;
# default both models, fetched with scripts/fetch_models.sh when missing. --no-build uses the
# release binary already built instead of running `cargo build --release` first.
#
# Python: EDGELLM_BENCH_PYTHON if set (it must import llama_cpp and numpy), else the venv
# ~/.cache/edgellm/bench-venv, created once with `pip install llama-cpp-python numpy` (a source
# build: several minutes). If llama.cpp then crashes on a smoke test (some AMX machines do), it is
# rebuilt with AMX disabled. EDGELLM_MODEL_DIR: model folder. EDGELLM_BUILD_JOBS: cargo -j (2).
#
# Choose thread counts no larger than the idle cores: llama.cpp's OpenMP worker threads busy-wait,
# so on a busy machine they fight other processes (and ours) for cores and its speed collapses,
# which makes ratios meaningless. Read the load averages the script prints.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL_DIR="${EDGELLM_MODEL_DIR:-$HOME/.cache/edgellm/models}"
MODELS="smollm2 gemma3"
PASS=()
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --models) MODELS="$2"; shift 2 ;;
        --models=*) MODELS="${1#--models=}"; shift ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) PASS+=("$1"); shift ;;
    esac
done

# Model names or paths -> paths, fetching the two known models when they are missing.
MODEL_ARGS=()
for m in $MODELS; do
    case "$m" in
        smollm2) f="$MODEL_DIR/SmolLM2-135M-Instruct.Q4_1.gguf"; fetch=smollm2 ;;
        gemma3) f="$MODEL_DIR/gemma-3-270m-q4_k_m.gguf"; fetch=gemma3 ;;
        */*) f="$m"; fetch= ;;
        *) f="$MODEL_DIR/$m"; fetch= ;;
    esac
    if [ ! -f "$f" ] && [ -n "$fetch" ]; then
        echo "fetching $fetch into $MODEL_DIR ..." >&2
        scripts/fetch_models.sh "$fetch" >&2
    fi
    if [ ! -f "$f" ]; then
        echo "error: model not found: $f" >&2
        exit 1
    fi
    MODEL_ARGS+=(--model "$f")
done

BIN="${CARGO_TARGET_DIR:-target}/release/edgellm"
if [ "$BUILD" = 1 ] || [ ! -x "$BIN" ]; then
    cargo build --release -j"${EDGELLM_BUILD_JOBS:-2}" --bin edgellm >&2
fi

# Loads the first model and decodes a few tokens: a crash here is the AMX problem, not a slow run.
smoke() {
    "$1" - "${MODEL_ARGS[1]}" <<'EOF' >/dev/null 2>&1
import sys
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_ctx=64, n_threads=1, n_threads_batch=1, verbose=False)
llm.eval(llm.tokenize(b"Hello there, how are you", add_bos=True))
llm.eval([1])
EOF
}

PY="${EDGELLM_BENCH_PYTHON:-}"
if [ -z "$PY" ]; then
    VENV="$HOME/.cache/edgellm/bench-venv"
    PY="$VENV/bin/python"
    if ! "$PY" -c "import llama_cpp, numpy" 2>/dev/null; then
        echo "installing llama-cpp-python into $VENV (once; it builds llama.cpp from source) ..." >&2
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --upgrade pip >&2
        "$VENV/bin/pip" install --quiet llama-cpp-python numpy >&2
    fi
    if ! smoke "$PY"; then
        echo "llama-cpp-python crashed on a smoke test; rebuilding it with AMX disabled ..." >&2
        CMAKE_ARGS="-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" \
            "$VENV/bin/pip" install --quiet --force-reinstall --no-cache-dir --no-deps llama-cpp-python >&2
    fi
fi
if ! smoke "$PY"; then
    echo "error: $PY cannot run llama.cpp (import llama_cpp or a tiny decode failed)" >&2
    exit 1
fi

exec "$PY" benches/compare_llamacpp.py --edgellm "$BIN" "${MODEL_ARGS[@]}" ${PASS[@]+"${PASS[@]}"}
