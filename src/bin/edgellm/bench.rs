//! `edgellm bench`: a llama-bench-style speed table (prompt processing `ppN` and text generation
//! `tgN`, tokens/s as median, min and max over repetitions), load time, resident memory against the
//! memory target, and a memory read-bandwidth probe (`--membw`) that gives the decode floor.
//! `benches/compare_llamacpp.py` builds the same prompt for llama.cpp so the two can be compared.
//!
//! What is timed:
//! - `ppN`: one call of `Runtime::logits` over N prompt ids (last-row logits, the runtime's own
//!   prefill chunking), wall clock around the call: a fresh sequence, its KV cache, the prefill.
//! - `tgN`: a greedy generation of exactly N tokens after a `--tg-prompt` token prompt; the time is
//!   the request's wall clock minus its reported TTFT, so it covers the N one-token decode steps
//!   (and N-1 samples) and no prompt processing.

use std::time::Instant;

use edgellm::runtime::{GenerationOutput, GenerationRequest, PromptInput, Runtime, SamplingParams};

use crate::args::{self, Spec};
use crate::{CliError, CliResult};

/// Options `edgellm bench` accepts.
const SPEC: Spec = Spec {
    flags: &["json", "membw"],
    options: &[
        "prompt-tokens",
        "gen-tokens",
        "tg-prompt",
        "reps",
        "membw-mib",
        "membw-passes",
    ],
    shared: crate::MODEL_OPTIONS,
};

/// llama-bench's short options and the long names they stand for.
const SHORT: &[(&str, &str)] = &[
    ("-m", "--model"),
    ("-p", "--prompt-tokens"),
    ("-n", "--gen-tokens"),
    ("-t", "--threads"),
    ("-r", "--reps"),
];

/// Slack allowed above file size + KV cache for the resident set right after load (issue 3's
/// memory target: code, tokenizer tables, thread stacks and the allocator's arenas).
const RSS_SLACK_BYTES: u64 = 64 << 20;

/// Text whose tokens, repeated, make the benchmark prompt (benches/compare_llamacpp.py uses the
/// same text and the same rule so both engines see identical token ids).
pub const BENCH_TEXT: &str = "The quick brown fox jumps over the lazy dog while the river runs \
quietly past the old mill, and the baker opens the shop before sunrise to sell warm bread.";

/// Runs `edgellm bench`.
pub fn run(argv: &[String]) -> CliResult {
    let argv = expand_short(argv);
    let p = args::parse(&argv, &SPEC)?;
    if let Some(extra) = p.positional.first() {
        return Err(CliError::Usage(format!("unexpected argument {extra:?}")));
    }
    let threads = match p.parsed_or("threads", 0usize)? {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        n => n,
    };
    let probe = if p.flag("membw") {
        let mib: usize = p.parsed_or("membw-mib", 1024)?;
        let passes: usize = p.parsed_or("membw-passes", 5)?;
        if mib == 0 || passes == 0 {
            return Err(CliError::Usage(
                "--membw-mib and --membw-passes must be positive".into(),
            ));
        }
        Some((mib, passes))
    } else {
        None
    };
    if p.opt("model").is_none() {
        let Some((mib, passes)) = probe else {
            return Err(CliError::Usage(
                "--model is required (or --membw alone)".into(),
            ));
        };
        let bw = measure_bandwidth(mib << 20, threads, passes)?;
        return print_membw(&bw, p.flag("json"));
    }
    let cfg = Config {
        n_prompt: p.parsed_or("prompt-tokens", 512)?,
        n_gen: p.parsed_or("gen-tokens", 128)?,
        tg_prompt: p.parsed_or("tg-prompt", 128)?,
        reps: p.parsed_or("reps", 5)?,
    };
    if cfg.reps == 0
        || (cfg.n_prompt == 0 && cfg.n_gen == 0)
        || (cfg.n_gen > 0 && cfg.tg_prompt == 0)
    {
        return Err(CliError::Usage(
            "--reps must be positive, -p or -n must be positive, and --tg-prompt positive when -n is".into(),
        ));
    }
    // A context just large enough for the longer test keeps the KV cache, and so RSS, comparable
    // to llama.cpp's (llama-bench sizes its context the same way).
    let ctx_default = cfg.n_prompt.max(cfg.tg_prompt + cfg.n_gen);
    let mut params = crate::runtime_params(&p, ctx_default)?;
    params.threads = threads;
    let report = bench_model(&p, &params, &cfg)?;
    // The probe runs last so that its buffer does not count in the peak RSS above.
    let bw = match probe {
        Some((mib, passes)) => Some(measure_bandwidth(mib << 20, threads, passes)?),
        None => None,
    };
    if p.flag("json") {
        crate::out(&format!("{}\n", report_json(&report, &cfg, bw.as_ref())))
    } else {
        crate::out(&report_text(&report, &cfg, bw.as_ref()))
    }
}

