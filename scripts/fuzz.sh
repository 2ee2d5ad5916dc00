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
for t in "${targets[@]}"; do
  if [ ! -d "$root/tests/fixtures/fuzz_corpus/$t" ]; then
    echo "fuzz.sh: unknown target $t (no tests/fixtures/fuzz_corpus/$t)" >&2
    exit 2
  fi
done
# One build for all targets (AddressSanitizer + coverage), then the binaries are run directly.
cargo +nightly fuzz build
bin_dir="$root/fuzz/target/$(rustc +nightly -vV | sed -n 's/^host: //p')/release"
mkdir -p logs

failed=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  stamp="logs/$t.stamp"
  touch "$stamp"
  echo "== $t: ${secs}s (log: fuzz/logs/$t.log)"
  # Fork mode keeps fuzzing after a crash, so one shallow known bug does not hide the rest.
  # -timeout: one input may take at most 10 s (the replay test calls 5 s a hang);
  # -rss_limit_mb also caps single allocations, so an unchecked size shows up here.
  "$bin_dir/$t" "corpus/$t" "$root/tests/fixtures/fuzz_corpus/$t" \
    -artifact_prefix="artifacts/$t/" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 -dict="$(dict_for "$t")" \
    >"logs/$t.log" 2>&1 || true
  grep -E '^#[0-9]+: cov' "logs/$t.log" | tail -n 1 || true
  found=$(find "artifacts/$t" -type f -newer "$stamp" | sort)
  if [ -n "$found" ]; then
    failed+=("$t")
    echo "   new crash/hang/oom inputs, by where they fail:"
    # Re-run each input once to name the panic location (or the kind of failure).
    for f in $found; do
      out=$(timeout 30 "$bin_dir/$t" -runs=1 -rss_limit_mb=2048 "$f" 2>&1 || true)
      why=$(grep -m 1 -oE 'panicked at [^ ]+|out-of-memory[^)]*\)|ERROR: AddressSanitizer: [a-z-]+|ERROR: libFuzzer: [a-z-]+' <<<"$out" || true)
      echo "$(basename "$f" | cut -d- -f1): ${why:-no failure within 30 s on re-run (timeout?)}"
    done | sort | uniq -c | sed 's/^/   /'
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz.sh: failures in: ${failed[*]} (inputs under fuzz/artifacts/<target>/)" >&2
  exit 1
fi
echo "fuzz.sh: no crashes in ${targets[*]} (${secs}s each)"
