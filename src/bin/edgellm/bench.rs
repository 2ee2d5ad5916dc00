//! `edgellm bench`: prefill and decode speed, time to first token and peak memory for a prompt of
//! a given length, median over repetitions. `scripts/bench.py` builds the same prompt for
//! llama.cpp so the two can be compared in one run.

use std::time::Instant;

use edgellm::runtime::{GenerationOutput, GenerationRequest, PromptInput, Runtime, SamplingParams};

use crate::args::{self, Spec};
use crate::{CliError, CliResult};

const SPEC: Spec = Spec {
    flags: &["json"],
    options: &["prompt-tokens", "gen-tokens", "reps"],
    shared: crate::MODEL_OPTIONS,
};

/// Text whose tokens, repeated, make the benchmark prompt (scripts/bench.py uses the same text
/// and the same rule so both engines see identical token ids).
pub const BENCH_TEXT: &str = "The quick brown fox jumps over the lazy dog while the river runs \
quietly past the old mill, and the baker opens the shop before sunrise to sell warm bread.";

/// Runs `edgellm bench`.
pub fn run(argv: &[String]) -> CliResult {
    let p = args::parse(argv, &SPEC)?;
    if !p.positional.is_empty() {
        return Err(CliError::Usage(format!(
            "unexpected argument {:?}",
            p.positional[0]
        )));
    }
    let n_prompt: usize = p.parsed_or("prompt-tokens", 128)?;
    let n_gen: usize = p.parsed_or("gen-tokens", 64)?;
    let reps: usize = p.parsed_or("reps", 3)?;
    if n_prompt == 0 || n_gen == 0 || reps == 0 {
        return Err(CliError::Usage(
            "--prompt-tokens, --gen-tokens and --reps must be positive".into(),
        ));
    }
    // A context just large enough keeps the KV cache (and so RSS) comparable to llama.cpp's.
    let params = crate::runtime_params(&p, n_prompt + n_gen + 16)?;
    let t0 = Instant::now();
    let rt = crate::load(&p, &params)?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let prompt = bench_prompt(&rt, n_prompt)?;

    // One short untimed run pages the weights in and warms the thread pool.
    generate(&rt, &prompt[..prompt.len().min(8)], 2)?;
    let mut runs = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        let o = generate(&rt, &prompt, n_gen)?;
        let total_s = t.elapsed().as_secs_f64();
        if o.token_ids.len() != n_gen {
            return Err(CliError::Failed(format!(
                "generated {} tokens, expected {n_gen}",
                o.token_ids.len()
            )));
        }
        runs.push(Run {
            ttft_ms: o.ttft_ms,
            // TTFT covers the prompt pass and the first sample; the sample is noise beside it.
            prefill_tps: n_prompt as f64 / (o.ttft_ms / 1e3),
            decode_tps: o.decode_tokens_per_s,
            total_s,
        });
    }
    let med = |f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
    let rss = peak_rss_bytes();
    let info = rt.info();
    if p.flag("json") {
        let v = serde_json::json!({
            "engine": "edgellm",
            "model": p.required("model")?,
            "architecture": info.architecture,
            "threads": params.threads,
            "prompt_tokens": n_prompt,
            "gen_tokens": n_gen,
            "reps": reps,
            "load_ms": load_ms,
            "prefill_tokens_per_s": med(|r| r.prefill_tps),
            "decode_tokens_per_s": med(|r| r.decode_tps),
            "ttft_ms": med(|r| r.ttft_ms),
            "total_s": med(|r| r.total_s),
            "peak_rss_bytes": rss,
        });
        return crate::out(&format!("{v}\n"));
    }
    let rss_text = rss
        .map(crate::inspect::human_bytes)
        .unwrap_or_else(|| "n/a".into());
    crate::out(&format!(
        "model: {} ({})\nprompt tokens: {n_prompt}, generated tokens: {n_gen}, reps: {reps} (medians)\n\
         load: {load_ms:.1} ms\nprefill: {:.1} tok/s\ndecode: {:.1} tok/s\nTTFT: {:.1} ms\npeak RSS: {rss_text}\n",
        p.required("model")?,
        info.architecture,
        med(|r| r.prefill_tps),
        med(|r| r.decode_tps),
        med(|r| r.ttft_ms),
    ))
}

struct Run {
    ttft_ms: f64,
    prefill_tps: f64,
    decode_tps: f64,
    total_s: f64,
}

/// `n` prompt tokens: BOS when the vocabulary adds one, then `BENCH_TEXT`'s tokens cycled.
fn bench_prompt(rt: &Runtime, n: usize) -> Result<Vec<u32>, CliError> {
    let with_special = rt.tokenize(BENCH_TEXT, true)?;
    let plain = rt.tokenize(BENCH_TEXT, false)?;
    if plain.is_empty() {
        return Err(CliError::Failed(
            "the benchmark text tokenizes to nothing".into(),
        ));
    }
    let mut ids: Vec<u32> = with_special[..with_special.len().saturating_sub(plain.len())].to_vec();
    ids.extend(
        plain
            .iter()
            .copied()
            .cycle()
            .take(n.saturating_sub(ids.len())),
    );
    ids.truncate(n);
    Ok(ids)
}

/// One greedy generation of exactly `n_gen` tokens (end-of-generation ignored).
fn generate(rt: &Runtime, prompt: &[u32], n_gen: usize) -> Result<GenerationOutput, CliError> {
    let req = GenerationRequest {
        prompts: vec![PromptInput::TokenIds(prompt.to_vec())],
        apply_chat_template: false,
        sampling: SamplingParams::default(),
        max_generate_length: n_gen,
        ignore_eos: true,
        ..GenerationRequest::default()
    };
    rt.handle_request(&req, None)?
        .into_iter()
        .next()
        .ok_or_else(|| CliError::Failed("the runtime returned no output".into()))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Peak resident set size of this process (Linux `VmHWM`), if the platform reports it.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_lists() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn peak_rss_is_reported_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(peak_rss_bytes().is_some_and(|b| b > 0));
        }
    }
}
