//! Commands that look inside a model without generating: `tokenize`, `detokenize`, `logits`,
//! `info`.

use edgellm::runtime::{ModelInfo, Runtime};

use crate::args::{self, Spec};
use crate::{CliError, CliResult};

const TOKENIZE: Spec = Spec {
    flags: &["add-special", "no-special", "chat", "pieces", "json"],
    options: &["text", "text-file"],
    shared: crate::MODEL_OPTIONS,
};
const DETOKENIZE: Spec = Spec {
    flags: &[],
    options: &[],
    shared: crate::MODEL_OPTIONS,
};
const LOGITS: Spec = Spec {
    flags: &["all", "all-positions", "json"],
    options: &["ids", "prompt-ids", "text", "top"],
    shared: crate::MODEL_OPTIONS,
};
const INFO: Spec = Spec {
    flags: &["json"],
    options: &[],
    shared: crate::MODEL_OPTIONS,
};

/// Runs `edgellm tokenize`: ids on one line, or one `id<TAB>"piece"` per line with `--pieces`.
pub fn tokenize(argv: &[String]) -> CliResult {
    let p = args::parse(argv, &TOKENIZE)?;
    let given = [
        p.opt("text").is_some(),
        p.opt("text-file").is_some(),
        !p.positional.is_empty(),
    ];
    if given.iter().filter(|&&g| g).count() != 1 || p.positional.len() > 1 {
        return Err(CliError::Usage(
            "tokenize takes exactly one of --text TEXT, --text-file FILE or one TEXT argument"
                .into(),
        ));
    }
    if p.flag("add-special") && p.flag("no-special") {
        return Err(CliError::Usage(
            "--add-special and --no-special contradict each other".into(),
        ));
    }
    let text = match (p.opt("text"), p.opt("text-file")) {
        (Some(t), _) => t.to_string(),
        (None, Some(f)) => crate::generate::read_text(std::path::Path::new(f))?,
        (None, None) => p.positional[0].clone(),
    };
    let rt = load(&p)?;
    let ids = if p.flag("chat") {
        // The prompt a chat request would feed: the text as a user turn, rendered with the
        // model's template (which writes its own special tokens).
        let m = [edgellm::runtime::Message {
            role: "user".into(),
            content: text,
        }];
        let rendered = rt.apply_chat_template(&m, true, None)?;
        rt.tokenize(&rendered, false)?
    } else {
        rt.tokenize(&text, p.flag("add-special"))?
    };
    if p.flag("json") {
        let pieces: Vec<String> = if p.flag("pieces") {
            ids.iter().map(|&id| piece(&rt, id)).collect()
        } else {
            Vec::new()
        };
        let mut v = serde_json::json!({ "ids": ids });
        if p.flag("pieces") {
            v["pieces"] = serde_json::json!(pieces);
        }
        return crate::out(&format!("{v}\n"));
    }
    let mut s = String::new();
    if p.flag("pieces") {
        for &id in &ids {
            s.push_str(&format!(
                "{id}\t{}\n",
                serde_json::Value::String(piece(&rt, id))
            ));
        }
    } else {
        let words: Vec<String> = ids.iter().map(u32::to_string).collect();
        s = words.join(" ") + "\n";
    }
    crate::out(&s)
}

/// The text of one token; a token that is only part of a UTF-8 character shows as U+FFFD.
fn piece(rt: &Runtime, id: u32) -> String {
    rt.detokenize(&[id])
        .unwrap_or_else(|_| "\u{fffd}".to_string())
}

/// Runs `edgellm detokenize`: the text of the given ids.
pub fn detokenize(argv: &[String]) -> CliResult {
    let p = args::parse(argv, &DETOKENIZE)?;
    let ids = args::parse_ids(&p.positional)?;
    if ids.is_empty() {
        return Err(CliError::Usage("detokenize needs token ids".into()));
    }
    let rt = load(&p)?;
    let text = rt.detokenize(&ids)?;
    crate::out(&format!("{text}\n"))
}