/// Rewrites llama-bench's short options (`-p 512`) as this tool's long ones.
fn expand_short(argv: &[String]) -> Vec<String> {
    argv.iter()
        .map(|a| match SHORT.iter().find(|(s, _)| s == a) {
            Some((_, long)) => long.to_string(),
            None => a.clone(),
        })
        .collect()
}

/// Sizes of the two tests.
struct Config {
    /// Prompt tokens of the pp test (0 skips it).
    n_prompt: usize,
    /// Generated tokens of the tg test (0 skips it).
    n_gen: usize,
    /// Prompt tokens before the tg test's generation.
    tg_prompt: usize,
    /// Repetitions of each test.
    reps: usize,
}

/// Minimum, median and maximum of a set of measurements.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Stats {
    min: f64,
    median: f64,
    max: f64,
}

impl Stats {
    /// Summarises `v`; `None` when it is empty.
    fn of(v: &[f64]) -> Option<Stats> {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = match n {
            0 => return None,
            _ if n % 2 == 1 => s[n / 2],
            _ => (s[n / 2 - 1] + s[n / 2]) / 2.0,
        };
        Some(Stats {
            min: s[0],
            median,
            max: s[n - 1],
        })
    }
}

/// Everything measured on one model.
struct Report {
    model: String,
    architecture: String,
    kernels: String,
    threads: usize,
    context: usize,
    n_params: u64,
    weight_bytes: u64,
    file_bytes: u64,
    kv_bytes: u64,
    load_first_ms: f64,
    load_warm_ms: f64,
    rss_before_load: Option<u64>,
    rss_after_load: Option<u64>,
    peak_rss: Option<u64>,
    pp_tps: Vec<f64>,
    tg_tps: Vec<f64>,
    prompt_head: Vec<u32>,
}

impl Report {
    /// File size + KV cache + slack: the most RSS right after load may be.
    fn memory_target(&self) -> u64 {
        self.file_bytes + self.kv_bytes + RSS_SLACK_BYTES
    }
}

/// Loads the model twice (first and warm load), then runs `cfg.reps` rounds of pp and tg.
fn bench_model(
    p: &args::Parsed,
    params: &edgellm::runtime::RuntimeParams,
    cfg: &Config,
) -> Result<Report, CliError> {
    let model = p.required("model")?.to_string();
    let file_bytes = model_bytes(std::path::Path::new(&model))?;
    let rss_before_load = vm_kib("VmRSS");
    let t = Instant::now();
    let first = crate::load(p, params)?;
    let load_first_ms = t.elapsed().as_secs_f64() * 1e3;
    let rss_after_load = vm_kib("VmRSS");
    drop(first);
    let t = Instant::now();
    let rt = crate::load(p, params)?;
    let load_warm_ms = t.elapsed().as_secs_f64() * 1e3;

    let pp_ids = bench_prompt(&rt, cfg.n_prompt)?;
    let tg_ids = bench_prompt(&rt, cfg.tg_prompt)?;
    // One short untimed run pages the weights in and wakes the thread pool.
    let warm_ids = if tg_ids.is_empty() { &pp_ids } else { &tg_ids };
    generate(&rt, &warm_ids[..warm_ids.len().min(8)], 2)?;

    let mut pp_tps = Vec::with_capacity(cfg.reps);
    let mut tg_tps = Vec::with_capacity(cfg.reps);
    for _ in 0..cfg.reps {
        if cfg.n_prompt > 0 {
            let t = Instant::now();
            rt.logits(&pp_ids, false)?;
            pp_tps.push(cfg.n_prompt as f64 / t.elapsed().as_secs_f64());
        }
        if cfg.n_gen > 0 {
            let t = Instant::now();
            let o = generate(&rt, &tg_ids, cfg.n_gen)?;
            let decode_s = t.elapsed().as_secs_f64() - o.ttft_ms / 1e3;
            if o.token_ids.len() != cfg.n_gen || decode_s <= 0.0 {
                return Err(CliError::Failed(format!(
                    "generated {} tokens in {decode_s:.3} s, expected {} tokens",
                    o.token_ids.len(),
                    cfg.n_gen
                )));
            }
            tg_tps.push(cfg.n_gen as f64 / decode_s);
        }
    }
    let info = rt.info();
    let kernels = if params.exact_math {
        "cpu exact (f32 reference)".to_string()
    } else {
        format!("cpu {}", edgellm::ffi::simd::active().name())
    };
    Ok(Report {
        model: std::path::Path::new(&model)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or(model.clone()),
        architecture: info.architecture.clone(),
        kernels,
        threads: params.threads,
        context: info.context_length,
        n_params: info.n_params,
        weight_bytes: info.weight_bytes,
        file_bytes,
        kv_bytes: info.kv_bytes_per_token * info.context_length as u64,
        load_first_ms,
        load_warm_ms,
        rss_before_load: rss_before_load.map(|k| k * 1024),
        rss_after_load: rss_after_load.map(|k| k * 1024),
        peak_rss: vm_kib("VmHWM").map(|k| k * 1024),
        pp_tps,
        tg_tps,
        prompt_head: pp_ids.iter().chain(&tg_ids).take(8).copied().collect(),
    })
}

