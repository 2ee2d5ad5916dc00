//! Chat templates: the model's own Jinja template rendered the way transformers'
//! `apply_chat_template` renders it (trim_blocks, lstrip_blocks, Python string methods, its
//! globals and `tojson`), with a few built-in prompt styles for models that ship none.

use std::path::Path;

use minijinja::syntax::SyntaxConfig;
use minijinja::{context, Environment, Value};

use super::{hf, template_fns, Vocab};
use crate::error::{Error, Result};
use crate::loader::metadata::Metadata;
use crate::runtime::Message;

/// Built-in prompt styles, used when a model has no template or the caller asks for one.
const BUILTIN: &[(&str, &str)] = &[
    ("chatml", include_str!("templates/chatml.jinja")),
    ("gemma", include_str!("templates/gemma.jinja")),
    ("gpt-oss", include_str!("templates/gpt-oss.jinja")),
    ("llama3", include_str!("templates/llama3.jinja")),
    ("mistral", include_str!("templates/mistral.jinja")),
    ("qwen", include_str!("templates/qwen.jinja")),
];

const TEMPLATE_NAME: &str = "chat";

/// Work budget of one render, in minijinja fuel (about one unit per instruction and per 64 bytes
/// of text made). SmolLM2's template spends about 26 units per message and 1 per 16 bytes of
/// content, so this renders hundreds of thousands of messages or over 100 MB of text, while the
/// nested `range(100000)` loops of the fuzz corpus fail after about a quarter of a second.
pub(crate) const RENDER_FUEL: u64 = 10_000_000;

/// A compiled chat template plus the special-token strings it may refer to.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source", &self.source)
            .finish()
    }
}

/// Turns a minijinja error into ours, keeping the reason and the failing line.
fn template_err(e: minijinja::Error) -> Error {
    if e.kind() == minijinja::ErrorKind::OutOfFuel {
        return Error::Template(format!(
            "template took too long to render (gave up after {RENDER_FUEL} steps of work)"
        ));
    }
    let mut msg = match e.detail() {
        Some(d) => d.to_string(),
        None => e.to_string(),
    };
    if let Some(line) = e.line() {
        msg.push_str(&format!(" (chat template line {line})"));
    }
    Error::Template(msg)
}

