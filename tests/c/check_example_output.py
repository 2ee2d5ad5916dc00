"""Checks llm_inference's JSON output for tests/c/smollm2_capital.json against the oracles.

The input holds the same chat three times with batch_size 2: entries 0 and 1 form one batch
(one generation request with two prompts), entry 2, limited to 3 tokens, a batch of its own.
The golden (tests/fixtures/real/smollm2.json, prompt "chat") holds the greedy continuation of
that chat from HF transformers and from llama.cpp on the same GGUF file; both agree that it is
"The capital of France is Paris." followed by <|im_end|>. Greedy decoding through the C API
must give the same tokens for every entry, in TensorRT Edge-LLM's output format: one flat
entry of "responses" per input request, in input order, with "output_text", "output_ids" and
"finish_reason".
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
assert len(expected) > 3, "the golden continuation is too short for the 3-token entry"

# (expected ids, finish reason, expected text or None, batch) for each input entry.
wanted = [
    (expected, "eos", "The capital of France is Paris.", 0),
    (expected, "eos", "The capital of France is Paris.", 0),
    (expected[:3], "length", None, 1),
]
errors = []
responses = out.get("responses", [])
if len(responses) != len(wanted):
    errors.append(f"{len(responses)} responses for {len(wanted)} requests")
if out.get("batch_size") != 2:
    errors.append(f"batch_size {out.get('batch_size')!r} != 2")
for i, (got, (ids, reason, text, batch)) in enumerate(zip(responses, wanted)):
    if got["output_ids"] != ids:
        errors.append(f"responses[{i}]: output ids {got['output_ids']} != oracle {ids}")
    if got["finish_reason"] != reason:
        errors.append(f"responses[{i}]: finish reason {got['finish_reason']!r} != {reason!r}")
    if text is not None and got["output_text"] != text:
        errors.append(f"responses[{i}]: text {got['output_text']!r} != {text!r}")
    if got["prompt_tokens"] != len(chat["ids"]):
        errors.append(f"responses[{i}]: prompt tokens {got['prompt_tokens']} != {len(chat['ids'])} from the HF tokenizer")
    if got["generated_tokens"] != len(ids):
        errors.append(f"responses[{i}]: generated_tokens {got['generated_tokens']} != {len(ids)}")
    if got["batch"] != batch:
        errors.append(f"responses[{i}]: batch {got['batch']} != {batch}")
if errors:
    sys.exit("llm_inference output does not match the oracles:\n  " + "\n  ".join(errors))
print(f"llm_inference matches the oracles: {responses[0]['output_text']!r} ({len(expected)} tokens, eos) "
      f"for 3 requests in 2 batches")
