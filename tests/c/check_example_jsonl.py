"""Writes the inputs of llm_inference's JSONL test and checks what it produced (stdlib only).

The test serves JSONL request lines on the tiny Llama fixture (tests/fixtures/tiny/llama) with
the PEFT LoRA fixtures tests/fixtures/lora/a and /b, named in the --config file's
"available_lora_weights" (paths relative to that file). The lines mix adapters ("a", "b", none
and the runtime default), ask for "save_system_prompt_kv_cache", and include two bad lines: one
that is not JSON and one naming an adapter that is not loaded (it fails only when served).

  check_example_jsonl.py write DIR
      writes DIR/requests.jsonl, DIR/config.json and DIR/requests.json (the good lines as one
      TensorRT Edge-LLM JSON file with batch_size 1, for the JSON mode).
  check_example_jsonl.py check DIR
      checks DIR/{jobs1,jobs8}.jsonl and their profiles DIR/{jobs1,jobs8}.profile.json, and
      DIR/json.out.json (JSON mode) against each other and against the oracles below.

What is checked, and against what:
  * one output line per input line, in input order ("batch" = line index); the bad lines are
    error objects and the job went on past them;
  * greedy outputs with --jobs 8 (lines batched together by the runtime's continuous batching)
    equal those with --jobs 1 (every line alone), and those of the JSON mode;
  * the line holding the tiny model's golden prompt, without adapter, generates exactly the
    greedy continuation HF transformers produced (tests/fixtures/tiny/llama/golden.json);
  * the adapters change the output (same chat, adapter a vs b vs none differ), so they were used;
  * lines whose system prompt was cached (with their adapter) report cached_prompt_tokens > 0 in
    the profile, the profile parses and has every runtime metric, with the cache hits counted;
  * the prefix cache saved by the --jobs 1 run is loaded by the --jobs 8 run.
How many lines the runtime decoded together (mean_batch) depends on thread timing, so it is
printed, not checked.
Usage: check_example_jsonl.py (write|check) DIR
"""
import json
import math
import os
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
TINY_DIR = os.environ.get("EDGELLM_TINY_DIR", os.path.join(ROOT, "tests/fixtures/tiny/llama"))
GOLDEN = json.load(open(os.path.join(TINY_DIR, "golden.json")))
SYSTEM = ("You are a careful assistant who answers questions about the sea, ships, harbours and "
          "the weather over the water in short and friendly sentences.")
MAX_TOKENS = 10  # config default; the golden line asks for the golden's length


def chat(user, system=True):
    messages = [{"role": "system", "content": SYSTEM}] if system else []
    return messages + [{"role": "user", "content": user}]


# (line text, kind): kind "ok", "error", "golden"; lines as a user writes them.
LINES = [
    (json.dumps({"messages": chat("Tell me about waves."), "lora_name": "a", "save_system_prompt_kv_cache": True}), "ok"),
    (json.dumps({"messages": chat("What is a harbour?"), "lora_name": "a"}), "ok"),
    (json.dumps({"messages": chat("What is a harbour?"), "lora_name": "b", "save_system_prompt_kv_cache": True}), "ok"),
    ('{"messages": [{"role": "user", "content": "unterminated"}', "error"),
    (json.dumps({"messages": chat("What is a harbour?"), "lora_name": ""}), "ok"),
    (json.dumps({"token_ids": GOLDEN["prompt_ids"], "lora_name": "", "max_generate_length": len(GOLDEN["greedy"])}), "golden"),
    (json.dumps({"prompt": "The sea is", "lora_name": "b", "lora_scale": 0.5}), "ok"),
    (json.dumps({"messages": chat("Hello", system=False), "lora_name": "not_loaded"}), "error"),
    (json.dumps({"messages": chat("Why is fog grey?"), "lora_name": "b"}), "ok"),
    (json.dumps({"messages": chat("Name a ship.")}), "ok"),
]
# Lines whose (system prompt, adapter) some line asked to cache: a with lines 0-1, b with 2 and 8.
CACHED = [0, 1, 2, 8]
# The same chat with adapter a, b and none: the adapters must make the outputs differ.
SAME_CHAT = [1, 2, 4]
METRICS = ["kv_total_blocks", "kv_used_blocks", "kv_cached_blocks", "weight_bytes", "kv_total_bytes",
           "kv_used_bytes", "lora_bytes", "sequences", "generated_tokens", "prompt_tokens",
           "reused_prompt_tokens", "cache_hits", "cache_lookups", "steps", "mean_batch", "scratch_bytes"]


def write(d):
    os.makedirs(d, exist_ok=True)
    rel = {n: os.path.relpath(os.path.join(ROOT, "tests/fixtures/lora", n), d) for n in ("a", "b")}
    config = {"temperature": 0.0, "max_generate_length": MAX_TOKENS, "ignore_eos": True,
              "available_lora_weights": rel}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        f.writelines(text + "\n" for text, _ in LINES)
    good = [json.loads(text) for text, kind in LINES if kind != "error"]
    with open(os.path.join(d, "requests.json"), "w") as f:
        json.dump(dict(config, batch_size=1, requests=good), f, indent=1)


