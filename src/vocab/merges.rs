//! Checks BPE merges before `tokenizers` builds a model from them: its builder (0.23) slices a
//! fixed buffer by the merged length and panics when a merge's result is longer than every
//! vocabulary token, so a merge whose result is not a token must be refused first.

use serde_json::Value;

/// Finds the first merge `(a, b)` that `tokenizers`' BPE builder could not accept: `a` or `b`
/// missing from the vocabulary, or the merged token (`a` followed by `b` without its first
/// `prefix_len` bytes, the continuing-subword prefix) missing. Returns the reason, naming the merge.
pub(crate) fn check<'a>(
    has_token: impl Fn(&str) -> bool,
    merges: impl IntoIterator<Item = (&'a str, &'a str)>,
    prefix_len: usize,
) -> Result<(), String> {
    for (rank, (a, b)) in merges.into_iter().enumerate() {
        let merge = || format!("merge {rank} ({a:?} {b:?})");
        for part in [a, b] {
            if !has_token(part) {
                return Err(format!("{}: {part:?} is not in the vocabulary", merge()));
            }
        }
        let Some(rest) = b.get(prefix_len..) else {
            return Err(format!(
                "{}: {b:?} is shorter than the continuing-subword prefix",
                merge()
            ));
        };
        let merged = format!("{a}{rest}");
        if !has_token(&merged) {
            return Err(format!(
                "{}: the merged token {merged:?} is not in the vocabulary",
                merge()
            ));
        }
    }
    Ok(())
}

/// Checks the merges of a parsed `tokenizer.json` whose model is BPE (tagged `"type": "BPE"`, or
/// untagged, which `tokenizers` tries as BPE first). Anything not shaped like a BPE model is left
/// to `tokenizers`, which rejects it with an error rather than a panic.
pub(crate) fn check_tokenizer_json(doc: &Value) -> Result<(), String> {
    let Some(model) = doc.get("model").and_then(Value::as_object) else {
        return Ok(());
    };
    match model.get("type") {
        None => {}
        Some(t) if t.as_str() == Some("BPE") => {}
        Some(_) => return Ok(()),
    }
    let (Some(vocab), Some(merges)) = (
        model.get("vocab").and_then(Value::as_object),
        model.get("merges").and_then(Value::as_array),
    ) else {
        return Ok(());
    };
    let prefix_len = match model.get("continuing_subword_prefix") {
        Some(Value::String(p)) => p.len(),
        _ => 0,
    };
    // `tokenizers` accepts either every merge as an [a, b] pair or every merge as an "a b" string
    // (skipping "#version" lines); a mixture, or any other shape, fails its parse with an error.
    let pairs: Option<Vec<(&str, &str)>> = merges
        .iter()
        .map(|m| match m.as_array().map(Vec::as_slice) {
            Some([Value::String(a), Value::String(b)]) => Some((a.as_str(), b.as_str())),
            _ => None,
        })
        .collect();
    let pairs = match pairs {
        Some(p) => p,
        None => {
            let lines: Option<Vec<&str>> = merges.iter().map(Value::as_str).collect();
            let Some(lines) = lines else {
                return Ok(());
            };
            let mut pairs = Vec::with_capacity(lines.len());
            for line in lines.into_iter().filter(|l| !l.starts_with("#version")) {
                let mut parts = line.split(' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(a), Some(b), None) => pairs.push((a, b)),
                    // Refused by `tokenizers` itself with an error.
                    _ => return Ok(()),
                }
            }
            pairs
        }
    };
    check(|t| vocab.contains_key(t), pairs, prefix_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_whose_result_is_missing_is_refused() {
        let vocab = ["a", "b", "ab"];
        let has = |t: &str| vocab.contains(&t);
        assert!(check(has, [("a", "b")], 0).is_ok());
        let err = check(has, [("a", "b"), ("b", "a")], 0).unwrap_err();
        assert!(err.contains("merge 1 (\"b\" \"a\")"), "{err}");
        assert!(err.contains("\"ba\""), "{err}");
        assert!(check(has, [("a", "zz")], 0).unwrap_err().contains("\"zz\""));
    }

    #[test]
    fn continuing_subword_prefix_is_stripped_from_the_right_piece() {
        let vocab = ["a", "##b", "ab", "#"];
        let has = |t: &str| vocab.contains(&t);
        assert!(check(has, [("a", "##b")], 2).is_ok());
        assert!(check(has, [("a", "#")], 2)
            .unwrap_err()
            .contains("shorter than the continuing-subword prefix"));
    }

    #[test]
    fn tokenizer_json_merges_in_both_spellings_are_checked() {
        let doc = |merges: Value, ty: Value| json!({"model": {"type": ty, "vocab": {"a": 0, "b": 1}, "merges": merges}});
        let bad = [
            json!(["a b"]),
            json!([["a", "b"]]),
            json!(["#version: 0.2", "a b"]),
        ];
        for merges in bad {
            let err = check_tokenizer_json(&doc(merges.clone(), json!("BPE"))).unwrap_err();
            assert!(err.contains("\"ab\""), "{merges}: {err}");
        }
        // Untagged models are tried as BPE first, so they are checked too.
        let mut untagged = doc(json!(["a b"]), Value::Null);
        untagged["model"].as_object_mut().unwrap().remove("type");
        assert!(check_tokenizer_json(&untagged).is_err());
        // Other model types and malformed merges are left to tokenizers' own errors.
        assert!(check_tokenizer_json(&doc(json!(["a b"]), json!("WordPiece"))).is_ok());
        assert!(check_tokenizer_json(&doc(json!(["a b c"]), json!("BPE"))).is_ok());
        assert!(check_tokenizer_json(&doc(json!([1]), json!("BPE"))).is_ok());
    }
}
