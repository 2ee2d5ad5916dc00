//! The paged KV cache seen from the runtime: a cached system prompt (and any reused prefix)
//! gives exactly the tokens an uncached run gives, shares its blocks between requests without a
//! copy, survives a save and load, and bad budgets or files get clear errors.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use edgellm::kv_cache::{KvBudget, BLOCK_TOKENS};
use edgellm::runtime::*;
use edgellm::Error;

const SYSTEM: &str = "You are a careful assistant for the little robot of the river bank. \
Answer in short sentences, count stones when asked, and always mention the cat if it is relevant. \
Never invent numbers: the sum of the digits from 0 to 9 is 45.";

fn tiny(params: RuntimeParams) -> Runtime {
    Runtime::create(&common::fixtures().join("tiny/llama/model.gguf"), &RuntimeParams { threads: 2, ..params }).unwrap()
}

fn chat(user: &str, max: usize) -> GenerationRequest {
    GenerationRequest {
        prompts: vec![PromptInput::Messages(vec![
            Message { role: "system".into(), content: SYSTEM.into() },
            Message { role: "user".into(), content: user.into() },
        ])],
        max_generate_length: max,
        ignore_eos: true,
        ..Default::default()
    }
}

const USERS: [&str; 3] = ["How many stones today?", "Tell me about the cat.", "What is 2 + 2?"];

/// Greedy outputs with a cached system prompt equal those of a runtime that never cached it.
fn cached_equals_uncached(path: &std::path::Path, max: usize) {
    let params = RuntimeParams { threads: 2, context_length: 1024, ..Default::default() };
    let fresh = Runtime::create(path, &params).unwrap();
    let cold: Vec<Vec<u32>> = USERS.iter().map(|u| fresh.handle_request(&chat(u, max), None).unwrap().remove(0).token_ids).collect();
    drop(fresh);
    let rt = Runtime::create(path, &params).unwrap();
    let cached = rt.cache_system_prompt(SYSTEM, None, None).unwrap();
    assert!(cached >= 2 * BLOCK_TOKENS, "only {cached} tokens of the system prompt were cached");
    for (u, want) in USERS.iter().zip(&cold) {
        let out = rt.handle_request(&chat(u, max), None).unwrap().remove(0);
        assert!(out.cached_prompt_tokens >= cached, "{u}: {} prompt tokens reused", out.cached_prompt_tokens);
        assert_eq!(&out.token_ids, want, "{}: cached and uncached greedy outputs differ for {u:?}", path.display());
    }
    let m = rt.metrics();
    assert_eq!(m.cache_hits, USERS.len() as u64);
    assert!(m.reused_prompt_tokens >= (USERS.len() * cached) as u64);
}

#[test]
fn cached_system_prompt_gives_the_uncached_output_tiny() {
    cached_equals_uncached(&common::fixtures().join("tiny/llama/model.gguf"), 24);
}

#[test]
fn cached_system_prompt_gives_the_uncached_output_smollm2() {
    cached_equals_uncached(&common::real_model("SmolLM2-135M-Instruct.Q4_1.gguf"), 16);
}

#[test]
fn cached_system_prompt_gives_the_uncached_output_gemma3() {
    cached_equals_uncached(&common::real_model("gemma-3-270m-q4_k_m.gguf"), 16);
}

#[test]
fn repeated_prompt_reuses_its_own_prefix() {
    let rt = tiny(RuntimeParams::default());
    let first = rt.handle_request(&chat(USERS[0], 8), None).unwrap().remove(0);
    assert_eq!(first.cached_prompt_tokens, 0);
    let again = rt.handle_request(&chat(USERS[0], 8), None).unwrap().remove(0);
    assert_eq!(again.token_ids, first.token_ids);
    // Whole blocks only, and at least one token left to compute.
    let n = first.prompt_ids.len();
    assert_eq!(again.cached_prompt_tokens, (n - 1) / BLOCK_TOKENS * BLOCK_TOKENS);
}

