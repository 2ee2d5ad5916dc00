#!/usr/bin/env bash
# Installs a pinned CUDA 13.0 nvcc from PyPI wheels into a private venv and prints the path of a
# working nvcc on stdout (the only line this script prints when it succeeds).
#
#   scripts/install_nvcc.sh [DIR]      # DIR defaults to ${EDGELLM_BUILD_DIR:-build}/nvcc
#   NVCC=$(scripts/install_nvcc.sh) cargo build --release --features cuda
#
# Why these wheels: nvcc, ptxas, fatbinary and the crt headers (nvidia-cuda-nvcc, -crt), cicc and
# libdevice (nvidia-nvvm), cuda_runtime.h and friends (nvidia-cuda-runtime), and the CCCL headers
# nvcc.profile puts on the system include path (nvidia-cuda-cccl). They all unpack into one tree,
# site-packages/nvidia/cu13/{bin,include,nvvm,lib}, the layout of a normal toolkit, so the
# nvcc.profile shipped in bin/ finds cicc, ptxas and the headers relative to itself: no environment
# variables are needed. We add a stable symlink DIR/cuda -> that tree, usable as CUDA_PATH.
#
# Why pinned: 13.0 is the toolkit of JetPack 7 (Thor) and its cubins and PTX load on every CUDA 13
# driver; a newer nvcc would emit PTX that older 13.x drivers refuse to JIT.
#
# Idempotent: a stamp file records the pinned set; a rerun with the same pins only re-checks that
# nvcc compiles a kernel. Needs python3 (venv module) and a host C++ compiler that nvcc accepts.
set -euo pipefail

PINS=(
    "nvidia-cuda-nvcc==13.0.88"
    "nvidia-cuda-crt==13.0.88"
    "nvidia-nvvm==13.0.88"
    "nvidia-cuda-runtime==13.0.88"
    "nvidia-cuda-cccl==13.0.85"
)

die() {
    echo "install_nvcc.sh: error: $*" >&2
    exit 1
}

DIR="${1:-${EDGELLM_BUILD_DIR:-build}/nvcc}"
mkdir -p "$DIR" || die "cannot create $DIR"
DIR="$(cd "$DIR" && pwd)"
PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null || die "$PY not found (set PYTHON)"

STAMP="$DIR/.edgellm-pins"
WANT="$(printf '%s\n' "${PINS[@]}")"

if [[ ! -x "$DIR/bin/python" ]]; then
    "$PY" -m venv "$DIR" >&2 || die "python3 -m venv $DIR failed"
fi

install_wheels() {
    rm -f "$STAMP"
    "$DIR/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary :all: \
        --force-reinstall --no-deps "${PINS[@]}" >&2 || die "pip install of ${PINS[*]} failed"
}

# The wheels' tree: site-packages/nvidia/cu13 (python version in the path varies).
find_tree() {
    TREE=""
    for t in "$DIR"/lib/python3*/site-packages/nvidia/cu13; do
        if [[ -x "$t/bin/nvcc" ]]; then TREE="$t"; fi
    done
}

if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$WANT" ]]; then
    install_wheels
fi
find_tree
if [[ -z "$TREE" && -f "$STAMP" ]]; then
    # Stamp without a tree: someone deleted files by hand; install again.
    install_wheels
    find_tree
fi
[[ -n "$TREE" ]] || die "no nvidia/cu13/bin/nvcc under $DIR/lib after installing the wheels"
for f in bin/ptxas bin/fatbinary nvvm/bin/cicc include/cuda_runtime.h include/crt/host_config.h; do
    [[ -e "$TREE/$f" ]] || die "wheel tree $TREE lacks $f"
done
ln -sfn "$TREE" "$DIR/cuda"
NVCC="$DIR/cuda/bin/nvcc"

# Smoke test: one kernel to a cubin, the exact path build.rs takes.
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
cat >"$TMP/smoke.cu" <<'EOF'
extern "C" __global__ void smoke(float* x) { x[threadIdx.x] *= 2.0f; }
EOF
if ! "$NVCC" -cubin -arch=sm_90 -O3 -o "$TMP/smoke.cubin" "$TMP/smoke.cu" >"$TMP/log" 2>&1; then
    cat "$TMP/log" >&2
    die "$NVCC cannot compile a kernel (is a supported host C++ compiler on PATH?)"
fi
[[ -s "$TMP/smoke.cubin" ]] || die "$NVCC produced an empty cubin"

echo "$WANT" >"$STAMP"
echo "$NVCC"
