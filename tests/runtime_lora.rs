//! LoRA adapters through the runtime: loaded from PEFT directories by name, chosen per request
//! (with a scale) or by the runtime default, mixed in one batch from many threads with the same
//! outputs as alone, kept apart in the prefix cache, and refused clearly when unknown or shaped
//! for another model.

mod common;

use std::sync::Arc;

use edgellm::runtime::*;
use edgellm::Error;

fn runtime() -> Runtime {
    let rt = Runtime::create(&common::fixtures().join("tiny/llama/model.gguf"), &RuntimeParams { threads: 2, max_batch: 8, ..Default::default() }).unwrap();
    let dir = common::fixtures().join("lora");
    rt.load_lora("a", &dir.join("a")).unwrap();
    rt.load_lora("b", &dir.join("b")).unwrap();
    rt
}

fn request(lora: Option<&str>, scale: f32, seed: u64) -> GenerationRequest {
    GenerationRequest {
        prompts: vec![PromptInput::TokenIds(vec![308, 294, 351, 263, 223, 19, 20, 290])],
        apply_chat_template: false,
        max_generate_length: 12,
        ignore_eos: true,
        lora_name: lora.map(str::to_string),
        lora_scale: scale,
        sampling: SamplingParams { temperature: if seed > 0 { 0.8 } else { 0.0 }, seed, ..Default::default() },
        ..Default::default()
    }
}

const CASES: [(Option<&str>, f32, u64); 6] = [(Some("a"), 1.0, 0), (Some(""), 1.0, 0), (Some("b"), 1.0, 0), (Some("a"), 0.5, 0), (None, 1.0, 0), (Some("b"), 1.0, 9)];

#[test]
fn mixed_adapters_in_one_batch_equal_their_single_runs() {
    let rt = Arc::new(runtime());
    let alone: Vec<Vec<u32>> = CASES.iter().map(|&(l, s, seed)| rt.handle_request(&request(l, s, seed), None).unwrap().remove(0).token_ids).collect();
    assert_ne!(alone[0], alone[1], "adapter a changes nothing");
    assert_ne!(alone[2], alone[1], "adapter b changes nothing");
    assert_ne!(alone[0], alone[3], "scale 0.5 changes nothing");
    assert_eq!(alone[1], alone[4], "no default adapter means none");
    for round in 0..3 {
        let threads: Vec<_> = CASES
            .iter()
            .enumerate()
            .map(|(i, &(l, s, seed))| {
                let rt = Arc::clone(&rt);
                std::thread::spawn(move || (i, rt.handle_request(&request(l, s, seed), None).unwrap().remove(0).token_ids))
            })
            .collect();
        for t in threads {
            let (i, got) = t.join().unwrap();
            assert_eq!(got, alone[i], "round {round}: case {i} differs in a batch");
        }
    }
    assert!(rt.metrics().mean_batch > 1.0, "the requests never shared a step");
}

#[test]
fn default_adapter_and_unloading() {
    let rt = runtime();
    let with_a = rt.handle_request(&request(Some("a"), 1.0, 0), None).unwrap().remove(0).token_ids;
    rt.switch_lora("a").unwrap();
    assert_eq!(rt.handle_request(&request(None, 1.0, 0), None).unwrap().remove(0).token_ids, with_a);
    assert!(matches!(rt.switch_lora("nope"), Err(Error::NotFound(_))));
    rt.unload_lora("a").unwrap();
    let e = rt.handle_request(&request(Some("a"), 1.0, 0), None).unwrap_err();
    assert!(matches!(e, Error::NotFound(_)) && e.to_string().contains("\"a\"") && e.to_string().contains("b"), "{e}");
    // The default fell back to none.
    let base = rt.handle_request(&request(Some(""), 1.0, 0), None).unwrap().remove(0).token_ids;
    assert_eq!(rt.handle_request(&request(None, 1.0, 0), None).unwrap().remove(0).token_ids, base);
    assert!(matches!(rt.unload_lora("a"), Err(Error::NotFound(_))));
    assert_eq!(rt.lora_names(), vec!["b".to_string()]);
}

#[test]
fn bad_adapters_are_refused_and_the_runtime_goes_on() {
    let rt = runtime();
    let dir = common::fixtures().join("lora");
    let e = rt.load_lora("w", &dir.join("wrong_shape")).unwrap_err();
    assert!(e.to_string().contains("q_proj.lora_A"), "{e}");
    assert!(rt.load_lora("m", &dir.join("no-such-dir")).is_err());
    assert!(rt.load_lora("", &dir.join("a")).is_err());
    assert!(matches!(rt.handle_request(&request(Some("w"), 1.0, 0), None), Err(Error::NotFound(_))));
    assert!(rt.handle_request(&request(Some("a"), f32::NAN, 0), None).is_err());
    assert_eq!(rt.handle_request(&request(Some("a"), 1.0, 0), None).unwrap()[0].token_ids.len(), 12);
}

#[test]
fn prefixes_are_cached_per_adapter() {
    let rt = runtime();
    let system = "A system prompt long enough to fill a few blocks of the cache with tokens. ".repeat(3);
    let chat = |lora: &str| GenerationRequest {
        prompts: vec![PromptInput::Messages(vec![
            Message { role: "system".into(), content: system.clone() },
            Message { role: "user".into(), content: "Hello there".into() },
        ])],
        max_generate_length: 6,
        lora_name: Some(lora.into()),
        ..Default::default()
    };
    let cold = rt.handle_request(&chat("a"), None).unwrap().remove(0);
    let fresh = runtime();
    let cached = fresh.cache_system_prompt(&system, Some("a"), None).unwrap();
    assert!(cached > 0);
    let warm = fresh.handle_request(&chat("a"), None).unwrap().remove(0);
    assert!(warm.cached_prompt_tokens >= cached);
    assert_eq!(warm.token_ids, cold.token_ids);
    // Another adapter, or none, cannot use keys and values computed with `a`.
    assert_eq!(fresh.handle_request(&chat("b"), None).unwrap()[0].cached_prompt_tokens, 0);
    assert_eq!(fresh.handle_request(&chat(""), None).unwrap()[0].cached_prompt_tokens, 0);
    // Unloading `a` drops its cached blocks.
    let before = fresh.metrics().kv_cached_blocks;
    fresh.unload_lora("a").unwrap();
    assert!(fresh.metrics().kv_cached_blocks < before);
}
