#!/usr/bin/env python3
"""Side-by-side speed of edgellm and llama.cpp (through llama-cpp-python) on the same GGUF files,
the same prompt token ids and the same thread count. Normally started by
benches/compare_llamacpp.sh, which builds edgellm and provides a python with llama_cpp.

For each thread count and model the two engines run alternately, repetition by repetition (the
order flips every repetition), so that a burst of load on a shared machine hits both:
  - edgellm: one `edgellm bench -r 1 --json` process per repetition (pp then tg);
  - llama.cpp: one long-lived worker process (this file with --llama-worker) that loads the model
    once and runs one repetition (pp then tg) per command read from stdin.
pp = prefill of a P-token prompt (llama.cpp: reset() then eval() of the P ids, n_batch = n_ubatch =
512); tg = N one-token decode steps after a T-token prompt, greedy (llama.cpp: argmax of the last
logits, eval() of that one token). Reported: median [min-max] tokens/s over repetitions, the ratio
of medians (with the range of per-repetition ratios), and for tg the fraction of the bandwidth
floor reached by each engine: floor = measured read bandwidth / weight bytes, the decode speed if
every weight byte were read once per token (`edgellm bench --membw`, measured before and after
the runs with the same thread count; the better one is used).

Choose --threads no larger than the number of idle cores: llama.cpp's OpenMP threads busy-wait,
and when they must share cores with other work its speed collapses (on a shared 2-core machine
we measured SmolLM2 decode fall from 140 tok/s at 1 thread to 2 tok/s at 2 threads), which makes
the ratio meaningless. The header shows the load average at the start and the end of each run.
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
RSS_SLACK = 64 << 20  # the memory target's slack, as RSS_SLACK_BYTES in bench.rs


def vm_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def bench_prompt(llm, n):
    if n == 0:
        return []
    with_special = llm.tokenize(BENCH_TEXT.encode(), add_bos=True, special=False)
    plain = llm.tokenize(BENCH_TEXT.encode(), add_bos=False, special=False)
    ids = list(with_special[: len(with_special) - len(plain)])
    while len(ids) < n:
        ids.extend(plain[: n - len(ids)])
    return ids[:n]


def llama_worker(args):
    """Child process: loads the model once, then answers one JSON line per command on stdin."""
    base_rss = vm_kib("VmRSS")
    import numpy as np
    import llama_cpp
    from llama_cpp import Llama

    p, n, tgp = args.prompt_tokens, args.gen_tokens, args.tg_prompt
    t0 = time.perf_counter()
    llm = Llama(
        model_path=args.model[0],
        n_ctx=max(p, tgp + n),
        n_batch=512,
        n_ubatch=512,
        n_threads=args.threads[0],
        n_threads_batch=args.threads[0],
        verbose=False,
    )
    load_ms = (time.perf_counter() - t0) * 1e3
    rss_after_load = vm_kib("VmRSS")
    n_vocab = llm.n_vocab()
    pp_ids, tg_ids = bench_prompt(llm, p), bench_prompt(llm, tgp)

    def greedy():
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
        return int(np.argmax(logits))

    def decode(prompt, steps):
        """Prefill `prompt`, then `steps` one-token evals; returns the seconds of the steps."""
        llm.reset()
        llm.eval(prompt)
        t = time.perf_counter()
        for _ in range(steps):
            llm.eval([greedy()])
        return time.perf_counter() - t

    decode((tg_ids or pp_ids)[:8], 2)  # warm-up, as edgellm bench does
    print(json.dumps({
        "engine": f"llama.cpp (llama-cpp-python {llama_cpp.__version__})",
        "load_ms": load_ms,
        "rss_after_load_bytes": rss_after_load * 1024,
        "python_rss_bytes": base_rss * 1024,
        "prompt_ids_head": (pp_ids or tg_ids)[:8],
    }), flush=True)
    for line in sys.stdin:
        if line.strip() != "rep":
            break
        out = {}
        if p:
            llm.reset()
            t = time.perf_counter()
            llm.eval(pp_ids)
            out["pp"] = p / (time.perf_counter() - t)
        if n:
            out["tg"] = n / decode(tg_ids, n)
        out["peak_rss_bytes"] = vm_kib("VmHWM") * 1024
        print(json.dumps(out), flush=True)


def run_json(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"failed ({out.returncode}): {' '.join(cmd)}")
    return json.loads(out.stdout.strip().splitlines()[-1])


class Worker:
    """The llama.cpp side of one (model, threads) pair."""

    def __init__(self, args, model, threads):
        cmd = [sys.executable, os.path.abspath(__file__), "--llama-worker", "--model", model,
               "--threads", str(threads), "--prompt-tokens", str(args.prompt_tokens),
               "--gen-tokens", str(args.gen_tokens), "--tg-prompt", str(args.tg_prompt)]
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.ready = self._read()

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            rc = self.proc.wait()
            raise SystemExit(f"llama.cpp worker died (status {rc}): {' '.join(self.cmd)}\n"
                             "if it crashed in ggml, reinstall llama-cpp-python with AMX disabled "
                             "(benches/compare_llamacpp.sh does this when its smoke test fails)")
        return json.loads(line)

    def rep(self):
        self.proc.stdin.write("rep\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self):
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        self.proc.wait()


def stats(v):
    s = sorted(v)
    n = len(s)
    if n == 0:
        return None
    med = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    return {"min": s[0], "median": med, "max": s[-1]}


def fmt_stats(s):
    return f"{s['median']:.1f} [{s['min']:.1f}-{s['max']:.1f}]" if s else "n/a"


def mib(b):
    return f"{b / 2**20:.1f} MiB" if b is not None else "n/a"


def membw(args, threads):
    r = run_json([args.edgellm, "bench", "--membw", "-t", str(threads), "--membw-mib", str(args.membw_mib), "--json"])
    return r["membw_bytes_per_s"]


def bench_pair(args, model, threads):
    """Alternates edgellm and llama.cpp repetitions on one model; returns every measurement."""
    ours_cmd = [args.edgellm, "bench", "-m", model, "-p", str(args.prompt_tokens), "-n", str(args.gen_tokens),
                "--tg-prompt", str(args.tg_prompt), "-t", str(threads), "-r", "1", "--json"]
    worker = Worker(args, model, threads)
    ours, theirs = [], []
    try:
        for rep in range(args.reps):
            print(f"  {os.path.basename(model)} threads {threads} rep {rep + 1}/{args.reps}", file=sys.stderr, flush=True)
            if rep % 2 == 0:
                ours.append(run_json(ours_cmd))
                theirs.append(worker.rep())
            else:
                theirs.append(worker.rep())
                ours.append(run_json(ours_cmd))
    finally:
        worker.close()
    if ours[0]["prompt_ids_head"] != worker.ready["prompt_ids_head"]:
        print(f"warning: prompt ids differ: edgellm {ours[0]['prompt_ids_head']} vs llama.cpp "
              f"{worker.ready['prompt_ids_head']}", file=sys.stderr)
    return {"model": os.path.basename(model), "threads": threads, "edgellm": ours,
            "llama_cpp": {"ready": worker.ready, "reps": theirs}}


def summarize(r, bw):
    """Table rows (speed and memory) for one bench_pair result."""
    ours, theirs = r["edgellm"], r["llama_cpp"]["reps"]
    weight_bytes = ours[0]["weight_bytes"]
    floor = bw / weight_bytes
    speed = []
    for test, key, size in (("pp", "pp_tokens_per_s", "prompt_tokens"), ("tg", "tg_tokens_per_s", "gen_tokens")):
        o = [x[key][0] for x in ours if x[key]]
        t = [x[test] for x in theirs if test in x]
        if not o or not t:
            continue
        so, st = stats(o), stats(t)
        ratios = stats([a / b for a, b in zip(o, t)])
        row = {"model": r["model"], "threads": r["threads"], "test": f"{test}{ours[0][size]}",
               "edgellm": so, "llama_cpp": st, "ratio": so["median"] / st["median"], "paired_ratio": ratios}
        if test == "tg":
            row.update(floor_tps=floor, edgellm_floor=so["median"] / floor, llama_cpp_floor=st["median"] / floor)
        speed.append(row)
    rss = [x["rss_after_load_bytes"] for x in ours if x["rss_after_load_bytes"] is not None]
    mem = {
        "model": r["model"], "threads": r["threads"],
        "load_first_ms": stats([x["load_first_ms"] for x in ours]),
        "load_warm_ms": stats([x["load_warm_ms"] for x in ours]),
        "rss_after_load_max": max(rss) if rss else None,
        "memory_target": ours[0]["memory_target_bytes"],
        "file_bytes": ours[0]["file_bytes"], "kv_bytes": ours[0]["kv_bytes"],
        "peak_rss_max": max(x["peak_rss_bytes"] or 0 for x in ours),
        "llama_load_ms": r["llama_cpp"]["ready"]["load_ms"],
        "llama_rss_after_load": r["llama_cpp"]["ready"]["rss_after_load_bytes"],
        "llama_python_rss": r["llama_cpp"]["ready"]["python_rss_bytes"],
    }
    return speed, mem


def print_table(header, rows):
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(" --- " for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(str(x) for x in row) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--edgellm", default="target/release/edgellm")
    ap.add_argument("--model", action="append", required=True, help="GGUF file (repeat for several)")
    ap.add_argument("--threads", default=str(os.cpu_count() or 1), help="thread counts, e.g. 1,2")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--prompt-tokens", "-p", type=int, default=512)
    ap.add_argument("--gen-tokens", "-n", type=int, default=128)
    ap.add_argument("--tg-prompt", type=int, default=128)
    ap.add_argument("--membw-mib", type=int, default=1024)
    ap.add_argument("--json-out", help="also write every measurement to this JSON file")
    ap.add_argument("--llama-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.threads = [int(t) for t in str(args.threads).split(",") if t.strip()]
    if args.llama_worker:
        return llama_worker(args)
    if args.reps < 1 or not args.threads or min(args.threads) < 1:
        raise SystemExit("--reps and every --threads value must be positive")

    runs = []
    for threads in args.threads:
        load0 = os.getloadavg()[0]
        bw0 = membw(args, threads)
        pairs = [bench_pair(args, m, threads) for m in args.model]
        bw1 = membw(args, threads)
        runs.append({"threads": threads, "load_start": load0, "load_end": os.getloadavg()[0],
                     "membw_bytes_per_s": [bw0, bw1], "pairs": pairs})

    engine = runs[0]["pairs"][0]["llama_cpp"]["ready"]["engine"]
    ours0 = runs[0]["pairs"][0]["edgellm"][0]
    print(f"\nedgellm ({ours0['backend']}) vs {engine}; {args.reps} reps alternated; "
          f"pp{args.prompt_tokens}, tg{args.gen_tokens} after a {args.tg_prompt}-token prompt; "
          f"{os.cpu_count()} cores")
    speed_rows, mem_rows, summary = [], [], []
    for run in runs:
        bw = max(run["membw_bytes_per_s"])
        print(f"threads {run['threads']}: load average {run['load_start']:.2f} at start, {run['load_end']:.2f} at end; "
              f"read bandwidth {run['membw_bytes_per_s'][0] / 1e9:.2f} / {run['membw_bytes_per_s'][1] / 1e9:.2f} GB/s "
              f"(before / after)")
        for pair in run["pairs"]:
            speed, mem = summarize(pair, bw)
            summary.append({"speed": speed, "memory": mem, "membw_bytes_per_s": bw})
            for s in speed:
                floor = (f"{s['floor_tps']:.0f}", f"{100 * s['edgellm_floor']:.1f}%", f"{100 * s['llama_cpp_floor']:.1f}%") \
                    if "floor_tps" in s else ("", "", "")
                pr = s["paired_ratio"]
                speed_rows.append([s["model"], s["threads"], s["test"], fmt_stats(s["edgellm"]), fmt_stats(s["llama_cpp"]),
                                   f"{s['ratio']:.2f} [{pr['min']:.2f}-{pr['max']:.2f}]", *floor])
            ok = mem["rss_after_load_max"] is not None and mem["rss_after_load_max"] <= mem["memory_target"]
            mem_rows.append([mem["model"], mem["threads"],
                             f"{mem['load_first_ms']['median']:.0f} / {mem['load_warm_ms']['median']:.0f}",
                             mib(mem["rss_after_load_max"]),
                             f"{mib(mem['memory_target'])} ({mib(mem['file_bytes'])} + KV {mib(mem['kv_bytes'])} + 64 MiB)",
                             "yes" if ok else "NO", mib(mem["peak_rss_max"]),
                             f"{mem['llama_load_ms']:.0f}",
                             f"{mib(mem['llama_rss_after_load'])} (python {mib(mem['llama_python_rss'])})"])
    print()
    print_table(["model", "threads", "test", "edgellm t/s median [min-max]", "llama.cpp t/s median [min-max]",
                 "ratio [per-rep range]", "floor t/s", "edgellm % floor", "llama.cpp % floor"], speed_rows)
    print()
    print_table(["model", "threads", "edgellm load ms first / warm", "edgellm RSS after load", "target",
                 "within", "edgellm peak RSS", "llama.cpp load ms", "llama.cpp RSS after load"], mem_rows)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"args": vars(args), "runs": runs, "summary": summary}, f, indent=1)


if __name__ == "__main__":
    main()
