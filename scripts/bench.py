#!/usr/bin/env python3
"""Side-by-side benchmark: `edgellm bench` and llama.cpp (through llama-cpp-python) on the same GGUF
models, the same prompt token ids, the same prompt and generation lengths and the same thread
count, in one run. Prints a table with prefill and decode tokens/s, TTFT, peak RSS and the ratio
ours / llama.cpp. Normally started by scripts/bench.sh.

Choose --threads no larger than the number of idle cores: llama.cpp's OpenMP threads busy-wait,
and when they must share cores with other work its speed collapses (on a shared 2-core machine
we measured SmolLM2 decode fall from 140 tok/s at 1 thread to 2 tok/s at 2 threads), which makes
the ratio meaningless. The table header shows the load average at the start of the run.

The llama.cpp side runs in its own child process so that its peak RSS is its own; that number
includes the Python interpreter, whose own footprint (measured before llama_cpp is imported) is
shown beside it.
"""
import argparse
import json
import os
import subprocess
import sys
import time

# Same text and rule as BENCH_TEXT / bench_prompt in src/bin/edgellm/bench.rs.
BENCH_TEXT = (
    "The quick brown fox jumps over the lazy dog while the river runs "
    "quietly past the old mill, and the baker opens the shop before sunrise to sell warm bread."
)


def rss_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def bench_prompt(llm, n):
    with_special = llm.tokenize(BENCH_TEXT.encode(), add_bos=True, special=False)
    plain = llm.tokenize(BENCH_TEXT.encode(), add_bos=False, special=False)
    ids = list(with_special[: len(with_special) - len(plain)])
    while len(ids) < n:
        ids.extend(plain[: n - len(ids)])
    return ids[:n]


def llama_worker(args):
    """Runs in the child process: loads the model with llama.cpp and prints one JSON line."""
    base_rss = rss_kib("VmRSS")
    import numpy as np
    from llama_cpp import Llama
    import llama_cpp

    n_prompt, n_gen = args.prompt_tokens, args.gen_tokens
    t0 = time.perf_counter()
    llm = Llama(
        model_path=args.model[0],
        n_ctx=n_prompt + n_gen + 16,
        n_batch=max(512, n_prompt),
        n_ubatch=max(512, n_prompt),
        n_threads=args.threads,
        n_threads_batch=args.threads,
        verbose=False,
    )
    load_ms = (time.perf_counter() - t0) * 1e3
    prompt = bench_prompt(llm, n_prompt)

    def run(ids, gen):
        llm.reset()
        t = time.perf_counter()
        llm.eval(ids)
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        t_first = time.perf_counter()
        for _ in range(gen - 1):
            llm.eval([tok])
            tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        t_end = time.perf_counter()
        ttft = t_first - t
        return {
            "ttft_ms": ttft * 1e3,
            "prefill_tokens_per_s": len(ids) / ttft,
            "decode_tokens_per_s": (gen - 1) / (t_end - t_first) if gen > 1 else float("nan"),
        }

    run(prompt[:8], 2)  # warm-up, as edgellm bench does
    runs = [run(prompt, n_gen) for _ in range(args.reps)]

    def med(key):
        v = sorted(r[key] for r in runs)
        n = len(v)
        return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2

    print(json.dumps({
        "engine": f"llama.cpp (llama-cpp-python {llama_cpp.__version__})",
        "model": args.model[0],
        "threads": args.threads,
        "prompt_tokens": n_prompt,
        "gen_tokens": n_gen,
        "reps": args.reps,
        "load_ms": load_ms,
        "prefill_tokens_per_s": med("prefill_tokens_per_s"),
        "decode_tokens_per_s": med("decode_tokens_per_s"),
        "ttft_ms": med("ttft_ms"),
        "peak_rss_bytes": rss_kib("VmHWM") * 1024,
        "python_rss_bytes": base_rss * 1024,
        "prompt_ids_head": prompt[:8],
    }))


def run_json(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def mib(b):
    return f"{b / 2**20:.0f} MiB" if b else "n/a"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--edgellm", default="target/release/edgellm")
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json-out", help="also write all measurements to this JSON file")
    ap.add_argument("--llama-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.llama_worker:
        return llama_worker(args)

    common = ["--threads", str(args.threads), "--prompt-tokens", str(args.prompt_tokens),
              "--gen-tokens", str(args.gen_tokens), "--reps", str(args.reps)]
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    results = []
    for model in args.model:
        name = os.path.basename(model)
        print(f"benchmarking {name} ...", file=sys.stderr, flush=True)
        ours = run_json([args.edgellm, "bench", "--model", model, "--json"] + common)
        theirs = run_json([sys.executable, os.path.abspath(__file__), "--llama-worker", "--model", model] + common)
        results.append({"model": name, "edgellm": ours, "llama_cpp": theirs})

    header = ["model", "engine", "prefill tok/s", "decode tok/s", "TTFT ms", "peak RSS", "prefill ratio", "decode ratio"]
    rows = []
    for r in results:
        o, t = r["edgellm"], r["llama_cpp"]
        rows.append([r["model"], "edgellm", f"{o['prefill_tokens_per_s']:.1f}", f"{o['decode_tokens_per_s']:.1f}",
                     f"{o['ttft_ms']:.1f}", mib(o.get("peak_rss_bytes")),
                     f"{o['prefill_tokens_per_s'] / t['prefill_tokens_per_s']:.2f}x",
                     f"{o['decode_tokens_per_s'] / t['decode_tokens_per_s']:.2f}x"])
        rows.append(["", "llama.cpp", f"{t['prefill_tokens_per_s']:.1f}", f"{t['decode_tokens_per_s']:.1f}",
                     f"{t['ttft_ms']:.1f}", f"{mib(t['peak_rss_bytes'])} (python {mib(t['python_rss_bytes'])})", "", ""])
    print(f"threads {args.threads} of {os.cpu_count()} cores (load average {load_before:.2f} at start), "
          f"prompt {args.prompt_tokens} tokens, generate {args.gen_tokens} tokens, "
          f"median of {args.reps} reps; ratio = edgellm / llama.cpp ({results[0]['llama_cpp']['engine']})")
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in [header] + rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"threads": args.threads, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
