//! Requests written as JSON (`edgellm_request_from_json`), the input format of the
//! `llm_inference` example, which follows TensorRT Edge-LLM's: either one request object, or a
//! file object whose `"requests"` array holds request objects and whose other fields are
//! defaults for all of them. A file may also set `"batch_size"` (top level only): consecutive
//! runs of that many entries form one batch, built into one request with several prompts by
//! `parse_range`. Plain safe Rust; it lives beside `request.rs` because only the C API needs it.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::runtime::{GenerationRequest, Message, PromptInput, SamplingParams};
use crate::{Error, Result};

/// The fields of one request object; every one optional so that file-level defaults and
/// per-request values can be merged before they are checked.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fields {
    messages: Option<Vec<Message>>,
    prompt: Option<String>,
    token_ids: Option<Vec<u32>>,
    #[serde(alias = "max_tokens")]
    max_generate_length: Option<usize>,
    temperature: Option<f32>,
    top_k: Option<u32>,
    top_p: Option<f32>,
    min_p: Option<f32>,
    repetition_penalty: Option<f32>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    seed: Option<u64>,
    stop: Option<Vec<String>>,
    ignore_eos: Option<bool>,
    apply_chat_template: Option<bool>,
    template_style: Option<String>,
    lora_name: Option<String>,
    lora_scale: Option<f32>,
    logprobs: Option<usize>,
}

impl Fields {
    /// `self` with every field `entry` sets replaced by the entry's value.
    fn overridden_by(self, entry: Fields) -> Fields {
        Fields {
            messages: entry.messages.or(self.messages),
            prompt: entry.prompt.or(self.prompt),
            token_ids: entry.token_ids.or(self.token_ids),
            max_generate_length: entry.max_generate_length.or(self.max_generate_length),
            temperature: entry.temperature.or(self.temperature),
            top_k: entry.top_k.or(self.top_k),
            top_p: entry.top_p.or(self.top_p),
            min_p: entry.min_p.or(self.min_p),
            repetition_penalty: entry.repetition_penalty.or(self.repetition_penalty),
            presence_penalty: entry.presence_penalty.or(self.presence_penalty),
            frequency_penalty: entry.frequency_penalty.or(self.frequency_penalty),
            seed: entry.seed.or(self.seed),
            stop: entry.stop.or(self.stop),
            ignore_eos: entry.ignore_eos.or(self.ignore_eos),
            apply_chat_template: entry.apply_chat_template.or(self.apply_chat_template),
            template_style: entry.template_style.or(self.template_style),
            lora_name: entry.lora_name.or(self.lora_name),
            lora_scale: entry.lora_scale.or(self.lora_scale),
            logprobs: entry.logprobs.or(self.logprobs),
        }
    }

    fn into_request(self, what: &str) -> Result<GenerationRequest> {
        let prompt = match (self.messages, self.prompt, self.token_ids) {
            (Some(m), None, None) => PromptInput::Messages(m),
            (None, Some(p), None) => PromptInput::Text(p),
            (None, None, Some(t)) => PromptInput::TokenIds(t),
            (None, None, None) => {
                return Err(invalid(format!(
                    "{what} has none of \"messages\", \"prompt\", \"token_ids\""
                )))
            }
            _ => {
                return Err(invalid(format!(
                    "{what} has more than one of \"messages\", \"prompt\", \"token_ids\""
                )))
            }
        };
        let mut request = GenerationRequest {
            prompts: vec![prompt],
            ..GenerationRequest::default()
        };
        let d = SamplingParams::default();
        request.sampling = SamplingParams {
            temperature: self.temperature.unwrap_or(d.temperature),
            top_k: self.top_k.unwrap_or(d.top_k),
            top_p: self.top_p.unwrap_or(d.top_p),
            min_p: self.min_p.unwrap_or(d.min_p),
            repetition_penalty: self.repetition_penalty.unwrap_or(d.repetition_penalty),
            presence_penalty: self.presence_penalty.unwrap_or(d.presence_penalty),
            frequency_penalty: self.frequency_penalty.unwrap_or(d.frequency_penalty),
            seed: self.seed.unwrap_or(d.seed),
        };
        super::request::check_sampling(&request.sampling)?;
        if let Some(n) = self.max_generate_length {
            request.max_generate_length = n;
        }
        if let Some(stop) = self.stop {
            if stop.iter().any(String::is_empty) {
                return Err(invalid(format!("{what} has an empty stop string")));
            }
            request.stop = stop;
        }
        if let Some(v) = self.ignore_eos {
            request.ignore_eos = v;
        }
        if let Some(v) = self.apply_chat_template {
            request.apply_chat_template = v;
        }
        request.template_style = self.template_style;
        request.lora_name = self.lora_name;
        if let Some(n) = self.logprobs {
            if n > crate::runtime::MAX_LOGPROBS {
                return Err(invalid(format!("{what} asks for {n} \"logprobs\"; at most {} are given", crate::runtime::MAX_LOGPROBS)));
            }
            request.logprobs = n;
        }
        if let Some(scale) = self.lora_scale {
            if !scale.is_finite() {
                return Err(invalid(format!("{what} has a non-finite \"lora_scale\"")));
            }
            request.lora_scale = scale;
        }
        Ok(request)
    }
}

