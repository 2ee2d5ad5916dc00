//! Turns a request's prompt (messages, text or ids) into token ids: chat template choice,
//! BOS handling and id validation.

use super::request::{Message, PromptInput};
use crate::error::{Error, Result};
use crate::model::Arch;
use crate::vocab::{ChatTemplate, Vocab};

/// The built-in style used when a model ships no template of its own.
pub(crate) fn fallback_style(arch: Arch, vocab: &Vocab) -> Option<&'static str> {
    match arch {
        Arch::Gemma3 => Some("gemma"),
        Arch::Qwen2 | Arch::Qwen3 => Some("qwen"),
        Arch::Mistral => Some("mistral"),
        Arch::Llama if vocab.token_id("<|eot_id|>").is_some() => Some("llama3"),
        Arch::Llama if vocab.token_id("<|im_start|>").is_some() => Some("chatml"),
        Arch::Llama => None,
    }
}

/// Renders `messages` with the style named in the request, else the model's own template,
/// else the family's built-in style.
pub(crate) fn render_chat(
    model_template: Option<&ChatTemplate>,
    style: Option<&str>,
    arch: Arch,
    vocab: &Vocab,
    messages: &[Message],
    add_generation_prompt: bool,
) -> Result<String> {
    if messages.is_empty() {
        return Err(Error::InvalidArgument("a chat prompt needs at least one message".into()));
    }
    let builtin;
    let template = match (style, model_template) {
        (Some(s), _) => {
            builtin = ChatTemplate::builtin(s)?;
            &builtin
        }
        (None, Some(t)) => t,
        (None, None) => {
            let s = fallback_style(arch, vocab).ok_or_else(|| {
                Error::Template("the model has no chat template and no built-in style fits it; set a template style".into())
            })?;
            builtin = ChatTemplate::builtin(s)?;
            &builtin
        }
    };
    template.render(messages, add_generation_prompt)
}

/// Token ids of a prompt. Rendered chats are tokenized without adding specials (templates write
/// their own), then given a BOS if the vocabulary wants one and the template did not write it.
pub(crate) fn prompt_ids(
    prompt: &PromptInput,
    apply_template: bool,
    render: impl Fn(&[Message]) -> Result<String>,
    vocab: &Vocab,
) -> Result<Vec<u32>> {
    let ids = match prompt {
        PromptInput::TokenIds(ids) => {
            if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab.n_tokens()) {
                return Err(Error::InvalidArgument(format!("token id {bad} is outside the vocabulary of {}", vocab.n_tokens())));
            }
            ids.clone()
        }
        PromptInput::Text(text) if !apply_template => vocab.encode(text, true)?,
        PromptInput::Text(text) => {
            let m = [Message { role: "user".into(), content: text.clone() }];
            with_bos(vocab.encode(&render(&m)?, false)?, vocab)
        }
        PromptInput::Messages(m) if apply_template => with_bos(vocab.encode(&render(m)?, false)?, vocab),
        PromptInput::Messages(m) => {
            let joined: Vec<&str> = m.iter().map(|m| m.content.as_str()).collect();
            vocab.encode(&joined.join("\n"), true)?
        }
    };
    if ids.is_empty() {
        return match vocab.bos_id() {
            Some(b) => Ok(vec![b]),
            None => Err(Error::InvalidArgument("the prompt is empty and the vocabulary has no BOS token to start from".into())),
        };
    }
    Ok(ids)
}

fn with_bos(mut ids: Vec<u32>, vocab: &Vocab) -> Vec<u32> {
    if let (true, Some(b)) = (vocab.add_bos(), vocab.bos_id()) {
        if ids.first() != Some(&b) {
            ids.insert(0, b);
        }
    }
    ids
}
