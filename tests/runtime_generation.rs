//! Runtime behaviour on a tiny fixture model: limits, streaming, cancellation, stop strings,
//! batches, seeds, and errors that leave the runtime usable.

mod common;

use edgellm::runtime::*;
use edgellm::Error;

fn runtime(ctx: usize) -> Runtime {
    let path = common::fixtures().join("tiny/llama/model.gguf");
    let params = RuntimeParams { context_length: ctx, threads: 2, ..Default::default() };
    Runtime::create(&path, &params).unwrap()
}

fn ids_request(ids: &[u32], max: usize) -> GenerationRequest {
    GenerationRequest {
        prompts: vec![PromptInput::TokenIds(ids.to_vec())],
        apply_chat_template: false,
        max_generate_length: max,
        ignore_eos: true,
        ..Default::default()
    }
}

const PROMPT: &[u32] = &[308, 294, 351, 263, 223, 19, 20, 290];

#[test]
fn length_limit_and_stream_pieces_add_up_to_the_text() {
    let rt = runtime(0);
    let mut pieces = String::new();
    let mut n = 0;
    let mut cb = |e: StreamEvent<'_>| {
        pieces.push_str(e.text);
        n += 1;
        true
    };
    let out = rt.handle_request(&ids_request(PROMPT, 12), Some(&mut cb)).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].token_ids.len(), 12);
    assert_eq!(out[0].finish_reason, FinishReason::Length);
    assert_eq!(out[0].prompt_ids, PROMPT);
    assert!(n >= 12);
    assert_eq!(pieces, out[0].text);
    assert_eq!(out[0].text, rt.vocab().decode(&out[0].token_ids, true).unwrap());
}

#[test]
fn callback_returning_false_cancels() {
    let rt = runtime(0);
    let mut seen = 0;
    let mut cb = |_: StreamEvent<'_>| {
        seen += 1;
        seen < 3
    };
    let out = rt.handle_request(&ids_request(PROMPT, 20), Some(&mut cb)).unwrap();
    assert_eq!(out[0].finish_reason, FinishReason::Cancelled);
    assert_eq!(out[0].token_ids.len(), 3);
}

#[test]
fn cancel_token_from_another_thread_stops_the_request() {
    let rt = runtime(0);
    let req = ids_request(PROMPT, 20);
    req.cancel.cancel();
    let out = rt.handle_request(&req, None).unwrap();
    assert_eq!(out[0].finish_reason, FinishReason::Cancelled);
    assert!(out[0].token_ids.is_empty());
}

#[test]
fn prompt_longer_than_context_is_refused_and_runtime_stays_usable() {
    let rt = runtime(8);
    let long: Vec<u32> = (0..8).map(|i| 100 + i).collect();
    match rt.handle_request(&ids_request(&long, 4), None) {
        Err(Error::ContextOverflow(m)) => assert!(m.contains("8"), "{m}"),
        other => panic!("expected ContextOverflow, got {other:?}"),
    }
    let out = rt.handle_request(&ids_request(&PROMPT[..4], 10), None).unwrap();
    // 4 prompt tokens + generated tokens cannot exceed the 8-token context.
    assert_eq!(out[0].finish_reason, FinishReason::Length);
    assert!(out[0].token_ids.len() <= 5, "{}", out[0].token_ids.len());
    assert!(rt.logits(&long, false).is_ok());
    assert!(matches!(rt.logits(&[1; 9], false), Err(Error::ContextOverflow(_))));
}

#[test]
fn stop_string_ends_generation_before_it() {
    let rt = runtime(0);
    let full = rt.handle_request(&ids_request(PROMPT, 16), None).unwrap().remove(0);
    let text = full.text.clone();
    assert!(text.chars().count() >= 6, "need some text to cut: {text:?}");
    let cut: String = text.chars().skip(3).take(3).collect();
    let before = &text[..text.find(&cut).unwrap()];
    let mut req = ids_request(PROMPT, 16);
    req.stop = vec![cut.clone()];
    let mut streamed = String::new();
    let mut cb = |e: StreamEvent<'_>| {
        streamed.push_str(e.text);
        true
    };
    let out = rt.handle_request(&req, Some(&mut cb)).unwrap().remove(0);
    assert_eq!(out.finish_reason, FinishReason::Stop);
    assert_eq!(out.text, before);
    assert_eq!(streamed, before, "streamed text must never include the stop string");
}

#[test]
fn batch_outputs_equal_single_runs() {
    let rt = runtime(0);
    let a = rt.handle_request(&ids_request(PROMPT, 6), None).unwrap().remove(0);
    let b = rt.handle_request(&ids_request(&PROMPT[2..], 6), None).unwrap().remove(0);
    let mut req = ids_request(PROMPT, 6);
    req.prompts.push(PromptInput::TokenIds(PROMPT[2..].to_vec()));
    let both = rt.handle_request(&req, None).unwrap();
    assert_eq!(both[0].token_ids, a.token_ids);
    assert_eq!(both[1].token_ids, b.token_ids);
}