fn invalid(msg: String) -> Error {
    Error::InvalidArgument(msg)
}

fn fields(value: Value, what: &str) -> Result<Fields> {
    Fields::deserialize(value).map_err(|e| invalid(format!("{what}: {e}")))
}

/// A parsed top-level object: its `"requests"` array (if any), its `"batch_size"` (if any)
/// and the remaining fields.
struct TopLevel {
    requests: Option<Vec<Value>>,
    batch_size: Option<Value>,
    rest: Map<String, Value>,
}

/// Splits the top-level object of `text` into its `"requests"` array, its `"batch_size"` and
/// the other fields.
fn top_level(text: &str) -> Result<TopLevel> {
    let value: Value = serde_json::from_str(text).map_err(|e| invalid(format!("invalid JSON: {e}")))?;
    let Value::Object(mut object) = value else {
        return Err(invalid("request JSON must be an object".into()));
    };
    let requests = match object.remove("requests") {
        None => None,
        Some(Value::Array(items)) => Some(items),
        Some(_) => return Err(invalid("\"requests\" must be an array".into())),
    };
    let batch_size = object.remove("batch_size");
    Ok(TopLevel {
        requests,
        batch_size,
        rest: object,
    })
}

/// Number of requests in `text`: the length of its `"requests"` array, or 1 for one object.
pub(crate) fn count(text: &str) -> Result<usize> {
    Ok(top_level(text)?.requests.map_or(1, |r| r.len()))
}

/// The `"batch_size"` of `text`: 1 when absent; an error unless it is a positive integer.
pub(crate) fn batch_size(text: &str) -> Result<usize> {
    let Some(value) = top_level(text)?.batch_size else {
        return Ok(1);
    };
    match value.as_u64() {
        Some(n) if n > 0 => {
            usize::try_from(n).map_err(|_| invalid(format!("\"batch_size\" {n} is too large")))
        }
        _ => Err(invalid(format!(
            "\"batch_size\" must be a positive integer, not {value}"
        ))),
    }
}

/// Request number `index` of `text`, with file-level defaults applied.
pub(crate) fn parse(text: &str, index: usize) -> Result<GenerationRequest> {
    parse_range(text, index, 1)
}

/// One request whose prompts are entries `first .. first + count` of `text` in order, with
/// file-level defaults applied. Every entry must resolve to the same settings (sampling,
/// limits, stop strings, template choice): a request has one set of each, so entries that
/// differ are an error naming the first differing entry rather than silently merged.
pub(crate) fn parse_range(text: &str, first: usize, count: usize) -> Result<GenerationRequest> {
    if count == 0 {
        return Err(invalid("a request needs at least one entry (count is 0)".into()));
    }
    let TopLevel {
        requests,
        batch_size: _,
        rest,
    } = top_level(text)?;
    let Some(requests) = requests else {
        if first != 0 || count != 1 {
            return Err(invalid(format!(
                "entries {first}..{} out of range: the JSON holds one request",
                first.saturating_add(count)
            )));
        }
        return fields(Value::Object(rest), "request")?.into_request("request");
    };
    for key in ["messages", "prompt", "token_ids"] {
        if rest.contains_key(key) {
            return Err(invalid(format!(
                "\"{key}\" belongs inside an entry of \"requests\", not at the top level"
            )));
        }
    }
    let n = requests.len();
    let end = first.checked_add(count).filter(|&end| end <= n);
    let Some(end) = end else {
        return Err(invalid(if count == 1 {
            format!("index {first} out of range: \"requests\" has {n} entries")
        } else {
            format!(
                "entries {first}..{} out of range: \"requests\" has {n} entries",
                first.saturating_add(count)
            )
        }));
    };
    let defaults = fields(Value::Object(rest), "top-level defaults")?;
    let mut merged: Option<GenerationRequest> = None;
    for (index, entry) in requests.into_iter().enumerate().take(end).skip(first) {
        let what = format!("requests[{index}]");
        let request = defaults.clone().overridden_by(fields(entry, &what)?).into_request(&what)?;
        match merged.as_mut() {
            None => merged = Some(request),
            Some(batch) => {
                if let Some(field) = first_difference(batch, &request) {
                    return Err(invalid(format!(
                        "{what} sets \"{field}\" differently from requests[{first}], but they \
                         are in one batch, which shares one value"
                    )));
                }
                batch.prompts.extend(request.prompts);
            }
        }
    }
    merged.ok_or_else(|| Error::Internal("empty batch range".into()))
}