/// Runs `edgellm logits`: top-N `(id, logit)` for the last (or every) position, or raw JSON.
pub fn logits(argv: &[String]) -> CliResult {
    let p = args::parse(argv, &LOGITS)?;
    if !p.positional.is_empty() {
        return Err(CliError::Usage(format!(
            "unexpected argument {:?}",
            p.positional[0]
        )));
    }
    let top: usize = p.parsed_or("top", 10)?;
    let all = p.flag("all") || p.flag("all-positions");
    let ids_arg = p.opt("prompt-ids").or(p.opt("ids"));
    if p.opt("prompt-ids").is_some() && p.opt("ids").is_some() {
        return Err(CliError::Usage(
            "give --prompt-ids or --ids, not both".into(),
        ));
    }
    let ids_opt = ids_arg.map(|s| args::parse_ids(&[s])).transpose()?;
    if ids_opt.is_some() == p.opt("text").is_some() {
        return Err(CliError::Usage(
            "give exactly one of --prompt-ids and --text".into(),
        ));
    }
    let rt = load(&p)?;
    let ids = match ids_opt {
        Some(ids) => ids,
        None => rt.tokenize(p.required("text")?, true)?,
    };
    if ids.is_empty() {
        return Err(CliError::Usage("no tokens to evaluate".into()));
    }
    let rows = rt.logits(&ids, all)?;
    if p.flag("json") {
        let positions: Vec<serde_json::Value> = rows
            .iter()
            .map(|row| {
                let top: Vec<serde_json::Value> = top_n(row, top)
                    .into_iter()
                    .map(|(id, logit)| serde_json::json!({"id": id, "logit": logit}))
                    .collect();
                serde_json::json!({ "top": top })
            })
            .collect();
        return crate::out(&format!(
            "{}\n",
            serde_json::json!({ "positions": positions })
        ));
    }
    // Without --all the runtime returns the last position only.
    let first_pos = ids.len() - rows.len();
    let mut s = String::new();
    for (i, row) in rows.iter().enumerate() {
        let pos = first_pos + i;
        s.push_str(&format!("pos {pos} (token {}):", ids[pos]));
        for (id, logit) in top_n(row, top) {
            s.push_str(&format!(" {id}:{logit:.4}"));
        }
        s.push('\n');
    }
    crate::out(&s)
}

/// The `n` largest entries of `row` as `(index, value)`, largest first (NaN sorts last).
pub fn top_n(row: &[f32], n: usize) -> Vec<(usize, f32)> {
    let mut v: Vec<(usize, f32)> = row.iter().copied().enumerate().collect();
    v.sort_by(|a, b| {
        b.1.partial_cmp(&a.1)
            .unwrap_or_else(|| a.1.is_nan().cmp(&b.1.is_nan()))
            .then(a.0.cmp(&b.0))
    });
    v.truncate(n);
    v
}

/// Runs `edgellm info`: the model's facts.
pub fn info(argv: &[String]) -> CliResult {
    let p = args::parse(argv, &INFO)?;
    if !p.positional.is_empty() {
        return Err(CliError::Usage(format!(
            "unexpected argument {:?}",
            p.positional[0]
        )));
    }
    let rt = load(&p)?;
    let i = rt.info();
    if p.flag("json") {
        crate::out(&format!("{}\n", info_json(i)))
    } else {
        crate::out(&info_text(i))
    }
}

fn load(p: &args::Parsed) -> Result<Runtime, CliError> {
    let params = crate::runtime_params(p, 0)?;
    crate::load(p, &params)
}

fn info_json(i: &ModelInfo) -> serde_json::Value {
    let types: serde_json::Map<String, serde_json::Value> = i
        .tensor_types
        .iter()
        .map(|(t, n)| (t.clone(), serde_json::json!(n)))
        .collect();
    serde_json::json!({
        "architecture": i.architecture,
        "name": i.name,
        "vocab_size": i.vocab_size,
        "context_length": i.context_length,
        "trained_context_length": i.trained_context_length,
        "n_layers": i.n_layers,
        "hidden_size": i.hidden_size,
        "n_params": i.n_params,
        "weight_bytes": i.weight_bytes,
        "kv_bytes_per_token": i.kv_bytes_per_token,
        "tensor_types": types,
    })
}

fn info_text(i: &ModelInfo) -> String {
    let types: Vec<String> = i
        .tensor_types
        .iter()
        .map(|(t, n)| format!("{t}: {n}"))
        .collect();
    let kv_ctx = i.kv_bytes_per_token.saturating_mul(i.context_length as u64);
    format!(
        "architecture:      {}\nname:              {}\nparameters:        {} ({:.1} M)\nweight bytes:      {} ({})\n\
         layers:            {}\nhidden size:       {}\nvocabulary:        {}\ncontext:           {} (trained {})\n\
         KV bytes/token:    {} ({} for the whole context)\ntensor types:      {}\n",
        i.architecture,
        i.name,
        i.n_params,
        i.n_params as f64 / 1e6,
        i.weight_bytes,
        human_bytes(i.weight_bytes),
        i.n_layers,
        i.hidden_size,
        i.vocab_size,
        i.context_length,
        i.trained_context_length,
        i.kv_bytes_per_token,
        human_bytes(kv_ctx),
        types.join(", "),
    )
}

/// Bytes in binary units with one decimal (`1.5 MiB`).
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_n_orders_by_logit_then_id() {
        let row = [0.5, 2.0, f32::NAN, 2.0, -1.0];
        assert_eq!(top_n(&row, 3), vec![(1, 2.0), (3, 2.0), (0, 0.5)]);
        assert_eq!(top_n(&row, 10).len(), 5);
        assert_eq!(top_n(&row, 10)[4].0, 2, "NaN sorts last");
    }

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