#[test]
fn same_seed_same_sample_and_seeds_differ() {
    let rt = runtime(0);
    let sample = |seed: u64| {
        let mut req = ids_request(PROMPT, 16);
        req.sampling = SamplingParams { temperature: 1.5, seed, ..Default::default() };
        rt.handle_request(&req, None).unwrap().remove(0).token_ids
    };
    assert_eq!(sample(7), sample(7));
    let distinct: std::collections::HashSet<Vec<u32>> = (1..6).map(sample).collect();
    assert!(distinct.len() > 1, "five seeds gave one output");
}

#[test]
fn bad_requests_get_clear_errors() {
    let rt = runtime(0);
    assert!(matches!(rt.handle_request(&GenerationRequest::default(), None), Err(Error::InvalidArgument(_))));
    assert!(matches!(rt.handle_request(&ids_request(&[5, 400], 2), None), Err(Error::InvalidArgument(_))));
    assert!(matches!(rt.logits(&[5, 4000], false), Err(Error::InvalidArgument(_))));
    let mut req = ids_request(PROMPT, 2);
    req.sampling.top_p = 0.0;
    assert!(matches!(rt.handle_request(&req, None), Err(Error::InvalidArgument(_))));
    let msgs = [Message { role: "user".into(), content: "hi".into() }];
    assert!(matches!(rt.apply_chat_template(&msgs, true, Some("no-such-style")), Err(Error::InvalidArgument(_))));
    // More prompts than the batch holds queue rather than fail.
    let more = GenerationRequest { prompts: vec![PromptInput::Text("a".into()); 5], max_generate_length: 2, ..Default::default() };
    assert_eq!(rt.handle_request(&more, None).unwrap().len(), 5);
    // Still usable.
    assert_eq!(rt.handle_request(&ids_request(PROMPT, 2), None).unwrap()[0].token_ids.len(), 2);
}

#[test]
fn chat_prompt_uses_the_model_template() {
    let rt = runtime(0);
    let msgs = vec![Message { role: "user".into(), content: "count stones".into() }];
    let text = rt.apply_chat_template(&msgs, true, None).unwrap();
    assert!(text.starts_with("<|im_start|>user\ncount stones<|im_end|>"), "{text:?}");
    let req = GenerationRequest { prompts: vec![PromptInput::Messages(msgs)], max_generate_length: 4, ignore_eos: true, ..Default::default() };
    let out = rt.handle_request(&req, None).unwrap().remove(0);
    assert_eq!(out.prompt_ids, rt.tokenize(&text, false).unwrap());
}

#[test]
fn token_logprobs_agree_with_logits() {
    let rt = runtime(0);
    let lp = rt.token_logprobs(PROMPT).unwrap();
    let logits = rt.logits(PROMPT, true).unwrap();
    assert_eq!(lp.len(), PROMPT.len() - 1);
    for (i, row) in logits.iter().take(PROMPT.len() - 1).enumerate() {
        let lse = row.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
        assert!((lp[i] - (row[PROMPT[i + 1] as usize] as f64 - lse)).abs() < 1e-6);
    }
}

#[test]
fn cuda_graph_capture_is_honestly_unsupported_on_cpu() {
    let rt = runtime(0);
    assert!(matches!(rt.capture_cuda_graph(), Err(Error::Unsupported(_))));
}

#[test]
fn runtime_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Runtime>();
}

#[test]
fn logprobs_follow_the_model_distribution() {
    let rt = runtime(0);
    let mut req = ids_request(PROMPT, 10);
    req.logprobs = 5;
    let out = rt.handle_request(&req, None).unwrap().remove(0);
    assert_eq!(out.logprobs.len(), out.token_ids.len());
    let mut all = PROMPT.to_vec();
    all.extend(&out.token_ids);
    // The same log-probabilities computed over the whole text as a prompt (external to the
    // generation loop: another attention path and no sampler).
    let reference = rt.token_logprobs(&all).unwrap();
    for (i, lp) in out.logprobs.iter().enumerate() {
        assert_eq!(lp.token, out.token_ids[i]);
        assert_eq!(lp.top.len(), 5);
        assert_eq!(lp.top[0].0, lp.token, "greedy picks the most likely token");
        assert_eq!(lp.top[0].1, lp.logprob);
        assert!(lp.top.windows(2).all(|w| w[0].1 >= w[1].1));
        assert!(lp.top.iter().map(|t| (t.1 as f64).exp()).sum::<f64>() <= 1.0 + 1e-5);
        let want = reference[PROMPT.len() - 1 + i];
        assert!((lp.logprob as f64 - want).abs() < 2e-3, "position {i}: {} vs {want}", lp.logprob);
    }
    req.logprobs = MAX_LOGPROBS + 1;
    assert!(matches!(rt.handle_request(&req, None), Err(Error::InvalidArgument(_))));
}