#[test]
fn concurrent_requests_share_the_cached_system_prompt_without_copies() {
    let rt = Arc::new(tiny(RuntimeParams { max_batch: 8, ..Default::default() }));
    let cached = rt.cache_system_prompt(SYSTEM, None, None).unwrap();
    let shared_blocks = cached / BLOCK_TOKENS;
    assert_eq!(rt.metrics().kv_used_blocks, shared_blocks, "the cached prompt holds exactly its blocks");
    let max = 40;
    let peak = Arc::new(AtomicUsize::new(0));
    let own_total = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (rt, peak, own_total) = (Arc::clone(&rt), Arc::clone(&peak), Arc::clone(&own_total));
            std::thread::spawn(move || {
                // Users' messages differ from their first word, so they share only the system prompt.
                let first = ["Apples", "Bridges", "Cats", "Dogs", "Eels", "Frogs", "Geese", "Hens"][i];
                let req = chat(&format!("{first} near the river: how many?"), max);
                let mut cb = |_: StreamEvent<'_>| {
                    peak.fetch_max(rt.metrics().kv_used_blocks, Ordering::Relaxed);
                    // Give the other threads time to join the batch.
                    std::thread::sleep(std::time::Duration::from_millis(2));
                    true
                };
                let out = rt.handle_request(&req, Some(&mut cb)).unwrap().remove(0);
                assert_eq!(out.cached_prompt_tokens, cached);
                let total = (out.prompt_ids.len() + max).div_ceil(BLOCK_TOKENS);
                own_total.fetch_add(total - shared_blocks, Ordering::Relaxed);
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let (peak, own) = (peak.load(Ordering::Relaxed), own_total.load(Ordering::Relaxed));
    // With all eight running, the cache holds the shared blocks once plus each request's own.
    assert_eq!(peak, shared_blocks + own, "peak {peak} blocks: shared {shared_blocks} + own {own}");
    assert_eq!(rt.metrics().kv_used_blocks - rt.metrics().kv_cached_blocks, 0, "no block leaked");
}

#[test]
fn prefix_cache_survives_save_and_load() {
    let dir = std::env::temp_dir().join(format!("edgellm-prefix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("system.kv");
    let rt = tiny(RuntimeParams::default());
    let cached = rt.cache_system_prompt(SYSTEM, None, None).unwrap();
    let want = rt.handle_request(&chat(USERS[1], 12), None).unwrap().remove(0).token_ids;
    let saved = rt.save_prefix_cache(&file).unwrap();
    assert!(saved >= cached / BLOCK_TOKENS);
    drop(rt);

    let rt = tiny(RuntimeParams::default());
    assert_eq!(rt.load_prefix_cache(&file).unwrap(), saved);
    let out = rt.handle_request(&chat(USERS[1], 12), None).unwrap().remove(0);
    assert!(out.cached_prompt_tokens >= cached);
    assert_eq!(out.token_ids, want);
    // Loading again adds nothing.
    assert_eq!(rt.load_prefix_cache(&file).unwrap(), 0);

    // Corrupt, truncated, foreign and exact-math files are refused whole; the runtime goes on.
    let bytes = std::fs::read(&file).unwrap();
    let bad = dir.join("bad.kv");
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x40;
    std::fs::write(&bad, &flipped).unwrap();
    assert!(matches!(rt.load_prefix_cache(&bad), Err(Error::ModelFormat { .. })));
    std::fs::write(&bad, &bytes[..bytes.len() - 100]).unwrap();
    assert!(matches!(rt.load_prefix_cache(&bad), Err(Error::ModelFormat { .. })));
    let other = Runtime::create(&common::fixtures().join("tiny/qwen2/model.gguf"), &RuntimeParams::default()).unwrap();
    let e = other.load_prefix_cache(&file).unwrap_err();
    assert!(e.to_string().contains("another model"), "{e}");
    let exact = tiny(RuntimeParams { exact_math: true, ..Default::default() });
    assert!(exact.load_prefix_cache(&file).is_err());
    assert!(matches!(rt.load_prefix_cache(&dir.join("missing.kv")), Err(Error::Io { .. })));
    assert_eq!(rt.handle_request(&chat(USERS[1], 12), None).unwrap().remove(0).token_ids, want);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn kv_budget_limits_are_clear_errors() {
    let path = common::fixtures().join("tiny/llama/model.gguf");
    let e = Runtime::create(&path, &RuntimeParams { context_length: 256, kv_budget: KvBudget::Bytes(1000), ..Default::default() }).unwrap_err();
    assert!(matches!(e, Error::OutOfMemory(_)) && e.to_string().contains("tokens"), "{e}");
    // One context exactly: a request that needs more than the cache is refused, then all is well.
    let rt = Runtime::create(&path, &RuntimeParams { context_length: 64, max_batch: 2, ..Default::default() }).unwrap();
    let info = rt.info().clone();
    assert_eq!(info.kv_blocks * info.kv_block_tokens, 128);
    let long = GenerationRequest {
        prompts: vec![PromptInput::TokenIds(vec![5; 60]); 3],
        apply_chat_template: false,
        max_generate_length: 4,
        ignore_eos: true,
        ..Default::default()
    };
    // Three 64-token sequences in a 128-token cache: they take turns instead of failing.
    let outs = rt.handle_request(&long, None).unwrap();
    assert!(outs.iter().all(|o| o.token_ids.len() == 4));
    assert_eq!(rt.metrics().kv_used_blocks, rt.metrics().kv_cached_blocks);
}
