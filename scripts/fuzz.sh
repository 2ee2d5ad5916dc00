#!/usr/bin/env bash
# Fuzzes the model-file loaders.
#
#   scripts/fuzz.sh [seconds]        # per target, default 30
#   FUZZ_TARGETS="gguf hf_config" scripts/fuzz.sh 60
#
# With nightly Rust and cargo-fuzz (`cargo install cargo-fuzz`) it runs every cargo-fuzz target in
# fuzz/ for the given time, seeded from tests/fixtures/fuzz_corpus/<target>/ (read only; new
# inputs go to fuzz/corpus/<target>/, crashes to fuzz/artifacts/<target>/). Without them it says
# so and runs the stable replay test instead, which drives the same entry points
# (src/fuzzing.rs) over the committed corpus plus seeded mutations.
#
# A crash input found here belongs in the committed corpus once its bug is fixed: copy it to
# tests/fixtures/fuzz_corpus/<target>/bad_<what>.<ext> so the replay test guards the fix.
set -euo pipefail

secs="${1:-30}"
case "$secs" in
  '' | *[!0-9]*) echo "usage: $0 [seconds]" >&2; exit 2 ;;
esac
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
read -r -a targets <<< "${FUZZ_TARGETS:-gguf safetensors hf_config tokenizer_json}"

if ! cargo +nightly --version >/dev/null 2>&1 || ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: nightly Rust with cargo-fuzz is not available; falling back to the stable replay test" >&2
  cd "$root"
  exec cargo test --test fuzz_corpus_replay
fi

dict_for() {
  case "$1" in
    gguf) echo "$root/fuzz/dicts/gguf.dict" ;;
    *) echo "$root/fuzz/dicts/json.dict" ;;
  esac
}

cd "$root/fuzz"
failed=()
for t in "${targets[@]}"; do
  seeds="$root/tests/fixtures/fuzz_corpus/$t"
  if [ ! -d "$seeds" ]; then
    echo "fuzz.sh: unknown target $t (no $seeds)" >&2
    exit 2
  fi
  mkdir -p "corpus/$t"
  echo "== $t: ${secs}s"
  # -timeout: one input may take at most 10 s (the replay test calls 5 s a hang);
  # -rss_limit_mb also caps single allocations, so an unchecked size fails here, not on a device.
  if ! cargo +nightly fuzz run "$t" "corpus/$t" "$seeds" -- \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -dict="$(dict_for "$t")" -print_final_stats=1; then
    failed+=("$t")
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz.sh: crashes or hangs in: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzz.sh: no crashes in ${targets[*]} (${secs}s each)"
