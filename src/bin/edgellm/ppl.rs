//! `edgellm perplexity`: llama.cpp-compatible perplexity of a model over a text file (the rules
//! live in `edgellm::eval::perplexity`).

use std::path::Path;

use edgellm::eval::{perplexity, PerplexityParams};
use edgellm::runtime::Runtime;

use crate::args::{self, Spec};
use crate::{CliError, CliResult};

const SPEC: Spec = Spec {
    flags: &["json"],
    options: &["file", "stride", "chunks"],
    shared: crate::MODEL_OPTIONS,
};

/// llama.cpp's default perplexity window.
const DEFAULT_CTX: usize = 512;

/// Runs `edgellm perplexity`.
pub fn run(argv: &[String]) -> CliResult {
    let p = args::parse(argv, &SPEC)?;
    if !p.positional.is_empty() {
        return Err(CliError::Usage(format!(
            "unexpected argument {:?} (use --file)",
            p.positional[0]
        )));
    }
    let file = Path::new(p.required("file")?);
    let params = PerplexityParams {
        n_ctx: p.parsed_or("ctx", DEFAULT_CTX)?,
        stride: p.parsed("stride")?,
        max_chunks: p.parsed("chunks")?,
    };
    let text = std::fs::read_to_string(file).map_err(|e| edgellm::Error::io(file, e))?;
    let rt = crate::load(&p, &crate::runtime_params(&p, params.n_ctx)?)?;
    let tokens = rt.tokenize(&text, true)?;
    let bos = added_bos(&rt)?;
    let json = p.flag("json");
    let mut source = |w: &[u32]| rt.logits(w, true);
    let mut progress = |done: usize, total: usize, ppl: f64| {
        eprint!("[{done}]{ppl:.4},");
        if done == total {
            eprintln!();
        }
    };
    let r = perplexity(&tokens, bos, &params, &mut source, &mut progress)?;
    if json {
        let v = serde_json::json!({
            "file": file.display().to_string(),
            "n_ctx": params.n_ctx,
            "stride": params.stride.unwrap_or(0),
            "n_tokens": r.n_tokens,
            "add_bos": bos.is_some(),
            "chunks": r.n_chunks,
            "scored": r.n_scored,
            "ppl": r.ppl,
            "ppl_error": r.ppl_error,
            "mean_nll": r.mean_nll,
            "running_ppl": r.running_ppl,
        });
        crate::out(&format!("{v}\n"))
    } else {
        crate::out(&format!(
            "PPL = {:.4} +/- {:.5} (n_ctx {}, {} chunks, {} of {} tokens scored)\n",
            r.ppl, r.ppl_error, params.n_ctx, r.n_chunks, r.n_scored, r.n_tokens
        ))
    }
}

/// The BOS id when the vocabulary adds one, found by tokenizing empty text with special tokens:
/// what comes back is exactly what the vocabulary adds.
fn added_bos(rt: &Runtime) -> Result<Option<u32>, CliError> {
    match rt.tokenize("", true)?.as_slice() {
        [] => Ok(None),
        [bos] => Ok(Some(*bos)),
        more => Err(CliError::Failed(format!(
            "the vocabulary adds {} tokens around text; llama.cpp's perplexity rules expect at most a BOS",
            more.len()
        ))),
    }
}
