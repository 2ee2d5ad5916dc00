#!/usr/bin/env bash
# Builds libedgellm in release mode and installs it under PREFIX:
#   PREFIX/lib/libedgellm.{so,a}, PREFIX/include/edgellm.{h,hpp},
#   PREFIX/lib/cmake/EdgeLLM/ (find_package(EdgeLLM)), PREFIX/lib/pkgconfig/edgellm.pc
# Usage: scripts/install.sh PREFIX        (honours CARGO_TARGET_DIR and CARGO_BUILD_JOBS)
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 PREFIX" >&2
  exit 2
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$1"
PREFIX=$(cd "$1" && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

cargo build --release --lib --manifest-path "$ROOT/Cargo.toml" -j "${CARGO_BUILD_JOBS:-2}"

case "$(uname -s)" in
  Darwin) SHARED=libedgellm.dylib ;;
  *) SHARED=libedgellm.so ;;
esac
VERSION=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n 1)
POINTER_BYTES=$(getconf LONG_BIT 2>/dev/null | awk '{print $1/8}')

install -d "$PREFIX/lib/cmake/EdgeLLM" "$PREFIX/lib/pkgconfig" "$PREFIX/include"
install -m 755 "$TARGET_DIR/release/$SHARED" "$PREFIX/lib/$SHARED"
install -m 644 "$TARGET_DIR/release/libedgellm.a" "$PREFIX/lib/libedgellm.a"
install -m 644 "$ROOT/include/edgellm.h" "$ROOT/include/edgellm.hpp" "$PREFIX/include/"
install -m 644 "$ROOT/cmake/EdgeLLMConfig.cmake" "$PREFIX/lib/cmake/EdgeLLM/"
sed -e "s/@EDGELLM_VERSION@/$VERSION/" -e "s/@EDGELLM_SIZEOF_VOID_P@/${POINTER_BYTES:-8}/" \
  "$ROOT/cmake/EdgeLLMConfigVersion.cmake.in" > "$PREFIX/lib/cmake/EdgeLLM/EdgeLLMConfigVersion.cmake"
cat > "$PREFIX/lib/pkgconfig/edgellm.pc" <<PC
prefix=$PREFIX
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: edgellm
Description: Embeddable LLM inference runtime with a C ABI
Version: $VERSION
Libs: -L\${libdir} -ledgellm
Libs.private: -lpthread -ldl -lm -lrt -lutil -lgcc_s
Cflags: -I\${includedir}
PC
echo "installed libedgellm $VERSION to $PREFIX"
