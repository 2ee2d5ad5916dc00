//! `edgellm serve-bench`: the serving features measured on one model, as a table.
//!
//! - TTFT of a chat whose system prompt (about `--system-tokens` tokens) is cached with
//!   `Runtime::cache_system_prompt`, against the same chat with a system prompt nothing shares
//!   (a distinct first word per repetition), medians over `--reps`.
//! - Zero copy: the KV blocks in use while `--streams` requests share the cached system prompt,
//!   against what one private copy per request would take.
//! - Throughput: generated tokens per second of one stream alone and of `--streams` concurrent
//!   streams (continuous batching), `--gen` tokens each.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use edgellm::kv_cache::BLOCK_TOKENS;
use edgellm::runtime::{GenerationRequest, Message, PromptInput, StreamEvent};

use crate::args::{self, Spec};
use crate::{CliError, CliResult};

const SPEC: Spec = Spec { flags: &["json"], options: &["system-tokens", "streams", "gen", "reps"], shared: crate::MODEL_OPTIONS };

const PARAGRAPH: &str = "You are the assistant of a small museum of river boats. Visitors ask about opening \
hours, the history of each boat, tickets, the cafe, and the workshop where volunteers restore old hulls. \
Answer politely, in two or three sentences, and suggest the guided tour when a question is about history. ";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn chat(system: &str, user: &str, max: usize) -> GenerationRequest {
    GenerationRequest {
        prompts: vec![PromptInput::Messages(vec![
            Message { role: "system".into(), content: system.into() },
            Message { role: "user".into(), content: user.into() },
        ])],
        max_generate_length: max,
        ignore_eos: true,
        ..Default::default()
    }
}

/// Runs the serving benchmark.
pub fn run(argv: &[String]) -> CliResult {
    let p = args::parse(argv, &SPEC)?;
    let system_tokens: usize = p.parsed_or("system-tokens", 1000)?;
    let streams: usize = p.parsed_or("streams", 8)?;
    let gen: usize = p.parsed_or("gen", 64)?;
    let reps: usize = p.parsed_or("reps", 3)?;
    if streams == 0 || gen == 0 || reps == 0 {
        return Err(CliError::Usage("--streams, --gen and --reps must be positive".into()));
    }
    let mut params = crate::runtime_params(&p, (system_tokens + 2 * gen + 256).max(2048))?;
    params.max_batch = streams;
    let rt = Arc::new(crate::load(&p, &params)?);
    let mut system = String::new();
    while rt.tokenize(&system, false)?.len() < system_tokens {
        system.push_str(PARAGRAPH);
    }
    let sys_len = rt.tokenize(&system, false)?.len();

    // TTFT: uncached (a different first word each time, so no block is shared), then cached.
    let mut cold = Vec::new();
    for r in 0..reps {
        let out = rt.handle_request(&chat(&format!("Session {r}. {system}"), "When do you open?", 1), None)?.remove(0);
        cold.push(out.ttft_ms);
    }
    let t0 = Instant::now();
    let cached = rt.cache_system_prompt(&system, None, None)?;
    let cache_ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut warm = Vec::new();
    let mut reused = 0;
    for r in 0..reps {
        let out = rt.handle_request(&chat(&system, &format!("Question {r}: is the cafe open?"), 1), None)?.remove(0);
        reused = out.cached_prompt_tokens;
        warm.push(out.ttft_ms);
    }
    let (cold, warm) = (median(cold), median(warm));

    // Zero copy: `streams` requests sharing the cached prompt at once.
    let shared_blocks = cached / BLOCK_TOKENS;
    // Blocks already held (the cached prompt, and prefixes cached by the TTFT runs) before the
    // requests start; what they add on top is their own blocks only.
    let before = rt.metrics().kv_used_blocks;
    let peak = Arc::new(AtomicUsize::new(before));
    let mut own = 0;
    let threads: Vec<_> = (0..streams)
        .map(|i| {
            let (rt, peak, system) = (Arc::clone(&rt), Arc::clone(&peak), system.clone());
            std::thread::spawn(move || {
                let mut cb = |_: StreamEvent<'_>| {
                    peak.fetch_max(rt.metrics().kv_used_blocks, Ordering::Relaxed);
                    true
                };
                rt.handle_request(&chat(&system, &format!("Visitor {i} asks about boat number {i}."), 16), Some(&mut cb))
            })
        })
        .collect();
    for t in threads {
        let out = t.join().map_err(|_| CliError::Failed("a request thread panicked".into()))??.remove(0);
        own += (out.prompt_ids.len() + 16).div_ceil(BLOCK_TOKENS) - shared_blocks;
    }
    let added = peak.load(Ordering::Relaxed) - before;

    // Throughput: one stream, then `streams` concurrent ones.
    let one = |i: usize| GenerationRequest {
        prompts: vec![PromptInput::Text(format!("Stream {i}: tell me a long story about the river boats."))],
        max_generate_length: gen,
        ignore_eos: true,
        ..Default::default()
    };
    let t0 = Instant::now();
    let n1 = rt.handle_request(&one(1000), None)?.remove(0).token_ids.len();
    let single = n1 as f64 / t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let threads: Vec<_> = (0..streams)
        .map(|i| {
            let rt = Arc::clone(&rt);
            let req = one(i);
            std::thread::spawn(move || rt.handle_request(&req, None).map(|mut o| o.remove(0).token_ids.len()))
        })
        .collect();
    let mut total = 0;
    for t in threads {
        total += t.join().map_err(|_| CliError::Failed("a request thread panicked".into()))??;
    }
    let multi = total as f64 / t0.elapsed().as_secs_f64();
    let m = rt.metrics();

    let name = std::path::Path::new(p.required("model")?).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    if p.flag("json") {
        let j = serde_json::json!({
            "model": name, "threads": params.threads, "system_tokens": sys_len, "cached_tokens": cached,
            "cache_ms": cache_ms, "ttft_uncached_ms": cold, "ttft_cached_ms": warm, "ttft_ratio": cold / warm,
            "reused_tokens": reused, "streams": streams, "shared_blocks": shared_blocks, "own_blocks": own,
            "blocks_added_at_peak": added, "blocks_added_if_copied": own + streams * shared_blocks,
            "single_stream_tps": single, "multi_stream_tps": multi, "throughput_ratio": multi / single, "mean_batch": m.mean_batch,
        });
        return crate::out(&format!("{j}\n"));
    }
    let mut s = String::new();
    s.push_str(&format!("serve-bench {name}: {} threads, system prompt {sys_len} tokens, {reps} reps\n", params.threads));
    s.push_str("| measure | value |\n|---|---|\n");
    s.push_str(&format!("| cache_system_prompt | {cached} tokens cached in {cache_ms:.1} ms |\n"));
    s.push_str(&format!("| TTFT uncached (median) | {cold:.1} ms |\n| TTFT cached (median) | {warm:.1} ms ({reused} prompt tokens reused) |\n"));
    s.push_str(&format!("| TTFT ratio | {:.1}x |\n", cold / warm));
    s.push_str(&format!(
        "| KV blocks added by {streams} requests sharing the {shared_blocks}-block prompt | {added} at the peak; their own blocks: {own}; with a copy each: {} |\n",
        own + streams * shared_blocks
    ));
    s.push_str(&format!("| 1 stream | {single:.1} tokens/s |\n| {streams} concurrent streams | {multi:.1} tokens/s in all (mean batch {:.2}) |\n", m.mean_batch));
    s.push_str(&format!("| throughput ratio | {:.2}x |\n", multi / single));
    crate::out(&s)
}
