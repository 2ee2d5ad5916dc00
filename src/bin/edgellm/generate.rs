//! `edgellm generate`: one prompt (text, chat messages or a file), streamed to stdout, with a
//! one-line timing summary on stderr or the whole output as JSON.

use std::io::Write;
use std::path::Path;

use edgellm::runtime::{
    GenerationOutput, GenerationRequest, Message, PromptInput, SamplingParams, StreamEvent,
};

use crate::args::{self, Spec};
use crate::{CliError, CliResult};

const SPEC: Spec = Spec {
    flags: &["raw", "chat", "no-stream", "json", "ignore-eos"],
    options: &[
        "prompt",
        "prompt-file",
        "prompt-ids",
        "messages-json",
        "messages-file",
        "system",
        "template",
        "max-tokens",
        "temperature",
        "top-k",
        "top-p",
        "min-p",
        "repeat-penalty",
        "presence-penalty",
        "frequency-penalty",
        "seed",
        "stop",
    ],
    shared: crate::MODEL_OPTIONS,
};

/// Runs `edgellm generate`.
pub fn run(argv: &[String]) -> CliResult {
    let p = args::parse(argv, &SPEC)?;
    if let Some(extra) = p.positional.first() {
        return Err(CliError::Usage(format!(
            "unexpected argument {extra:?} (use --prompt)"
        )));
    }
    let request = build_request(&p)?;
    let params = crate::runtime_params(&p, 0)?;
    let rt = crate::load(&p, &params)?;

    let json = p.flag("json");
    let stream = !json && !p.flag("no-stream");
    let mut stdout = std::io::stdout();
    let mut pipe_closed = false;
    let mut on_piece = |ev: StreamEvent<'_>| -> bool {
        if stdout
            .write_all(ev.text.as_bytes())
            .and_then(|_| stdout.flush())
            .is_err()
        {
            // The reader went away (e.g. `| head`): stop generating instead of wasting work.
            pipe_closed = true;
            return false;
        }
        true
    };
    let outputs = if stream {
        rt.handle_request(&request, Some(&mut on_piece))?
    } else {
        rt.handle_request(&request, None)?
    };
    let Some(output) = outputs.into_iter().next() else {
        return Err(CliError::Failed(
            "the runtime returned no output for the prompt".into(),
        ));
    };
    if pipe_closed {
        return Ok(());
    }
    if json {
        crate::out(&format!("{}\n", output_json(&output)))?;
    } else if stream {
        crate::out("\n")?;
    } else {
        crate::out(&format!("{}\n", output.text))?;
    }
    eprintln!("{}", summary(&output, &request.sampling));
    Ok(())
}

/// Builds the generation request from the command line (everything except loading the model).
fn build_request(p: &args::Parsed) -> Result<GenerationRequest, CliError> {
    let raw = p.flag("raw");
    if raw && p.flag("chat") {
        return Err(CliError::Usage(
            "--raw and --chat contradict each other".into(),
        ));
    }
    if p.flag("chat") && p.opt("prompt-ids").is_some() {
        return Err(CliError::Usage(
            "--chat cannot template --prompt-ids; give --prompt instead".into(),
        ));
    }
    let system = p.opt("system");
    let messages_file = p.opt("messages-file").or(p.opt("messages-json"));
    let sources = [
        "prompt",
        "prompt-file",
        "prompt-ids",
        "messages-json",
        "messages-file",
    ]
    .iter()
    .filter(|n| p.opt(n).is_some())
    .count();
    if sources != 1 {
        return Err(CliError::Usage(
            "give exactly one of --prompt, --prompt-file, --prompt-ids, --messages-file".into(),
        ));
    }
    let prompt = if let Some(ids) = p.opt("prompt-ids") {
        if system.is_some() {
            return Err(CliError::Usage(
                "--system cannot be used with --prompt-ids".into(),
            ));
        }
        let ids = args::parse_ids(&[ids])?;
        if ids.is_empty() {
            return Err(CliError::Usage("--prompt-ids is empty".into()));
        }
        PromptInput::TokenIds(ids)
    } else if let Some(file) = messages_file {
        if raw {
            return Err(CliError::Usage(
                "--raw cannot be used with --messages-file".into(),
            ));
        }
        let mut messages = read_messages(Path::new(file))?;
        if let Some(s) = system {
            messages.insert(
                0,
                Message {
                    role: "system".into(),
                    content: s.into(),
                },
            );
        }
        PromptInput::Messages(messages)
    } else {
        let text = match p.opt("prompt") {
            Some(t) => t.to_string(),
            None => read_text(Path::new(p.required("prompt-file")?))?,
        };
        if raw {
            if system.is_some() {
                return Err(CliError::Usage(
                    "--system needs the chat template; drop --raw".into(),
                ));
            }
            PromptInput::Text(text)
        } else {
            let mut messages = Vec::new();
            if let Some(s) = system {
                messages.push(Message {
                    role: "system".into(),
                    content: s.into(),
                });
            }
            messages.push(Message {
                role: "user".into(),
                content: text,
            });
            PromptInput::Messages(messages)
        }
    };
    let temperature: f32 = p.parsed_or("temperature", 0.0)?;
    let seed = match p.parsed::<u64>("seed")? {
        Some(s) => s,
        // Sampling without a seed should differ run to run; greedy ignores the seed.
        None if temperature > 0.0 => clock_seed(),
        None => 0,
    };
    let sampling = SamplingParams {
        temperature,
        top_k: p.parsed_or("top-k", 0)?,
        top_p: p.parsed_or("top-p", 1.0)?,
        min_p: p.parsed_or("min-p", 0.0)?,
        repetition_penalty: p.parsed_or("repeat-penalty", 1.0)?,
        presence_penalty: p.parsed_or("presence-penalty", 0.0)?,
        frequency_penalty: p.parsed_or("frequency-penalty", 0.0)?,
        seed,
    };
    check_sampling(&sampling)?;
    Ok(GenerationRequest {
        prompts: vec![prompt],
        // Token ids are used verbatim; only chat messages go through the template.
        apply_chat_template: !raw && p.opt("prompt-ids").is_none(),
        template_style: p.opt("template").map(str::to_string),
        sampling,
        max_generate_length: p.parsed_or(
            "max-tokens",
            GenerationRequest::default().max_generate_length,
        )?,
        stop: p.all("stop").into_iter().map(str::to_string).collect(),
        ignore_eos: p.flag("ignore-eos"),
        ..GenerationRequest::default()
    })
}