def check(d):
    errors = []
    err = errors.append
    runs = {}
    for name in ("jobs1", "jobs8"):
        lines = open(os.path.join(d, name + ".jsonl")).read().splitlines()
        if len(lines) != len(LINES):
            err(f"{name}: {len(lines)} output lines for {len(LINES)} input lines")
        out = [json.loads(line) for line in lines]
        profile = json.load(open(os.path.join(d, name + ".profile.json")))
        runs[name] = (out, profile)
        for i, ((_, kind), got) in enumerate(zip(LINES, out)):
            if got.get("batch") != i:
                err(f"{name} line {i}: batch {got.get('batch')!r}, lines out of order")
            if kind == "error":
                if "error" not in got or "output_ids" in got:
                    err(f"{name} line {i}: a bad line must give an error object, got {got}")
                continue
            if "error" in got:
                err(f"{name} line {i}: unexpected error {got['error']!r}")
                continue
            want = len(GOLDEN["greedy"]) if kind == "golden" else MAX_TOKENS
            if len(got["output_ids"]) != want or got["generated_tokens"] != want:
                err(f"{name} line {i}: {len(got['output_ids'])} tokens, want {want} (ignore_eos)")
            if kind == "golden" and got["output_ids"] != GOLDEN["greedy"]:
                err(f"{name} line {i}: {got['output_ids']} != transformers' greedy {GOLDEN['greedy']}")
        records = profile.get("requests", [])
        if [r.get("index") for r in records] != list(range(len(LINES))):
            err(f"{name}: profile requests {[r.get('index') for r in records]} are not one per line in order")
        for i in CACHED:
            r = records[i] if i < len(records) else {}
            if not r.get("cached_prompt_tokens", 0) > 0:
                err(f"{name}: line {i} used a cached system prompt but reports {r.get('cached_prompt_tokens')!r} cached tokens")
            elif not r["cached_prompt_tokens"] < r["prompt_tokens"]:
                err(f"{name}: line {i}: {r['cached_prompt_tokens']} cached of {r['prompt_tokens']} prompt tokens")
        for i, r in enumerate(records):
            if LINES[i][1] == "error":
                if "error" not in r:
                    err(f"{name}: profile of bad line {i} has no error")
                continue
            tpot = r.get("time_per_output_token_ms")
            if not (isinstance(tpot, (int, float)) and tpot > 0 and r.get("ttft_ms", -1) >= 0):
                err(f"{name}: profile line {i}: bad timings {r}")
            elif not math.isclose(tpot, 1000.0 / r["decode_tokens_per_second"], rel_tol=0.01, abs_tol=0.002):
                err(f"{name}: profile line {i}: time per output token {tpot} != 1000 / {r['decode_tokens_per_second']}")
        caches = profile.get("system_prompt_cache", [])
        if sorted((c["lora_name"], c["cached_tokens"] > 0) for c in caches) != [("a", True), ("b", True)]:
            err(f"{name}: system prompts cached {caches}, want one with a and one with b")
        m = profile.get("runtime_metrics", {})
        missing = [k for k in METRICS if k not in m]
        if missing:
            err(f"{name}: runtime_metrics lacks {missing}")
        elif not (m["weight_bytes"] > 0 and m["lora_bytes"] > 0 and 0 < m["kv_used_bytes"] <= m["kv_total_bytes"]
                  and m["cache_hits"] >= len(CACHED) and m["reused_prompt_tokens"] >= sum(records[i]["cached_prompt_tokens"] for i in CACHED)
                  and m["kv_cached_blocks"] > 0):
            err(f"{name}: implausible runtime metrics {m}")
        if profile.get("summary", {}).get("errors") != sum(k == "error" for _, k in LINES):
            err(f"{name}: summary {profile.get('summary')} does not count the bad lines")

    (one, p1), (eight, p8) = runs["jobs1"], runs["jobs8"]
    if p1.get("jobs") != 1 or p8.get("jobs") != 8:
        err(f"jobs {p1.get('jobs')} and {p8.get('jobs')}, want 1 and 8")
    if not (p1.get("prefix_cache_file", {}).get("saved_blocks") or 0) > 0:
        err(f"the --jobs 1 run saved no prefix-cache blocks: {p1.get('prefix_cache_file')}")
    if not (p8.get("prefix_cache_file", {}).get("loaded_blocks") or 0) > 0:
        err(f"the --jobs 8 run loaded no prefix-cache blocks: {p8.get('prefix_cache_file')}")
    for i, (a, b) in enumerate(zip(one, eight)):
        if a.get("output_ids") != b.get("output_ids") or a.get("output_text") != b.get("output_text"):
            err(f"line {i}: --jobs 8 gave {b.get('output_ids')}, alone it gives {a.get('output_ids')}")
    outs = [tuple(one[i].get("output_ids", [])) for i in SAME_CHAT]
    if len(set(outs)) != len(outs):
        err(f"lines {SAME_CHAT} (same chat with adapter a, b, none) do not all differ: {outs}")
    json_out = json.load(open(os.path.join(d, "json.out.json")))["responses"]
    good = [o for (_, kind), o in zip(LINES, one) if kind != "error"]
    if [r["output_ids"] for r in json_out] != [o.get("output_ids") for o in good]:
        err("JSON mode with available_lora_weights gives other outputs than JSONL mode")
    if errors:
        sys.exit("llm_inference JSONL check failed:\n  " + "\n  ".join(errors))
    print(f"llm_inference JSONL: {len(LINES)} lines in order, 2 error objects, --jobs 8 == --jobs 1 == JSON mode, "
          f"golden line == transformers, system-prompt cache hits on lines {CACHED}, "
          f"mean batch {p8['runtime_metrics']['mean_batch']:.2f}")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("write", "check"):
        sys.exit(__doc__)
    (write if sys.argv[1] == "write" else check)(sys.argv[2])
