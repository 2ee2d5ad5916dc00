#!/usr/bin/env python3
"""Perplexity oracle: llama.cpp (through llama-cpp-python) on a GGUF model and a text file, with the
rules of llama.cpp's `llama-perplexity` tool (see src/eval/perplexity.rs): tokenize the whole text
with BOS when the vocabulary adds one, cut it into non-overlapping windows of n_ctx tokens, evaluate
each window from an empty cache with BOS in place of its first token, score the predictions of the
second half (positions n_ctx/2 .. n_ctx-2), PPL = exp(mean NLL), +/- = PPL * stderr(NLL).

Usage:
  perplexity_vs_llamacpp.py --model M.gguf [--model N.gguf] --text FILE --ctx 128 --ctx 512
        [--threads N] [--hf] [--golden OUT.json] [--edgellm target/release/edgellm]

With --hf it also computes a second oracle, transformers in float32 on the dequantized GGUF
(quantized weights, float32 activations: the arithmetic of our exact path), stored as
"hf_float32" next to the llama.cpp values.

With --golden it writes the oracle values (tests/fixtures/perplexity/golden.json); with --edgellm it
also runs `edgellm perplexity --json` on the same inputs and prints both side by side.
"""
import argparse
import json
import math
import os
import subprocess
import sys

import numpy as np


def token_nll(row, target):
    """NLL with llama.cpp's numerics: f32 exponentials of max-subtracted logits, summed in f64."""
    row = np.asarray(row, dtype=np.float32)
    mx = row.max()
    sum_exp = np.exp(row - mx, dtype=np.float32).astype(np.float64).sum()
    return float(mx) - float(row[target]) + math.log(sum_exp)


def windows_perplexity(tokens, n_ctx, add_bos, bos, window_logits):
    """llama-perplexity's rules over `tokens`; window_logits(ids) -> [len(ids), vocab] logits."""
    if len(tokens) < 2 * n_ctx:
        raise SystemExit(f"{len(tokens)} tokens, need {2 * n_ctx} for n_ctx={n_ctx}")
    first = n_ctx // 2
    n_chunks = len(tokens) // n_ctx
    nll = nll2 = 0.0
    count = 0
    running = []
    for i in range(n_chunks):
        start = i * n_ctx
        window = list(tokens[start:start + n_ctx])
        if add_bos:
            window[0] = bos
        scores = window_logits(window)
        for j in range(first, n_ctx - 1):
            v = token_nll(scores[j], tokens[start + j + 1])
            nll += v
            nll2 += v * v
            count += 1
        running.append(math.exp(nll / count))
        print(f"[{i + 1}]{running[-1]:.4f}", end=",", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    mean = nll / count
    ppl = math.exp(mean)
    var = nll2 / count - mean * mean
    err = math.sqrt(var / (count - 1)) * ppl if var > 0 else 0.0
    return {
        "n_ctx": n_ctx,
        "n_tokens": len(tokens),
        "add_bos": add_bos,
        "chunks": n_chunks,
        "scored": count,
        "ppl": ppl,
        "ppl_error": err,
        "mean_nll": mean,
        "running_ppl": running,
    }


def load_llama(model_path, n_ctx, threads):
    from llama_cpp import Llama

    return Llama(
        model_path=model_path,
        n_ctx=n_ctx,
        n_batch=n_ctx,
        n_ubatch=n_ctx,
        n_threads=threads,
        n_threads_batch=threads,
        logits_all=True,
        verbose=False,
    )


def text_tokens(llm, text):
    """llama.cpp's common_tokenize(ctx, text, add_special=true, parse_special=false)."""
    return llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)


def llama_cpp_perplexity(model_path, text, n_ctx, threads):
    llm = load_llama(model_path, n_ctx, threads)
    add_bos = bool(llm._model.add_bos_token())

    def window_logits(window):
        llm.reset()
        llm.eval(window)
        return llm.scores[:len(window)]

    return windows_perplexity(text_tokens(llm, text), n_ctx, add_bos, llm.token_bos(), window_logits)


def hf_perplexity(model_path, text, n_ctx, threads):
    """Second oracle: transformers loading the GGUF (dequantized by the gguf package) in float32
    with eager attention, i.e. quantized weights with float32 activations, the arithmetic of our
    exact path. llama.cpp instead rounds activations to 8 bits before quantized matmuls, which
    moves its perplexity by a model-dependent amount; this value shows how much."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    llm = load_llama(model_path, n_ctx, threads)  # same tokens and BOS rule as the llama.cpp run
    add_bos = bool(llm._model.add_bos_token())
    tokens, bos = text_tokens(llm, text), llm.token_bos()
    del llm
    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(os.path.abspath(model_path)), gguf_file=os.path.basename(model_path),
        dtype=torch.float32, attn_implementation="eager",
    )
    model.eval()

    def window_logits(window):
        with torch.no_grad():
            return model(torch.tensor([window])).logits[0].numpy()

    return windows_perplexity(tokens, n_ctx, add_bos, bos, window_logits)


def edgellm_perplexity(binary, model_path, text_path, n_ctx, threads):
    out = subprocess.run(
        [binary, "perplexity", "--model", model_path, "--file", text_path, "--ctx", str(n_ctx),
         "--threads", str(threads), "--json"],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--ctx", action="append", type=int)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--golden")
    ap.add_argument("--edgellm")
    ap.add_argument("--hf", action="store_true", help="also compute the transformers float32 oracle")
    args = ap.parse_args()
    ctxs = args.ctx or [512]
    with open(args.text, encoding="utf-8") as f:
        text = f.read()

    import llama_cpp

    golden = {
        "generator": "scripts/perplexity_vs_llamacpp.py",
        "llama_cpp_python_version": llama_cpp.__version__,
        "text": os.path.relpath(args.text, os.path.join(os.path.dirname(__file__), "..")),
        "rules": "llama-perplexity: non-overlapping n_ctx windows, BOS at window start, second half scored",
        "oracles": "ppl: llama.cpp via llama-cpp-python; hf_float32: transformers on the dequantized GGUF",
        "models": {},
    }
    rows = []
    for model in args.model:
        name = os.path.basename(model)
        results = []
        for n_ctx in ctxs:
            r = llama_cpp_perplexity(model, text, n_ctx, args.threads)
            row = [name, n_ctx, r["chunks"], f"{r['ppl']:.4f} +/- {r['ppl_error']:.4f}"]
            if args.hf:
                h = hf_perplexity(model, text, n_ctx, args.threads)
                r["hf_float32"] = {k: h[k] for k in ("ppl", "ppl_error", "mean_nll", "scored", "running_ppl")}
                row.append(f"{h['ppl']:.4f}")
            results.append(r)
            if args.edgellm:
                ours = edgellm_perplexity(args.edgellm, model, args.text, n_ctx, args.threads)
                rel = ours["ppl"] / r["ppl"] - 1.0
                row += [f"{ours['ppl']:.4f}", f"{100 * rel:+.3f}%"]
            rows.append(row)
        golden["models"][name] = results

    header = ["model", "n_ctx", "chunks", "llama.cpp PPL"] + (["transformers f32 PPL"] if args.hf else [])
    header += ["edgellm PPL", "diff vs llama.cpp"] if args.edgellm else []
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for r in [header] + rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(r, widths)))
    if args.golden:
        os.makedirs(os.path.dirname(os.path.abspath(args.golden)), exist_ok=True)
        with open(args.golden, "w", encoding="utf-8") as f:
            json.dump(golden, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
