//! The runtime: one loaded model (weights on a backend, vocabulary, chat template) that serves
//! generation requests. This is the Rust API the C ABI in `src/ffi` wraps one to one.

mod engine;
mod generate;
mod prompt;
pub mod request;

use std::path::Path;
use std::time::Instant;

pub use request::{
    CancelToken, FinishReason, GenerationOutput, GenerationRequest, Message, PromptInput, SamplingParams, StreamEvent, StreamFn,
};

use crate::backend::cpu::CpuBackend;
use crate::error::{Error, Result};
use crate::model::{open_source, LogitRows, Model, ModelSource};
use crate::vocab::{ChatTemplate, Vocab};
use engine::Engine;
use generate::{GenerateCtx, PREFILL_CHUNK};

/// Which compute backend a runtime uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// The CPU backend (always available).
    Cpu,
    /// The CUDA backend (needs the `cuda` feature and a driver).
    Cuda,
    /// CUDA when available, else CPU.
    Auto,
}

/// Parameters for creating a runtime.
#[derive(Clone, Debug, PartialEq)]
pub struct RuntimeParams {
    /// Worker threads for the CPU backend; 0 uses every available core.
    pub threads: usize,
    /// Context window in tokens; 0 uses the model's trained context length.
    pub context_length: usize,
    /// Maximum number of sequences decoded together.
    pub max_batch: usize,
    /// Backend selection.
    pub backend: BackendKind,
    /// Seed of requests whose sampling seed is 0.
    pub seed: u64,
    /// Run the CPU backend's reference arithmetic (f32 activations and KV cache) instead of int8
    /// activations and an f16 KV cache: several times slower, for checking accuracy.
    pub exact_math: bool,
}

impl Default for RuntimeParams {
    fn default() -> Self {
        RuntimeParams { threads: 0, context_length: 0, max_batch: 4, backend: BackendKind::Auto, seed: 0, exact_math: false }
    }
}

/// Facts about the loaded model, for `info` commands and C getters.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    /// Architecture family name (`llama`, `qwen2`, `qwen3`, `gemma3`, `mistral`).
    pub architecture: String,
    /// Model name from the file's metadata, if any.
    pub name: String,
    /// Number of tokens in the vocabulary.
    pub vocab_size: usize,
    /// Context window this runtime was created with.
    pub context_length: usize,
    /// Context length the model was trained with.
    pub trained_context_length: usize,
    /// Number of transformer layers.
    pub n_layers: usize,
    /// Hidden (embedding) size.
    pub hidden_size: usize,
    /// Total number of weight parameters.
    pub n_params: u64,
    /// Bytes of weight data.
    pub weight_bytes: u64,
    /// Bytes of KV cache per token of context.
    pub kv_bytes_per_token: u64,
    /// Count of tensors per element type, e.g. `("Q4_1", 210)`.
    pub tensor_types: Vec<(String, usize)>,
}

/// A loaded model ready to serve requests. `Send + Sync`: requests from several threads run
/// concurrently and share the compute thread pool.
pub struct Runtime {
    engine: Box<dyn Engine>,
    vocab: Vocab,
    template: Option<ChatTemplate>,
    info: ModelInfo,
    params: RuntimeParams,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("info", &self.info).finish()
    }
}

impl Runtime {
    /// Loads the model at `path` (a GGUF file or a Hugging Face directory).
    pub fn create(path: &Path, params: &RuntimeParams) -> Result<Runtime> {
        if params.max_batch == 0 {
            return Err(Error::InvalidArgument("max_batch must be at least 1".into()));
        }
        if params.backend == BackendKind::Cuda {
            return Err(Error::Unsupported(
                "the CUDA backend is not available in this build; use the CPU or auto backend".into(),
            ));
        }
        let (source, config) = open_source(path)?;
        let (vocab, template) = match &source {
            ModelSource::Gguf(g) => {
                let v = Vocab::from_gguf(&g.metadata).map_err(|e| in_file(e, path))?;
                let t = ChatTemplate::from_gguf(&g.metadata, &v)?;
                (v, t)
            }
            ModelSource::HfDir { dir, .. } => {
                let v = Vocab::from_hf_dir(dir)?;
                let t = ChatTemplate::from_hf_dir(dir, &v)?;
                (v, t)
            }
        };
        if vocab.n_tokens() > config.vocab {
            return Err(Error::format(
                path,
                format!("the tokenizer has {} tokens but the embedding table only {}", vocab.n_tokens(), config.vocab),
            ));
        }
        let context = match params.context_length {
            0 => config.trained_context,
            n => n,
        };
        let threads = match params.threads {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        };
        let backend = CpuBackend::new(threads, params.exact_math)?;
        let mut tensor_types = std::collections::BTreeMap::<String, usize>::new();
        let weights = match &source {
            ModelSource::Gguf(g) => &g.weights,
            ModelSource::HfDir { weights, .. } => weights,
        };
        for t in weights.iter() {
            *tensor_types.entry(t.dtype.name().to_string()).or_default() += 1;
        }
        let name = source
            .gguf_metadata()
            .and_then(|m| m.str_opt("general.name").ok().flatten())
            .map(str::to_string)
            .unwrap_or_else(|| path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default());
        let model = Model::load(backend, &source, config.clone())?;
        let (weight_bytes, n_params) = model.weight_stats();
        let info = ModelInfo {
            architecture: config.arch.name().to_string(),
            name,
            vocab_size: config.vocab,
            context_length: context,
            trained_context_length: config.trained_context,
            n_layers: config.n_layers,
            hidden_size: config.hidden,
            n_params,
            weight_bytes,
            kv_bytes_per_token: (2 * config.n_layers * config.kv_dim() * if params.exact_math { 4 } else { 2 }) as u64,
            tensor_types: tensor_types.into_iter().collect(),
        };
        Ok(Runtime { engine: Box::new(model), vocab, template, info, params: params.clone() })
    }

