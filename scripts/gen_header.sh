#!/usr/bin/env bash
# Regenerates include/edgellm.h from src/ffi with cbindgen (via the drift test in bless mode).
set -euo pipefail
cd "$(dirname "$0")/.."
EDGELLM_BLESS_HEADER=1 cargo test --release -j "${CARGO_BUILD_JOBS:-2}" --test ffi_header_up_to_date
echo "include/edgellm.h regenerated"