/// Bytes of the model on disk: the file, or every `.safetensors` file of a Hugging Face folder.
fn model_bytes(path: &std::path::Path) -> Result<u64, CliError> {
    let meta = std::fs::metadata(path).map_err(|e| edgellm::Error::io(path, e))?;
    if !meta.is_dir() {
        return Ok(meta.len());
    }
    let mut total = 0;
    for entry in std::fs::read_dir(path).map_err(|e| edgellm::Error::io(path, e))? {
        let entry = entry.map_err(|e| edgellm::Error::io(path, e))?;
        if entry.path().extension().is_some_and(|x| x == "safetensors") {
            total += entry
                .metadata()
                .map_err(|e| edgellm::Error::io(entry.path(), e))?
                .len();
        }
    }
    Ok(total)
}

/// `n` prompt tokens: BOS when the vocabulary adds one, then `BENCH_TEXT`'s tokens cycled.
fn bench_prompt(rt: &Runtime, n: usize) -> Result<Vec<u32>, CliError> {
    if n == 0 {
        return Ok(Vec::new());
    }
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

/// A `/proc/self/status` field in KiB (`VmRSS`, `VmHWM`), if the platform reports it.
fn vm_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Bytes as MiB with two decimals.
fn mib(b: u64) -> String {
    format!("{:.2} MiB", b as f64 / (1u64 << 20) as f64)
}

/// Like [`mib`], `n/a` when not measured.
fn opt_mib(b: Option<u64>) -> String {
    b.map(mib).unwrap_or_else(|| "n/a".into())
}

/// Parameter count the way llama-bench writes it (`134.52 M`, `1.24 B`).
fn human_params(n: u64) -> String {
    if n >= 1_000_000_000 {
        format!("{:.2} B", n as f64 / 1e9)
    } else {
        format!("{:.2} M", n as f64 / 1e6)
    }
}

/// Decode tokens/s if every weight byte were read once per token at `bw` bytes/s.
fn floor_tps(bw: &Bandwidth, weight_bytes: u64) -> f64 {
    bw.bytes_per_s / weight_bytes.max(1) as f64
}

/// The llama-bench-style table and the load, memory and bandwidth lines under it.
fn report_text(r: &Report, cfg: &Config, bw: Option<&Bandwidth>) -> String {
    let mut rows = Vec::new();
    if let Some(s) = Stats::of(&r.pp_tps) {
        rows.push((format!("pp{}", cfg.n_prompt), s));
    }
    if let Some(s) = Stats::of(&r.tg_tps) {
        rows.push((format!("tg{}", cfg.n_gen), s));
    }
    let mut out = String::from(
        "| model | size | params | backend | threads | test | t/s (median) | min | max |\n\
         | --- | ---: | ---: | --- | ---: | --- | ---: | ---: | ---: |\n",
    );
    for (test, s) in &rows {
        out += &format!(
            "| {} ({}) | {} | {} | {} | {} | {test} | {:.2} | {:.2} | {:.2} |\n",
            r.model,
            r.architecture,
            mib(r.weight_bytes),
            human_params(r.n_params),
            r.kernels,
            r.threads,
            s.median,
            s.min,
            s.max
        );
    }
    out += &format!(
        "\n{} reps; pp: Runtime::logits over the prompt; tg: {} tokens after a {}-token prompt, wall time minus TTFT\n",
        cfg.reps, cfg.n_gen, cfg.tg_prompt
    );
    out += &format!(
        "load: first {:.1} ms, warm {:.1} ms (first = first load in this process; the file may already be in the page cache)\n",
        r.load_first_ms, r.load_warm_ms
    );
    let verdict = match r.rss_after_load {
        Some(b) if b <= r.memory_target() => "within target",
        Some(_) => "OVER target",
        None => "not measured",
    };
    out += &format!(
        "RSS after load: {} (before load {}) vs target {} = file {} + KV {} ({} tokens x {} B) + {}: {verdict}\n",
        opt_mib(r.rss_after_load),
        opt_mib(r.rss_before_load),
        mib(r.memory_target()),
        mib(r.file_bytes),
        mib(r.kv_bytes),
        r.context,
        r.kv_bytes / r.context.max(1) as u64,
        mib(RSS_SLACK_BYTES),
    );
    out += &format!("peak RSS: {}\n", opt_mib(r.peak_rss));
    if let Some(bw) = bw {
        let floor = floor_tps(bw, r.weight_bytes);
        out += &format!(
            "memory read bandwidth: {:.2} GB/s ({} threads); decode floor {floor:.1} t/s ({} weight bytes per token)",
            bw.bytes_per_s / 1e9,
            bw.threads,
            r.weight_bytes
        );
        match Stats::of(&r.tg_tps) {
            Some(s) => out += &format!("; tg reaches {:.1}% of it\n", 100.0 * s.median / floor),
            None => out += "\n",
        }
    }
    out
}

/// `{min, median, max}`, or null when the test did not run.
fn stats_json(s: Option<Stats>) -> serde_json::Value {
    match s {
        Some(s) => serde_json::json!({"min": s.min, "median": s.median, "max": s.max}),
        None => serde_json::Value::Null,
    }
}

/// Every measurement as one JSON object (what benches/compare_llamacpp.py reads).
fn report_json(r: &Report, cfg: &Config, bw: Option<&Bandwidth>) -> serde_json::Value {
    let tg = Stats::of(&r.tg_tps);
    let floor = bw.map(|b| floor_tps(b, r.weight_bytes));
    serde_json::json!({
        "engine": "edgellm",
        "model": r.model,
        "architecture": r.architecture,
        "backend": r.kernels,
        "threads": r.threads,
        "context": r.context,
        "n_params": r.n_params,
        "weight_bytes": r.weight_bytes,
        "file_bytes": r.file_bytes,
        "kv_bytes": r.kv_bytes,
        "prompt_tokens": cfg.n_prompt,
        "gen_tokens": cfg.n_gen,
        "tg_prompt_tokens": cfg.tg_prompt,
        "reps": cfg.reps,
        "load_first_ms": r.load_first_ms,
        "load_warm_ms": r.load_warm_ms,
        "rss_before_load_bytes": r.rss_before_load,
        "rss_after_load_bytes": r.rss_after_load,
        "memory_target_bytes": r.memory_target(),
        "peak_rss_bytes": r.peak_rss,
        "pp_tokens_per_s": r.pp_tps,
        "tg_tokens_per_s": r.tg_tps,
        "pp": stats_json(Stats::of(&r.pp_tps)),
        "tg": stats_json(tg),
        "membw_bytes_per_s": bw.map(|b| b.bytes_per_s),
        "floor_tokens_per_s": floor,
        "tg_floor_fraction": floor.zip(tg).map(|(f, s)| s.median / f),
        "prompt_ids_head": r.prompt_head,
    })
}

/// Result of the read-bandwidth probe.
struct Bandwidth {
    /// Best bytes/s over the passes.
    bytes_per_s: f64,
    /// Every pass's bytes/s, in order.
    passes: Vec<f64>,
    /// Buffer size.
    bytes: usize,
    /// Threads that read it.
    threads: usize,
}

/// Reads a `bytes`-sized buffer `passes` times with `threads` scoped threads (each summing its own
/// contiguous share, which it also wrote first so pages sit near it) and keeps the best pass: the
/// best, not the median, because other work on a shared machine only ever slows a pass down.
fn measure_bandwidth(bytes: usize, threads: usize, passes: usize) -> Result<Bandwidth, CliError> {
    let words = bytes / 8;
    let threads = threads.clamp(1, words.max(1));
    let mut buf: Vec<u64> = Vec::new();
    buf.try_reserve_exact(words).map_err(|_| {
        CliError::Failed(format!(
            "cannot allocate {} for the bandwidth probe",
            mib(bytes as u64)
        ))
    })?;
    buf.resize(words, 0);
    let share = words.div_ceil(threads);
    // Distinct non-zero values: zero pages could all map to one physical page and read from cache.
    std::thread::scope(|s| {
        for (i, chunk) in buf.chunks_mut(share).enumerate() {
            s.spawn(move || {
                for (j, w) in chunk.iter_mut().enumerate() {
                    *w = (i * share + j) as u64 | 1;
                }
            });
        }
    });
    let mut rates = Vec::with_capacity(passes);
    for _ in 0..passes {
        let t = Instant::now();
        let total = std::thread::scope(|s| {
            let handles: Vec<_> = buf
                .chunks(share)
                .map(|c| s.spawn(move || sum_words(c)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(0))
                .fold(0u64, u64::wrapping_add)
        });
        let secs = t.elapsed().as_secs_f64();
        std::hint::black_box(total);
        rates.push((words * 8) as f64 / secs);
    }
    Ok(Bandwidth {
        bytes_per_s: rates.iter().copied().fold(0.0, f64::max),
        passes: rates,
        bytes: words * 8,
        threads,
    })
}

/// Wrapping sum of `s` with eight independent accumulators, so the loop vectorizes and is limited
/// by memory, not by one add chain.
fn sum_words(s: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let mut blocks = s.chunks_exact(8);
    for b in &mut blocks {
        for (a, w) in acc.iter_mut().zip(b) {
            *a = a.wrapping_add(*w);
        }
    }
    let tail = blocks
        .remainder()
        .iter()
        .fold(0u64, |a, w| a.wrapping_add(*w));
    acc.iter().fold(tail, |a, w| a.wrapping_add(*w))
}

/// Prints the probe's result alone (`edgellm bench --membw`).
fn print_membw(bw: &Bandwidth, json: bool) -> CliResult {
    if json {
        let v = serde_json::json!({
            "membw_bytes_per_s": bw.bytes_per_s,
            "passes_bytes_per_s": bw.passes,
            "buffer_bytes": bw.bytes,
            "threads": bw.threads,
        });
        return crate::out(&format!("{v}\n"));
    }
    let all: Vec<String> = bw
        .passes
        .iter()
        .map(|r| format!("{:.2}", r / 1e9))
        .collect();
    crate::out(&format!(
        "memory read bandwidth: {:.2} GB/s (best of {} passes over {}, {} threads; passes: {} GB/s)\n",
        bw.bytes_per_s / 1e9,
        bw.passes.len(),
        mib(bw.bytes as u64),
        bw.threads,
        all.join(" ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_odd_even_and_empty_lists() {
        assert_eq!(
            Stats::of(&[3.0, 1.0, 2.0]),
            Some(Stats {
                min: 1.0,
                median: 2.0,
                max: 3.0
            })
        );
        assert_eq!(
            Stats::of(&[4.0, 1.0, 2.0, 3.0]),
            Some(Stats {
                min: 1.0,
                median: 2.5,
                max: 4.0
            })
        );
        assert_eq!(Stats::of(&[]), None);
    }

    #[test]
    fn short_options_become_long_ones() {
        let argv: Vec<String> = ["-p", "64", "-n", "8", "-t", "1", "-r", "2", "--json"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let p = args::parse(&expand_short(&argv), &SPEC).unwrap();
        assert_eq!(p.parsed_or("prompt-tokens", 0usize).unwrap(), 64);
        assert_eq!(p.parsed_or("gen-tokens", 0usize).unwrap(), 8);
        assert_eq!(p.parsed_or("threads", 0usize).unwrap(), 1);
        assert_eq!(p.parsed_or("reps", 0usize).unwrap(), 2);
        assert!(p.flag("json"));
    }

    #[test]
    fn sum_words_matches_a_plain_sum_on_awkward_lengths() {
        for n in [0usize, 1, 7, 8, 9, 1001] {
            let v: Vec<u64> = (0..n as u64)
                .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
                .collect();
            assert_eq!(
                sum_words(&v),
                v.iter().fold(0u64, |a, w| a.wrapping_add(*w)),
                "n = {n}"
            );
        }
    }

    #[test]
    fn bandwidth_probe_reports_every_pass_and_the_best() {
        let bw = measure_bandwidth(1 << 20, 2, 3).unwrap();
        assert_eq!(bw.passes.len(), 3);
        assert_eq!(bw.bytes, 1 << 20);
        assert!(bw.bytes_per_s > 0.0 && bw.passes.iter().all(|&r| r <= bw.bytes_per_s));
    }

    #[test]
    fn resident_set_is_reported_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(vm_kib("VmRSS").is_some_and(|k| k > 0));
            assert!(vm_kib("VmHWM").is_some_and(|k| k > 0));
        }
    }
}
