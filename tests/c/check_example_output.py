"""Checks llm_inference's JSON output for tests/c/smollm2_capital.json against the oracles.

The golden (tests/fixtures/real/smollm2.json, prompt "chat") holds the greedy continuation of
the same chat from HF transformers and from llama.cpp on the same GGUF file; both agree that it
is "The capital of France is Paris." followed by <|im_end|>. Greedy decoding through the C API
must give the same tokens and stop on that end-of-generation token.
Usage: check_example_output.py OUTPUT.json GOLDEN.json
"""
import json
import sys

out = json.load(open(sys.argv[1]))
golden = json.load(open(sys.argv[2]))
chat = next(p for p in golden["prompts"] if p["name"] == "chat")
EOS = 2  # <|im_end|> in SmolLM2's vocabulary
a, b = chat["a_greedy"], chat["b_greedy"]
expected = a[: a.index(EOS)]
assert expected == b[: b.index(EOS)], "the two oracles disagree; the golden cannot be used"

got = out["responses"][0]["outputs"][0]
errors = []
if got["token_ids"] != expected:
    errors.append(f"token ids {got['token_ids']} != oracle {expected}")
if got["finish_reason"] != "eos":
    errors.append(f"finish reason {got['finish_reason']!r} != 'eos'")
if got["text"] != "The capital of France is Paris.":
    errors.append(f"text {got['text']!r} != 'The capital of France is Paris.'")
if got["prompt_tokens"] != len(chat["ids"]):
    errors.append(f"prompt tokens {got['prompt_tokens']} != {len(chat['ids'])} from the HF tokenizer")
if errors:
    sys.exit("llm_inference output does not match the oracles:\n  " + "\n  ".join(errors))
print(f"llm_inference matches the oracles: {got['text']!r} ({len(expected)} tokens, eos)")