    /// Facts about the loaded model.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The parameters this runtime was created with.
    pub fn params(&self) -> &RuntimeParams {
        &self.params
    }

    /// The tokenizer.
    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    /// Generates for every prompt of `request`, streaming pieces to `stream` when given. The
    /// prompts run one after another, each in its own KV state; a prompt that fails (e.g. too
    /// long for the context) fails the whole request with that error.
    pub fn handle_request(
        &self,
        request: &GenerationRequest,
        mut stream: Option<&mut StreamFn<'_>>,
    ) -> Result<Vec<GenerationOutput>> {
        if request.prompts.is_empty() {
            return Err(Error::InvalidArgument("the request has no prompt".into()));
        }
        if request.prompts.len() > self.params.max_batch {
            return Err(Error::InvalidArgument(format!(
                "the request has {} prompts but the runtime was created for batches of at most {}",
                request.prompts.len(),
                self.params.max_batch
            )));
        }
        let started = Instant::now();
        let mut prompts = Vec::with_capacity(request.prompts.len());
        for p in &request.prompts {
            let render = |m: &[Message]| self.render(m, true, request.template_style.as_deref());
            prompts.push(prompt::prompt_ids(p, request.apply_chat_template, render, &self.vocab)?);
        }
        let run = |f: &mut generate::ComputeStep<'_>| f();
        let mut outputs = Vec::with_capacity(prompts.len());
        for (i, ids) in prompts.into_iter().enumerate() {
            let ctx = GenerateCtx {
                vocab: &self.vocab,
                request,
                prompt_index: i,
                context: self.info.context_length,
                default_seed: self.params.seed,
                started,
                run: &run,
            };
            let mut seq = self.engine.new_sequence(self.info.context_length)?;
            outputs.push(generate::generate(seq.as_mut(), ids, &ctx, stream.as_deref_mut())?);
        }
        Ok(outputs)
    }

    /// Tokenizes `text`; `add_special` adds BOS when the vocabulary adds one. Special-token text
    /// such as `<|im_start|>` is always recognised.
    pub fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        self.vocab.encode(text, add_special)
    }

    /// Turns token ids back into text (special tokens included as their text).
    pub fn detokenize(&self, ids: &[u32]) -> Result<String> {
        self.vocab.decode(ids, false)
    }

    /// Renders `messages` with the model's chat template, or the built-in `style` when given.
    pub fn apply_chat_template(&self, messages: &[Message], add_generation_prompt: bool, style: Option<&str>) -> Result<String> {
        self.render(messages, add_generation_prompt, style)
    }

    fn render(&self, messages: &[Message], add_generation_prompt: bool, style: Option<&str>) -> Result<String> {
        prompt::render_chat(self.template.as_ref(), style, self.engine.config().arch, &self.vocab, messages, add_generation_prompt)
    }

    /// Logits for `ids` (with the runtime's arithmetic: see [`RuntimeParams::exact_math`]): the last position, or every position.
    pub fn logits(&self, ids: &[u32], all_positions: bool) -> Result<Vec<Vec<f32>>> {
        self.check_ids(ids)?;
        let mut seq = self.engine.new_sequence(self.info.context_length)?;
        let rows = if all_positions { LogitRows::All } else { LogitRows::None };
        let mut out = Vec::new();
        let chunks = ids.chunks(PREFILL_CHUNK).count();
        for (i, chunk) in ids.chunks(PREFILL_CHUNK).enumerate() {
            let rows = if i + 1 == chunks && !all_positions { LogitRows::Last } else { rows };
            out.extend(seq.feed(chunk, rows)?);
        }
        Ok(out)
    }

    /// Natural-log probability of each next token: entry `i` is `log p(ids[i + 1] | ids[..=i])`.
    /// Computed a slice of positions at a time, so memory stays small for large vocabularies.
    pub fn token_logprobs(&self, ids: &[u32]) -> Result<Vec<f64>> {
        self.check_ids(ids)?;
        const SLICE: usize = 32;
        let mut seq = self.engine.new_sequence(self.info.context_length)?;
        let mut out = Vec::with_capacity(ids.len().saturating_sub(1));
        for (c, chunk) in ids.chunks(SLICE).enumerate() {
            let rows = seq.feed(chunk, LogitRows::All)?;
            for (j, row) in rows.iter().enumerate() {
                let Some(&next) = ids.get(c * SLICE + j + 1) else { break };
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                let lse = row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
                out.push(row[next as usize] as f64 - lse);
            }
        }
        Ok(out)
    }

    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        if ids.is_empty() {
            return Err(Error::InvalidArgument("no token ids given".into()));
        }
        if ids.len() > self.info.context_length {
            return Err(Error::ContextOverflow(format!(
                "{} tokens do not fit the context of {}",
                ids.len(),
                self.info.context_length
            )));
        }
        Ok(())
    }

    /// Captures the decode step as CUDA graphs; the CPU backend answers `Unsupported`.
    pub fn capture_cuda_graph(&self) -> Result<()> {
        Err(Error::Unsupported(format!(
            "CUDA graphs need the CUDA backend; this runtime runs on the {} backend",
            self.engine.backend_name()
        )))
    }
}

/// Tokenizer errors from a model file name the file.
fn in_file(e: Error, path: &Path) -> Error {
    match e {
        Error::Tokenizer(m) => Error::format(path, format!("vocabulary: {m}")),
        other => other,
    }
}
