//! Requests written as JSON (`edgellm_request_from_json`), the input format of the
//! `llm_inference` example: either one request object, or a file object whose `"requests"`
//! array holds request objects and whose other fields are defaults for all of them. Plain safe
//! Rust; it lives beside `request.rs` because only the C API needs it.

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
        Ok(request)
    }
}

fn invalid(msg: String) -> Error {
    Error::InvalidArgument(msg)
}

fn fields(value: Value, what: &str) -> Result<Fields> {
    Fields::deserialize(value).map_err(|e| invalid(format!("{what}: {e}")))
}

/// A parsed top-level object: its `"requests"` array (if any) and the remaining fields.
type TopLevel = (Option<Vec<Value>>, Map<String, Value>);

/// Splits the top-level object of `text` into its `"requests"` array and the other fields.
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
    Ok((requests, object))
}

/// Number of requests in `text`: the length of its `"requests"` array, or 1 for one object.
pub(crate) fn count(text: &str) -> Result<usize> {
    Ok(top_level(text)?.0.map_or(1, |r| r.len()))
}

/// Request number `index` of `text`, with file-level defaults applied.
pub(crate) fn parse(text: &str, index: usize) -> Result<GenerationRequest> {
    let (requests, rest) = top_level(text)?;
    let Some(mut requests) = requests else {
        if index != 0 {
            return Err(invalid(format!(
                "index {index} out of range: the JSON holds one request"
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
    if index >= n {
        return Err(invalid(format!(
            "index {index} out of range: \"requests\" has {n} entries"
        )));
    }
    let what = format!("requests[{index}]");
    let defaults = fields(Value::Object(rest), "top-level defaults")?;
    let entry = fields(requests.swap_remove(index), &what)?;
    defaults.overridden_by(entry).into_request(&what)
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
}
