#!/usr/bin/env bash
# The single test command: fetches the default models, runs the whole Rust suite (which also
# fails when include/edgellm.h drifts from src/ffi), installs the library into a temporary
# prefix, builds and runs the C/C++ API tests (ASan/UBSan) and the C++ example through CMake's
# find_package, and checks the example's output on the default model against the oracles and its
# JSONL serving mode (LoRA, system-prompt cache, concurrency, profile) on the tiny model. The
# aarch64 NEON kernels are cross-compiled and checked under qemu (scripts/test_neon_qemu.sh). The
# CUDA kernels are compiled with a pinned nvcc from PyPI, their ptxas reports checked, and their
# logic run on the CPU under kernels/emu.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
BUILD=${EDGELLM_BUILD_DIR:-$ROOT/build}
MODEL_DIR=${EDGELLM_MODEL_DIR:-$HOME/.cache/edgellm/models}
# Fixtures (committed): the tiny Llama model with its transformers golden, and the real-model
# golden from transformers + llama.cpp. Overridable for testing the script itself.
TINY_DIR=${EDGELLM_TINY_DIR:-$ROOT/tests/fixtures/tiny/llama}
REAL_GOLDEN=${EDGELLM_REAL_GOLDEN:-$ROOT/tests/fixtures/real/smollm2.json}
step() { echo; echo "==> $*"; }

step "fetch default models"
scripts/fetch_models.sh all

step "cargo test --release (whole suite, includes the header drift check)"
cargo test --release -j "$CARGO_BUILD_JOBS"

step "aarch64 NEON kernels against the scalar reference, under qemu-aarch64"
scripts/test_neon_qemu.sh

step "install into a temporary prefix"
PREFIX=$(mktemp -d "${TMPDIR:-/tmp}/edgellm-prefix.XXXXXX")
trap 'rm -rf "$PREFIX"' EXIT
scripts/install.sh "$PREFIX"

step "C and C++ API tests (find_package, -Werror, ASan/UBSan)"
rm -rf "$BUILD/c-tests"
cmake -S tests/c -B "$BUILD/c-tests" -DCMAKE_PREFIX_PATH="$PREFIX" -DEDGELLM_TINY_DIR="$TINY_DIR" \
  -DCMAKE_BUILD_TYPE=Debug
cmake --build "$BUILD/c-tests" -j "$CARGO_BUILD_JOBS"
ctest --test-dir "$BUILD/c-tests" --output-on-failure

step "C++ example llm_inference (find_package, -Werror)"
rm -rf "$BUILD/examples"
cmake -S cpp-examples -B "$BUILD/examples" -DCMAKE_PREFIX_PATH="$PREFIX" -DCMAKE_BUILD_TYPE=Release
cmake --build "$BUILD/examples" -j "$CARGO_BUILD_JOBS"

step "llm_inference on the default model, checked against transformers + llama.cpp greedy output"
OUT="$BUILD/examples/smollm2_capital.out.json"
"$BUILD/examples/llm_inference" --model "$MODEL_DIR/SmolLM2-135M-Instruct.Q4_1.gguf" \
  --input tests/c/smollm2_capital.json --output "$OUT"
python3 tests/c/check_example_output.py "$OUT" "$REAL_GOLDEN"
"$BUILD/examples/llm_inference" --model "$MODEL_DIR/SmolLM2-135M-Instruct.Q4_1.gguf" \
  --prompt "Write one sentence about the sea." --max-tokens 24 --stream

step "llm_inference JSONL mode on the tiny model: LoRA adapters, system-prompt cache, --jobs 8 == --jobs 1, profile"
# tests/c/check_example_jsonl.py writes the request lines (with the LoRA fixtures in
# available_lora_weights, two bad lines and save_system_prompt_kv_cache) and checks the outputs
# against each other, against the transformers golden of the tiny model, and the profiles.
JD="$BUILD/examples/jsonl"
rm -rf "$JD"
python3 tests/c/check_example_jsonl.py write "$JD"
for JOBS in 1 8; do
  CACHE_OPT=(--save-prefix-cache "$JD/prefix.bin")
  [ "$JOBS" = 8 ] && CACHE_OPT=(--load-prefix-cache "$JD/prefix.bin")
  "$BUILD/examples/llm_inference" --model "$TINY_DIR/model.gguf" --input "$JD/requests.jsonl" \
    --config "$JD/config.json" --jobs "$JOBS" --output "$JD/jobs$JOBS.jsonl" \
    --profile-output-file "$JD/jobs$JOBS.profile.json" "${CACHE_OPT[@]}"
done
"$BUILD/examples/llm_inference" --model "$TINY_DIR/model.gguf" --input "$JD/requests.json" \
  --output "$JD/json.out.json" >/dev/null
python3 tests/c/check_example_jsonl.py check "$JD"

step "CUDA kernels: pinned nvcc 13.0 from PyPI, cubins sm_87/sm_90/sm_110 + PTX, ptxas report, CPU emulation"
# Last, so the feature build cannot replace the library installed above. No GPU in CI: every
# kernel must compile for the shipped targets without spills in the hot ones, and the kernels'
# logic runs on the CPU under kernels/emu (real barriers, warp shuffles).
NVCC_BIN=$(scripts/install_nvcc.sh "$BUILD/nvcc")
NVCC="$NVCC_BIN" EDGELLM_REQUIRE_CUDA=1 cargo build --release --lib --features cuda -j "$CARGO_BUILD_JOBS"
python3 scripts/check_ptxas.py
kernels/emu/run.sh
EMU_SANITIZE=thread kernels/emu/run.sh

echo "scripts/test.sh: all steps passed"
