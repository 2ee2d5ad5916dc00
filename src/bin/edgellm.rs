//! The `edgellm` command-line tool: generation, tokenization, logits, perplexity, model facts and
//! a benchmark, all over the library's `Runtime` API (the same one the C ABI wraps).
//!
//! Errors print `error: <message>` to stderr and exit with status 1; usage errors print the
//! message and the usage text and exit with status 2.

#[path = "edgellm/args.rs"]
mod args;
#[path = "edgellm/bench.rs"]
mod bench;
#[path = "edgellm/generate.rs"]
mod generate;
#[path = "edgellm/inspect.rs"]
mod inspect;
#[path = "edgellm/ppl.rs"]
mod ppl;
#[path = "edgellm/serve_bench.rs"]
mod serve_bench;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use edgellm::runtime::{BackendKind, Runtime, RuntimeParams};

/// What went wrong in a command: bad usage (exit 2) or a failure while running (exit 1).
#[derive(Debug)]
pub enum CliError {
    /// The command line is malformed.
    Usage(String),
    /// The command failed.
    Failed(String),
}

impl From<edgellm::Error> for CliError {
    fn from(e: edgellm::Error) -> Self {
        CliError::Failed(e.to_string())
    }
}

/// Result of one command.
pub type CliResult = Result<(), CliError>;

const USAGE: &str = "\
usage: edgellm <command> [options]

commands:
  generate    --model PATH (--prompt TEXT | --prompt-file FILE | --messages-file FILE
                          | --prompt-ids 1,2,3)
              [--system TEXT] [--chat (default for text) | --raw] [--template STYLE]
              [--max-tokens N] [--temperature T] [--top-k K] [--top-p P] [--min-p P]
              [--repeat-penalty R] [--presence-penalty P] [--frequency-penalty P] [--seed S]
              [--stop STR]... [--ignore-eos] [--no-stream] [--json]
  tokenize    --model PATH (--text TEXT | --text-file FILE | TEXT) [--chat] [--add-special]
              [--pieces] [--json]
  detokenize  --model PATH ID...
  logits      --model PATH (--prompt-ids 1,2,3 | --text TEXT) [--all-positions] [--top K] [--json]
  perplexity  --model PATH --file TEXT_FILE [--ctx N] [--stride N] [--chunks N] [--json]
  info        --model PATH [--json]
  bench       --model PATH [-p N] [-n N] [--tg-prompt N] [-r N] [-t N] [--membw] [--json] | --membw
  serve-bench --model PATH [--system-tokens N] [--streams N] [--gen N] [--reps N] [--json]
              TTFT with a cached system prompt vs uncached, KV blocks shared by concurrent
              requests, throughput of N concurrent streams vs 1
  help        print this text

options every model command accepts:
  --threads N    CPU worker threads (default: all cores)
  --ctx N        context window in tokens (default: the model's; perplexity: 512)
  --backend B    cpu, cuda or auto (default auto)
  --math M       fast (int8 activations, f16 KV cache; default) or exact (f32 reference)
";

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = argv.split_first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = match cmd.as_str() {
        "generate" => generate::run(rest),
        "tokenize" => inspect::tokenize(rest),
        "detokenize" => inspect::detokenize(rest),
        "logits" => inspect::logits(rest),
        "perplexity" => ppl::run(rest),
        "info" => inspect::info(rest),
        "bench" => bench::run(rest),
        "serve-bench" => serve_bench::run(rest),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        "--version" | "-V" => {
            println!("edgellm {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        other => Err(CliError::Usage(format!("unknown command {other:?}"))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Usage(msg)) => {
            eprintln!("error: {msg}\n");
            eprint!("{USAGE}");
            ExitCode::from(2)
        }
        Err(CliError::Failed(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
    }
}

/// Options shared by every command that loads a model.
pub const MODEL_OPTIONS: &[&str] = &["model", "threads", "ctx", "backend", "math"];

/// Builds runtime parameters from `--threads`, `--ctx`, `--backend` and `--math`; `ctx_default` applies when
/// `--ctx` is absent.
pub fn runtime_params(p: &args::Parsed, ctx_default: usize) -> Result<RuntimeParams, CliError> {
    let backend = match p.opt("backend").unwrap_or("auto") {
        "cpu" => BackendKind::Cpu,
        "cuda" => BackendKind::Cuda,
        "auto" => BackendKind::Auto,
        other => {
            return Err(CliError::Usage(format!(
                "--backend must be cpu, cuda or auto, not {other:?}"
            )))
        }
    };
    let exact_math = match p.opt("math").unwrap_or("fast") {
        "fast" => false,
        "exact" => true,
        other => return Err(CliError::Usage(format!("--math must be fast or exact, not {other:?}"))),
    };
    Ok(RuntimeParams {
        threads: p.parsed_or("threads", 0usize)?,
        exact_math,
        context_length: p.parsed_or("ctx", ctx_default)?,
        backend,
        ..RuntimeParams::default()
    })
}

/// Loads the model named by `--model` with `params`, checking first that the path exists so a
/// typo gets a plain "not found" message.
pub fn load(p: &args::Parsed, params: &RuntimeParams) -> Result<Runtime, CliError> {
    let path = Path::new(p.required("model")?);
    if let Err(e) = std::fs::metadata(path) {
        return Err(edgellm::Error::io(path, e).into());
    }
    Ok(Runtime::create(path, params)?)
}

/// Writes `s` to stdout and flushes; a closed pipe ends the command quietly as a failure.
pub fn out(s: &str) -> CliResult {
    let mut o = std::io::stdout().lock();
    o.write_all(s.as_bytes())
        .and_then(|_| o.flush())
        .map_err(|e| CliError::Failed(format!("stdout: {e}")))
}
