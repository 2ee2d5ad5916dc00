#!/usr/bin/env bash
# Fetches the default model (SmolLM2-135M-Instruct, Q4_1) and generates text with it.
# Usage: scripts/run_example.sh ["prompt"]   (extra arguments go to `edgellm generate`)
set -euo pipefail
cd "$(dirname "$0")/.."
PROMPT=${1:-"What is the capital of France? Answer in one sentence."}
shift || true
scripts/fetch_models.sh smollm2
MODEL=${EDGELLM_MODEL_DIR:-$HOME/.cache/edgellm/models}/SmolLM2-135M-Instruct.Q4_1.gguf
cargo run --release -j "${CARGO_BUILD_JOBS:-2}" --bin edgellm -- generate --model "$MODEL" --prompt "$PROMPT" \
  --max-tokens 64 "$@"