impl ChatTemplate {
    /// Compiles `source` with BOS/EOS token strings for `bos_token`/`eos_token`.
    pub fn new(
        source: impl Into<String>,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Result<Self> {
        let source = source.into();
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(false)
            .build()
            .map_err(template_err)?;
        env.set_syntax(syntax);
        env.set_fuel(Some(RENDER_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_formatter(template_fns::python_formatter);
        env.add_function("raise_exception", template_fns::raise_exception);
        env.add_function("strftime_now", template_fns::strftime_now);
        env.add_filter("tojson", template_fns::tojson);
        env.add_template_owned(TEMPLATE_NAME, source.clone())
            .map_err(template_err)?;
        Ok(ChatTemplate {
            env,
            source,
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        })
    }

    /// The template a GGUF file carries (`tokenizer.chat_template`), or `None` when it has none.
    pub fn from_gguf(meta: &Metadata, vocab: &Vocab) -> Result<Option<ChatTemplate>> {
        match meta.str_opt("tokenizer.chat_template")? {
            Some(src) => {
                let (bos, eos) = Self::vocab_tokens(vocab);
                Self::new(src, bos, eos).map(Some)
            }
            None => Ok(None),
        }
    }

    /// The template of a Hugging Face directory: `chat_template.jinja`, else `chat_template` in
    /// tokenizer_config.json (a string, or a list of named templates of which `default` is used).
    pub fn from_hf_dir(dir: &Path, vocab: &Vocab) -> Result<Option<ChatTemplate>> {
        let config =
            hf::read_json(dir, "tokenizer_config.json")?.unwrap_or(serde_json::Value::Null);
        let (mut bos, mut eos) = Self::vocab_tokens(vocab);
        if let Some(b) = hf::token_text(config.get("bos_token")) {
            bos = b;
        }
        if let Some(e) = hf::token_text(config.get("eos_token")) {
            eos = e;
        }
        let jinja = dir.join("chat_template.jinja");
        let source = match std::fs::read_to_string(&jinja) {
            Ok(s) => Some(s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match config.get("chat_template")
            {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Array(list)) => list
                    .iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                    .and_then(|t| t.get("template"))
                    .and_then(|t| t.as_str())
                    .map(str::to_string),
                _ => None,
            },
            Err(e) => return Err(Error::io(&jinja, e)),
        };
        source.map(|s| Self::new(s, bos, eos)).transpose()
    }

    /// A built-in prompt style: `chatml`, `gemma`, `gpt-oss` (harmony), `llama3`, `mistral` or `qwen` (ChatML with
    /// Qwen's default system prompt). The styles write their own BOS where the format has one.
    pub fn builtin(style: &str) -> Result<ChatTemplate> {
        let src = BUILTIN
            .iter()
            .find(|(name, _)| *name == style)
            .map(|(_, src)| *src)
            .ok_or_else(|| {
                let known: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
                Error::InvalidArgument(format!(
                    "unknown chat template style {style:?} (known: {})",
                    known.join(", ")
                ))
            })?;
        Self::new(src, "", "")
    }

    /// Names of the built-in styles.
    pub fn builtin_styles() -> impl Iterator<Item = &'static str> {
        BUILTIN.iter().map(|(n, _)| *n)
    }

    /// The Jinja source of this template.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// BOS and EOS token strings of a vocabulary, empty when it has none.
    fn vocab_tokens(vocab: &Vocab) -> (String, String) {
        let bos = vocab
            .bos_id()
            .and_then(|id| vocab.token_str(id))
            .unwrap_or_default();
        let eos = vocab
            .eos_ids()
            .first()
            .and_then(|&id| vocab.token_str(id))
            .unwrap_or_default();
        (bos, eos)
    }

    /// Renders `messages` to prompt text; `add_generation_prompt` opens the assistant's turn.
    /// An empty conversation is refused, as transformers refuses it.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        if messages.is_empty() {
            return Err(Error::InvalidArgument(
                "cannot apply a chat template to an empty conversation: provide at least one message".into(),
            ));
        }
        let msgs: Vec<Value> = messages
            .iter()
            .map(|m| context! { role => m.role.as_str(), content => m.content.as_str() })
            .collect();
        let tmpl = self.env.get_template(TEMPLATE_NAME).map_err(template_err)?;
        tmpl.render(context! {
            messages => msgs,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        })
        .map_err(template_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conversation(n: usize, content_len: usize) -> Vec<Message> {
        (0..n)
            .map(|i| Message {
                role: if i % 2 == 0 { "user" } else { "assistant" }.to_string(),
                content: format!("{i} ").repeat(content_len / 4 + 1),
            })
            .collect()
    }

    /// SmolLM2-135M-Instruct's own template, as committed with the tokenizer goldens.
    fn smollm2_template() -> ChatTemplate {
        let golden: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/tokenizer/smollm2.json"))
                .expect("golden JSON");
        let src = golden["chat_template"].as_str().expect("chat_template");
        ChatTemplate::new(src, "<|im_start|>", "<|im_end|>").expect("template compiles")
    }

    #[test]
    fn endless_template_fails_instead_of_hanging() {
        let t = ChatTemplate::new(
            "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        let start = std::time::Instant::now();
        let err = t.render(&conversation(1, 4), true).unwrap_err();
        assert!(
            matches!(&err, Error::Template(m) if m.contains("took too long")),
            "{err}"
        );
        assert!(start.elapsed().as_secs() < 5, "{:?}", start.elapsed());
    }

    #[test]
    fn fuel_limit_leaves_room_for_long_real_conversations() {
        let t = smollm2_template();
        // Ten thousand turns, and one turn of four megabytes.
        for msgs in [conversation(10_000, 200), conversation(1, 4 << 20)] {
            let text = t
                .render(&msgs, true)
                .expect("renders within the fuel limit");
            let content: usize = msgs.iter().map(|m| m.content.len()).sum();
            assert!(text.len() > content, "{} <= {content}", text.len());
            assert!(text.ends_with("<|im_start|>assistant\n"));
        }
        for style in ChatTemplate::builtin_styles() {
            ChatTemplate::builtin(style)
                .unwrap()
                .render(&conversation(10_000, 200), true)
                .unwrap_or_else(|e| panic!("{style}: {e}"));
        }
    }
}