/// The name of the first setting (other than the prompts) in which `a` and `b` differ.
fn first_difference(a: &GenerationRequest, b: &GenerationRequest) -> Option<&'static str> {
    let (s, t) = (&a.sampling, &b.sampling);
    [
        ("max_generate_length", a.max_generate_length == b.max_generate_length),
        ("stop", a.stop == b.stop),
        ("ignore_eos", a.ignore_eos == b.ignore_eos),
        ("apply_chat_template", a.apply_chat_template == b.apply_chat_template),
        ("template_style", a.template_style == b.template_style),
        ("lora_name", a.lora_name == b.lora_name),
        ("lora_scale", a.lora_scale == b.lora_scale),
        ("logprobs", a.logprobs == b.logprobs),
        ("temperature", s.temperature == t.temperature),
        ("top_k", s.top_k == t.top_k),
        ("top_p", s.top_p == t.top_p),
        ("min_p", s.min_p == t.min_p),
        ("repetition_penalty", s.repetition_penalty == t.repetition_penalty),
        ("presence_penalty", s.presence_penalty == t.presence_penalty),
        ("frequency_penalty", s.frequency_penalty == t.frequency_penalty),
        ("seed", s.seed == t.seed),
    ]
    .into_iter()
    .find(|&(_, same)| !same)
    .map(|(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_object_with_messages_and_sampling() {
        let r = parse(
            r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":7,"temperature":0.5,"seed":3,
                "stop":["\n"],"template_style":"chatml"}"#,
            0,
        )
        .unwrap();
        assert_eq!(
            r.prompts,
            vec![PromptInput::Messages(vec![Message {
                role: "user".into(),
                content: "hi".into()
            }])]
        );
        assert_eq!(r.max_generate_length, 7);
        assert_eq!(r.sampling.temperature, 0.5);
        assert_eq!(r.sampling.seed, 3);
        assert_eq!(r.stop, vec!["\n".to_string()]);
        assert_eq!(r.template_style.as_deref(), Some("chatml"));
    }

    #[test]
    fn file_defaults_apply_and_entries_override() {
        let text = r#"{"temperature":0.7,"max_generate_length":9,
            "requests":[{"prompt":"a"},{"token_ids":[1,2],"temperature":0.0}]}"#;
        assert_eq!(count(text).unwrap(), 2);
        let a = parse(text, 0).unwrap();
        assert_eq!((a.sampling.temperature, a.max_generate_length), (0.7, 9));
        assert_eq!(a.prompts, vec![PromptInput::Text("a".into())]);
        let b = parse(text, 1).unwrap();
        assert_eq!(b.sampling.temperature, 0.0);
        assert_eq!(b.prompts, vec![PromptInput::TokenIds(vec![1, 2])]);
        assert!(parse(text, 2).unwrap_err().to_string().contains("out of range"));
    }

    #[test]
    fn mistakes_are_named() {
        let err = |t: &str| parse(t, 0).unwrap_err().to_string();
        assert!(err(r#"{"prompt":"x","temprature":1}"#).contains("temprature"));
        assert!(err(r#"{"prompt":"x","messages":[]}"#).contains("more than one"));
        assert!(err(r#"{"seed":1}"#).contains("none of"));
        assert!(err(r#"{"prompt":"x","top_p":2}"#).contains("top_p"));
        assert!(err(r#"{"prompt":"x","stop":[""]}"#).contains("empty stop"));
        assert!(err(r#"[1]"#).contains("must be an object"));
        assert!(err(r#"{"prompt":"x""#).contains("invalid JSON"));
        assert!(err(r#"{"prompt":"a","requests":[{"prompt":"b"}]}"#).contains("top level"));
        assert!(err(r#"{"token_ids":[-1]}"#).contains("-1"));
    }

    #[test]
    fn batch_size_defaults_to_one_and_must_be_positive() {
        assert_eq!(batch_size(r#"{"requests":[{"prompt":"a"}]}"#).unwrap(), 1);
        assert_eq!(batch_size(r#"{"batch_size":3,"requests":[]}"#).unwrap(), 3);
        for bad in ["0", "-2", "1.5", "\"2\"", "null"] {
            let text = format!(r#"{{"batch_size":{bad},"requests":[{{"prompt":"a"}}]}}"#);
            let err = batch_size(&text).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{bad}: {err}");
            assert!(err.to_string().contains("batch_size"), "{bad}: {err}");
        }
        // Accepted at the top level by every reader, rejected inside an entry.
        let text = r#"{"batch_size":2,"requests":[{"prompt":"a"},{"prompt":"b"}]}"#;
        assert_eq!(count(text).unwrap(), 2);
        assert_eq!(parse(text, 1).unwrap().prompts, vec![PromptInput::Text("b".into())]);
        let inner = r#"{"requests":[{"prompt":"a","batch_size":2}]}"#;
        assert!(parse(inner, 0).unwrap_err().to_string().contains("batch_size"));
    }

    #[test]
    fn range_builds_one_request_with_prompts_in_order() {
        let text = r#"{"batch_size":2,"temperature":0.0,"top_k":50,"top_p":0.9,"max_generate_length":16,
            "apply_chat_template":true,"requests":[
              {"messages":[{"role":"user","content":"one"}],"stop":["."]},
              {"prompt":"two","stop":["."]},
              {"token_ids":[5,6],"stop":["."]}]}"#;
        let r = parse_range(text, 0, 2).unwrap();
        assert_eq!(
            r.prompts,
            vec![
                PromptInput::Messages(vec![Message {
                    role: "user".into(),
                    content: "one".into()
                }]),
                PromptInput::Text("two".into()),
            ]
        );
        assert_eq!((r.sampling.top_k, r.sampling.top_p, r.max_generate_length), (50, 0.9, 16));
        assert_eq!(r.stop, vec![".".to_string()]);
        assert!(r.apply_chat_template);
        // The last batch may be short.
        let last = parse_range(text, 2, 1).unwrap();
        assert_eq!(last.prompts, vec![PromptInput::TokenIds(vec![5, 6])]);
        let err = |first, n| parse_range(text, first, n).unwrap_err().to_string();
        assert!(err(2, 2).contains("out of range"));
        assert!(err(usize::MAX, 2).contains("out of range"));
        assert!(err(0, 0).contains("at least one"));
        // A single request object is the range 0..1 only.
        let single = r#"{"prompt":"x"}"#;
        assert_eq!(parse_range(single, 0, 1).unwrap().prompts.len(), 1);
        assert!(parse_range(single, 0, 2).unwrap_err().to_string().contains("one request"));
    }

    #[test]
    fn entries_of_one_batch_must_agree() {
        let batch = |a: &str, b: &str| {
            let text = format!(r#"{{"temperature":0.5,"requests":[{{"prompt":"a"{a}}},{{"prompt":"b"{b}}}]}}"#);
            parse_range(&text, 0, 2).map(|r| r.prompts.len())
        };
        assert_eq!(batch("", r#","temperature":0.5"#).unwrap(), 2);
        let cases = [
            (r#","stop":["x"]"#, "", "stop"),
            (r#","stop":["x"]"#, r#","stop":["y"]"#, "stop"),
            ("", r#","temperature":0.7"#, "temperature"),
            ("", r#","max_generate_length":3"#, "max_generate_length"),
            ("", r#","seed":9"#, "seed"),
            ("", r#","apply_chat_template":false"#, "apply_chat_template"),
            ("", r#","template_style":"chatml""#, "template_style"),
        ];
        for (a, b, field) in cases {
            let err = batch(a, b).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{field}: {err}");
            let msg = err.to_string();
            assert!(msg.contains(field) && msg.contains("requests[1]"), "{field}: {msg}");
        }
        // Each entry is still checked on its own, and named.
        let text = r#"{"requests":[{"prompt":"a"},{"prompt":"b","temprature":1}]}"#;
        assert!(parse_range(text, 0, 2).unwrap_err().to_string().contains("requests[1]"));
    }
}