/// Rejects sampling values that have no meaning, before the model is loaded.
fn check_sampling(s: &SamplingParams) -> CliResult {
    let bad = |name: &str, v: f32| CliError::Usage(format!("--{name} {v} is out of range"));
    if !(s.temperature >= 0.0 && s.temperature.is_finite()) {
        return Err(bad("temperature", s.temperature));
    }
    if !(s.top_p > 0.0 && s.top_p <= 1.0) {
        return Err(bad("top-p", s.top_p));
    }
    if !(0.0..=1.0).contains(&s.min_p) {
        return Err(bad("min-p", s.min_p));
    }
    if !(s.repetition_penalty > 0.0 && s.repetition_penalty.is_finite()) {
        return Err(bad("repeat-penalty", s.repetition_penalty));
    }
    Ok(())
}

fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub fn read_text(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|e| edgellm::Error::io(path, e).into())
}

/// Reads chat messages: a JSON array of `{role, content}` or an object with a `messages` array.
fn read_messages(path: &Path) -> Result<Vec<Message>, CliError> {
    let text = read_text(path)?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))?;
    let list = match value {
        serde_json::Value::Object(mut o) => o.remove("messages").unwrap_or(serde_json::Value::Null),
        v => v,
    };
    let messages: Vec<Message> = serde_json::from_value(list).map_err(|e| {
        CliError::Failed(format!(
            "{}: expected a list of {{\"role\", \"content\"}} messages: {e}",
            path.display()
        ))
    })?;
    if messages.is_empty() {
        return Err(CliError::Failed(format!("{}: no messages", path.display())));
    }
    Ok(messages)
}

/// The whole output as a JSON object.
pub fn output_json(o: &GenerationOutput) -> serde_json::Value {
    serde_json::json!({
        "text": o.text,
        "output_ids": o.token_ids,
        "token_ids": o.token_ids,
        "prompt_ids": o.prompt_ids,
        "finish_reason": o.finish_reason.as_str(),
        "ttft_ms": o.ttft_ms,
        "decode_tokens_per_s": o.decode_tokens_per_s,
    })
}

/// The one-line stderr summary.
fn summary(o: &GenerationOutput, s: &SamplingParams) -> String {
    let mut line = format!(
        "prompt tokens: {} | generated tokens: {} | TTFT: {:.1} ms | decode: {:.1} tok/s | finish: {}",
        o.prompt_ids.len(),
        o.token_ids.len(),
        o.ttft_ms,
        o.decode_tokens_per_s,
        o.finish_reason.as_str()
    );
    if s.temperature > 0.0 {
        line.push_str(&format!(" | seed: {}", s.seed));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(words: &[&str]) -> args::Parsed {
        let v: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        args::parse(&v, &SPEC).unwrap()
    }

    #[test]
    fn chat_prompt_gets_system_and_user_messages() {
        let r = build_request(&parsed(&[
            "--prompt", "hi", "--system", "be brief", "--stop", "x", "--stop", "y",
        ]))
        .unwrap();
        assert!(r.apply_chat_template);
        let PromptInput::Messages(m) = &r.prompts[0] else {
            panic!("expected messages")
        };
        assert_eq!(
            m.iter().map(|m| m.role.as_str()).collect::<Vec<_>>(),
            ["system", "user"]
        );
        assert_eq!(r.stop, ["x", "y"]);
        assert_eq!(r.sampling, SamplingParams::default());
    }

    #[test]
    fn raw_prompt_is_text_without_template() {
        let r = build_request(&parsed(&[
            "--prompt",
            "hi",
            "--raw",
            "--max-tokens",
            "5",
            "--top-k",
            "3",
        ]))
        .unwrap();
        assert!(!r.apply_chat_template);
        assert_eq!(r.prompts[0], PromptInput::Text("hi".into()));
        assert_eq!(r.max_generate_length, 5);
        assert_eq!(r.sampling.top_k, 3);
    }

    #[test]
    fn prompt_ids_are_used_verbatim() {
        let r = build_request(&parsed(&["--prompt-ids", "1, 2,3"])).unwrap();
        assert_eq!(r.prompts[0], PromptInput::TokenIds(vec![1, 2, 3]));
        assert!(!r.apply_chat_template);
    }

    #[test]
    fn bad_combinations_are_usage_errors() {
        for words in [
            &["--raw"][..],
            &["--prompt", "a", "--prompt-file", "b"],
            &["--prompt", "a", "--raw", "--system", "s"],
            &["--prompt", "a", "--top-p", "0"],
            &["--prompt", "a", "--temperature", "-1"],
            &["--prompt", "a", "--max-tokens", "many"],
            &["--prompt-ids", "1,x"],
            &["--prompt-ids", "1", "--system", "s"],
        ] {
            assert!(
                matches!(build_request(&parsed(words)), Err(CliError::Usage(_))),
                "{words:?}"
            );
        }
    }
}
