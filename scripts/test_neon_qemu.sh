#!/usr/bin/env bash
# Checks the aarch64 NEON kernels (src/ffi/simd/neon.rs) against the scalar integer reference
# (src/quant/int8.rs) on an x86-64 machine: Debian's rustc (1.63) with Debian's multi-arch aarch64
# standard library cross-compiles the standalone program tests/neon/main.rs, which mounts those
# very files, and qemu user-mode emulation runs it, once on qemu's default CPU (with the dotprod
# SDOT instruction) and once on a Cortex-A53 (without it), so both kernel paths and the run-time
# choice between them are exercised. rustup's aarch64 target is not reachable from here (see
# /work/shared/notes/aarch64-neon.md), so this program is the only aarch64 build: nothing here
# runs `cargo` for aarch64.
#
# Installs what is missing through apt (as root, or with sudo otherwise). Where apt is not
# available (not Debian/Ubuntu) it says so loudly and exits 0; any other failure exits non-zero.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BUILD=${EDGELLM_BUILD_DIR:-$ROOT/build}/neon
RUSTC=/usr/bin/rustc
QEMU=qemu-aarch64-static
SYSROOT=/usr/aarch64-linux-gnu
step() { echo; echo "==> $*"; }
t0=$(date +%s)

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# Debian's rustc (1.63 on bookworm) by default; where the newer rustc-web (which replaces it at
# /usr/bin/rustc) is already installed, its own aarch64 standard library instead of swapping it out.
RUST_PKGS=(rustc libstd-rust-dev:arm64)
if installed rustc-web; then RUST_PKGS=(rustc-web libstd-rust-web-dev:arm64); fi
PKGS=("${RUST_PKGS[@]}" gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static)

step "aarch64 toolchain (${PKGS[*]})"
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${PKGS[@]}"; do installed "$p" || missing+=("$p"); done
else
  missing=("${PKGS[@]}")
fi
if ((${#missing[@]})); then
  if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg >/dev/null 2>&1; then
    echo "############################################################################" >&2
    echo "## SKIPPED: NEON kernel tests need apt (Debian/Ubuntu) to install:" >&2
    echo "##   ${missing[*]}" >&2
    echo "## The aarch64 kernels were NOT checked on this machine." >&2
    echo "############################################################################" >&2
    exit 0
  fi
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
  echo "installing: ${missing[*]}"
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    $SUDO dpkg --add-architecture arm64
  fi
  $SUDO apt-get update -q
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "all present"
fi
t1=$(date +%s)

step "cross-compile tests/neon/main.rs for aarch64 ($($RUSTC --version))"
mkdir -p "$BUILD"
BIN="$BUILD/neon_kernel_tests"
# The program mounts src/ffi/simd/neon.rs, kinds.rs and src/quant/int8.rs: compiling it is also the
# check that the library's aarch64-only kernel file builds (with the oldest compiler we support).
"$RUSTC" --edition 2021 -O -D warnings --target aarch64-unknown-linux-gnu -C linker=aarch64-linux-gnu-gcc \
  tests/neon/main.rs -o "$BIN"
t2=$(date +%s)

step "run under qemu-aarch64, default CPU (has dotprod: SDOT and plain kernels)"
"$QEMU" -L "$SYSROOT" "$BIN" --require-sdot

step "run under qemu-aarch64 -cpu cortex-a53 (no dotprod: plain kernels, run-time fallback)"
"$QEMU" -cpu cortex-a53 -L "$SYSROOT" "$BIN"
t3=$(date +%s)

echo
echo "scripts/test_neon_qemu.sh: passed (install $((t1 - t0)) s, build $((t2 - t1)) s, run $((t3 - t2)) s)"
