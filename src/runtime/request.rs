//! Generation requests and responses as the runtime sees them. The C structs in `src/ffi` convert
//! to and from these; new fields go here first so the C side can grow without breaking callers.

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant` (or any role the template knows).
    pub role: String,
    /// Message text.
    pub content: String,
}

/// What one prompt of a request is made of.
#[derive(Clone, Debug, PartialEq)]
pub enum PromptInput {
    /// Chat messages, rendered with the chat template when the request asks for it.
    Messages(Vec<Message>),
    /// Raw text, tokenized as is (BOS added if the vocabulary adds one).
    Text(String),
    /// Token ids used verbatim.
    TokenIds(Vec<u32>),
}

/// Sampling parameters of one request; the defaults reproduce greedy decoding.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep the k most likely tokens; 0 disables.
    pub top_k: u32,
    /// Nucleus mass to keep; 1.0 disables.
    pub top_p: f32,
    /// Drop tokens below `min_p` times the top probability; 0 disables.
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of seen tokens; 1.0 disables.
    pub repetition_penalty: f32,
    /// Subtracted once from logits of tokens already generated; 0 disables.
    pub presence_penalty: f32,
    /// Subtracted per occurrence from logits of generated tokens; 0 disables.
    pub frequency_penalty: f32,
    /// Seed of this request's random stream; same seed, same output. 0 takes the runtime's
    /// default seed (`RuntimeParams::seed`).
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: 0,
        }
    }
}

/// A generation request: one or more prompts sharing sampling parameters and limits.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationRequest {
    /// The prompts (a batch of one or more).
    pub prompts: Vec<PromptInput>,
    /// Render `Messages` prompts with the chat template (adds the generation prompt).
    pub apply_chat_template: bool,
    /// Built-in template style to use instead of the model's own (`chatml`, `llama3`, ...).
    pub template_style: Option<String>,
    /// Sampling parameters.
    pub sampling: SamplingParams,
    /// Maximum number of tokens to generate per prompt.
    pub max_generate_length: usize,
    /// Generation stops when the output ends with one of these strings (removed from the text).
    pub stop: Vec<String>,
    /// Keep generating past end-of-generation tokens.
    pub ignore_eos: bool,
    /// Set from any thread to stop the request early; it then finishes with `Cancelled`.
    pub cancel: CancelToken,
    /// LoRA adapter by the name it was loaded under: `None` uses the runtime's default adapter
    /// (see `Runtime::switch_lora`), `Some("")` none.
    pub lora_name: Option<String>,
    /// Multiplies the adapter's trained scaling (`lora_alpha / r`); 1 uses it as trained.
    pub lora_scale: f32,
    /// Log-probabilities to report per generated token: 0 none, else the chosen token's and the
    /// `logprobs` most likely tokens' (at most [`MAX_LOGPROBS`]).
    pub logprobs: usize,
}

/// Most alternatives a request may ask log-probabilities for.
pub const MAX_LOGPROBS: usize = 20;

/// Log-probabilities at one generated position, from the model's distribution (its logits'
/// log-softmax, before penalties, temperature and filters).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprobs {
    /// The generated token.
    pub token: u32,
    /// Its natural-log probability.
    pub logprob: f32,
    /// The most likely tokens and their log-probabilities, most likely first.
    pub top: Vec<(u32, f32)>,
}

/// A shared flag that cancels a running request when set (cheap to clone; clones share it).
#[derive(Clone, Debug, Default)]
pub struct CancelToken(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl CancelToken {
    /// Asks the request holding this token to stop at its next step.
    pub fn cancel(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether cancellation was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl PartialEq for CancelToken {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Default for GenerationRequest {
    fn default() -> Self {
        GenerationRequest {
            prompts: Vec::new(),
            apply_chat_template: true,
            template_style: None,
            sampling: SamplingParams::default(),
            max_generate_length: 128,
            stop: Vec::new(),
            ignore_eos: false,
            cancel: CancelToken::default(),
            lora_name: None,
            lora_scale: 1.0,
            logprobs: 0,
        }
    }
}

/// Why generation of one prompt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum FinishReason {
    /// An end-of-generation token was produced.
    Eos = 0,
    /// `max_generate_length` (or the context) was reached.
    Length = 1,
    /// A stop string matched.
    Stop = 2,
    /// The stream callback asked to stop.
    Cancelled = 3,
    /// An error ended this prompt (see the response's error message).
    Error = 4,
}

impl FinishReason {
    /// Lower-case name used in JSON output (`eos`, `length`, `stop`, `cancelled`, `error`).
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Eos => "eos",
            FinishReason::Length => "length",
            FinishReason::Stop => "stop",
            FinishReason::Cancelled => "cancelled",
            FinishReason::Error => "error",
        }
    }
}

/// The result for one prompt of a request.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationOutput {
    /// Generated text (stop string removed).
    pub text: String,
    /// Generated token ids.
    pub token_ids: Vec<u32>,
    /// Prompt token ids after templating and tokenization.
    pub prompt_ids: Vec<u32>,
    /// Why generation ended.
    pub finish_reason: FinishReason,
    /// Time from request start to the first generated token, milliseconds.
    pub ttft_ms: f64,
    /// Decode speed after the first token, tokens per second.
    pub decode_tokens_per_s: f64,
    /// Prompt tokens whose keys and values came from the prefix cache instead of being computed.
    pub cached_prompt_tokens: usize,
    /// Per generated token, when the request asked for log-probabilities.
    pub logprobs: Vec<TokenLogprobs>,
}

/// One piece of streamed output: text that is always whole UTF-8 characters.
#[derive(Clone, Copy, Debug)]
pub struct StreamEvent<'a> {
    /// Index of the prompt within the request.
    pub prompt_index: usize,
    /// The token just generated.
    pub token: u32,
    /// Text that became complete with this token (may be empty).
    pub text: &'a str,
}

/// Stream callback: return `false` to cancel generation of the request.
pub type StreamFn<'a> = dyn FnMut(StreamEvent<'_>) -> bool + 'a;
