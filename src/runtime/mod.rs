//! The runtime: one loaded model (weights on a backend, vocabulary, chat template) that serves
//! generation requests. This is the Rust API the C ABI in `src/ffi` wraps one to one.

mod engine;
mod loras;
mod metrics;
mod prefix;
mod prompt;
pub mod request;
mod scheduler;
mod seq_gen;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::Instant;

pub use metrics::RuntimeMetrics;
pub use request::{
    CancelToken, FinishReason, GenerationOutput, GenerationRequest, Message, PromptInput, SamplingParams, StreamEvent, StreamFn,
    TokenLogprobs, MAX_LOGPROBS,
};

use crate::backend::cpu::CpuBackend;
use crate::error::{Error, Result};
use crate::kv_cache::{blocks_for, KvBudget, KvPlan, BLOCK_TOKENS};
use crate::model::{open_source, LogitRows, Model, ModelSource, SeqInput};
use crate::vocab::{ChatTemplate, Vocab};
use engine::{Engine, ModelEngine};
use loras::Loras;
use prefix::model_fingerprint;
use scheduler::{lock, Event, Limits, SeqRequest, Shared, PREFILL_CHUNK};

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
    /// Memory the KV cache (all sequences and cached prefixes) may take.
    pub kv_budget: KvBudget,
}

impl Default for RuntimeParams {
    fn default() -> Self {
        RuntimeParams {
            threads: 0,
            context_length: 0,
            max_batch: 4,
            backend: BackendKind::Auto,
            seed: 0,
            exact_math: false,
            kv_budget: KvBudget::Auto,
        }
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
    /// Blocks of the KV cache, planned from the budget at creation.
    pub kv_blocks: usize,
    /// Token positions per KV block.
    pub kv_block_tokens: usize,
    /// Bytes reserved for the KV cache (touched only as blocks are used).
    pub kv_bytes: u64,
    /// Bytes of activation buffers the largest step allocates (a full prefill chunk beside a
    /// full batch of generating sequences).
    pub scratch_bytes: u64,
    /// Count of tensors per element type, e.g. `("Q4_1", 210)`.
    pub tensor_types: Vec<(String, usize)>,
}

/// What the scheduler thread shares with the runtime's handle.
struct Core {
    engine: Box<dyn Engine>,
    vocab: Vocab,
    shared: Shared,
    limits: Limits,
    /// Identity of the model's weights, checked when a saved prefix cache is loaded.
    fingerprint: u64,
}

/// A loaded model ready to serve requests. `Send + Sync`: requests from several threads are
/// batched together by the runtime's scheduler thread (continuous batching).
pub struct Runtime {
    core: Arc<Core>,
    loras: RwLock<Loras>,
    template: Option<ChatTemplate>,
    info: ModelInfo,
    params: RuntimeParams,
    scheduler: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("info", &self.info).finish()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.core.shared.shut_down();
        if let Some(t) = self.scheduler.take() {
            let _ = t.join();
        }
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
        let kv_bytes_per_token = 2 * config.n_layers * config.kv_dim() * if params.exact_math { 4 } else { 2 };
        // Planned before the weights load, so a budget that cannot work fails fast.
        let plan = KvPlan::new(params.kv_budget, kv_bytes_per_token, context, params.max_batch)?;
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
        let fingerprint = model_fingerprint(&config, weights);
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
            kv_bytes_per_token: kv_bytes_per_token as u64,
            kv_blocks: plan.n_blocks,
            kv_block_tokens: plan.block_tokens,
            kv_bytes: plan.bytes(),
            scratch_bytes: crate::model::forward::scratch_bytes(&config, PREFILL_CHUNK + params.max_batch, params.max_batch + 1),
            tensor_types: tensor_types.into_iter().collect(),
        };
        let engine = Box::new(ModelEngine::new(model, plan.n_blocks)?);
        let limits = Limits { max_batch: params.max_batch, context };
        let core = Arc::new(Core { engine, vocab, shared: Shared::new(plan.n_blocks), limits, fingerprint });
        let worker = Arc::clone(&core);
        let scheduler = std::thread::Builder::new()
            .name("edgellm-scheduler".into())
            .spawn(move || scheduler::serve(worker.engine.as_ref(), &worker.vocab, &worker.shared, worker.limits))
            .map_err(|e| Error::Backend(format!("cannot start the scheduler thread: {e}")))?;
        Ok(Runtime { core, loras: RwLock::default(), template, info, params: params.clone(), scheduler: Some(scheduler) })
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
        &self.core.vocab
    }

    /// Generates for every prompt of `request`, streaming pieces to `stream` when given (on this
    /// thread). The prompts join the runtime's running batch, with those of requests from other
    /// threads; prompts beyond the batch or KV limits wait their turn. A prompt that fails (e.g.
    /// too long for the context) fails the whole request with that error.
    pub fn handle_request(
        &self,
        request: &GenerationRequest,
        mut stream: Option<&mut StreamFn<'_>>,
    ) -> Result<Vec<GenerationOutput>> {
        if request.prompts.is_empty() {
            return Err(Error::InvalidArgument("the request has no prompt".into()));
        }
        let started = Instant::now();
        let vocab = &self.core.vocab;
        let context = self.info.context_length;
        let mut sampling = request.sampling.clone();
        if sampling.seed == 0 {
            sampling.seed = self.params.seed;
        }
        // Checked up front, so a bad setting fails the request before anything runs.
        crate::sampling::Sampler::new(&sampling)?;
        let (lora, adapter_key) = self.resolve_lora(request.lora_name.as_deref(), request.lora_scale)?;
        if request.logprobs > request::MAX_LOGPROBS {
            return Err(Error::InvalidArgument(format!(
                "{} log-probabilities per token were asked for; at most {} are given",
                request.logprobs,
                request::MAX_LOGPROBS
            )));
        }
        let (tx, rx) = mpsc::channel();
        let abort = CancelToken::default();
        let mut seqs = Vec::with_capacity(request.prompts.len());
        let mut streamed = Vec::with_capacity(request.prompts.len());
        for (i, p) in request.prompts.iter().enumerate() {
            let render = |m: &[Message]| self.render(m, true, request.template_style.as_deref());
            let ids = prompt::prompt_ids(p, request.apply_chat_template, render, vocab)?;
            if ids.len() >= context {
                return Err(Error::ContextOverflow(format!(
                    "the prompt has {} tokens but the context holds {} (at least one must be left to generate)",
                    ids.len(),
                    context
                )));
            }
            let need = scheduler::blocks_needed(ids.len(), request.max_generate_length, context);
            if need > self.info.kv_blocks {
                return Err(Error::OutOfMemory(format!(
                    "prompt {i} needs {need} KV blocks ({} tokens) but the whole cache holds {} blocks; raise the KV budget or lower max_generate_length",
                    need * BLOCK_TOKENS,
                    self.info.kv_blocks
                )));
            }
            seqs.push(SeqRequest {
                prompt: ids,
                prompt_index: i,
                sampling: sampling.clone(),
                max_generate_length: request.max_generate_length,
                stop: request.stop.clone(),
                ignore_eos: request.ignore_eos,
                logprobs: request.logprobs,
                cancel: request.cancel.clone(),
                abort: abort.clone(),
                started,
                events: tx.clone(),
                streamed: stream.is_some().then(|| Arc::new(AtomicUsize::new(0))),
                lora: lora.clone(),
                adapter_key,
            });
            streamed.push(seqs[i].streamed.clone());
        }
        drop(tx);
        let n = seqs.len();
        self.core.shared.submit(seqs);
        let mut outputs: Vec<Option<GenerationOutput>> = vec![None; n];
        let mut failure = None;
        let mut remaining = n;
        while remaining > 0 {
            let Ok(event) = rx.recv() else {
                return Err(Error::Internal("the scheduler stopped before the request finished".into()));
            };
            match event {
                Event::Piece { prompt_index, token, text } => {
                    if let Some(cb) = stream.as_deref_mut() {
                        if !cb(StreamEvent { prompt_index, token, text: &text }) {
                            request.cancel.cancel();
                        }
                    }
                    if let Some(Some(count)) = streamed.get(prompt_index) {
                        count.fetch_add(1, Ordering::Release);
                        self.core.shared.notify();
                    }
                }
                Event::Done { prompt_index, result } => {
                    remaining -= 1;
                    match result {
                        Ok(out) => outputs[prompt_index] = Some(out),
                        Err(e) => {
                            // The call fails: its other prompts stop at their next step (the
                            // caller's cancel flag stays as it was).
                            abort.cancel();
                            failure.get_or_insert(e);
                        }
                    }
                }
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        outputs.into_iter().map(|o| o.ok_or_else(|| Error::Internal("a prompt produced no output".into()))).collect()
    }

    /// Takes `n` KV blocks for a direct computation, evicting cached prefixes as needed.
    fn take_blocks(&self, n: usize) -> Result<Vec<u32>> {
        lock(&self.core.shared.kv).take(n).ok_or_else(|| {
            Error::OutOfMemory(format!("{n} KV blocks are needed but running requests and cached prompts hold the cache"))
        })
    }

    /// Feeds prompt tokens `ids[from..]` of one sequence whose blocks are `blocks`, in chunks of
    /// `chunk`, outside the batch (which waits for each pass), and hands each chunk's logits rows
    /// to `each` with the chunk's first position: every row for `LogitRows::All`, the final row
    /// of the last chunk for `LogitRows::Last`, none for `LogitRows::None`.
    #[allow(clippy::too_many_arguments)]
    fn feed_prompt(
        &self,
        ids: &[u32],
        from: usize,
        chunk: usize,
        blocks: &[u32],
        lora: Option<crate::model::adapters::LoraRef<'_>>,
        rows: LogitRows,
        mut each: impl FnMut(usize, Vec<Vec<f32>>),
    ) -> Result<()> {
        let mut pos = from;
        while pos < ids.len() {
            let end = (pos + chunk).min(ids.len());
            let logits = match rows {
                LogitRows::Last if end < ids.len() => LogitRows::None,
                r => r,
            };
            let seq = SeqInput { ids: &ids[pos..end], pos0: pos, blocks, prompt: true, logits, lora };
            each(pos, self.core.engine.forward(std::slice::from_ref(&seq))?.pop().unwrap_or_default());
            pos = end;
        }
        Ok(())
    }

    /// Tokenizes `text`; `add_special` adds BOS when the vocabulary adds one. Special-token text
    /// such as `<|im_start|>` is always recognised.
    pub fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        self.core.vocab.encode(text, add_special)
    }

    /// Turns token ids back into text (special tokens included as their text).
    pub fn detokenize(&self, ids: &[u32]) -> Result<String> {
        self.core.vocab.decode(ids, false)
    }

    /// Renders `messages` with the model's chat template, or the built-in `style` when given.
    pub fn apply_chat_template(&self, messages: &[Message], add_generation_prompt: bool, style: Option<&str>) -> Result<String> {
        self.render(messages, add_generation_prompt, style)
    }

    fn render(&self, messages: &[Message], add_generation_prompt: bool, style: Option<&str>) -> Result<String> {
        prompt::render_chat(self.template.as_ref(), style, self.core.engine.config().arch, &self.core.vocab, messages, add_generation_prompt)
    }

    /// Runs `ids` as one sequence in blocks of its own (see [`Runtime::feed_prompt`]).
    fn run_private(&self, ids: &[u32], chunk: usize, rows: LogitRows, each: impl FnMut(usize, Vec<Vec<f32>>)) -> Result<()> {
        self.check_ids(ids)?;
        let blocks = self.take_blocks(blocks_for(ids.len()))?;
        let run = self.feed_prompt(ids, 0, chunk, &blocks, None, rows, each);
        lock(&self.core.shared.kv).release(&blocks);
        run
    }

    /// Logits for `ids` (with the runtime's arithmetic: see [`RuntimeParams::exact_math`]): the last position, or every position.
    pub fn logits(&self, ids: &[u32], all_positions: bool) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::new();
        let rows = if all_positions { LogitRows::All } else { LogitRows::Last };
        self.run_private(ids, PREFILL_CHUNK, rows, |_, r| out.extend(r))?;
        Ok(out)
    }

    /// Natural-log probability of each next token: entry `i` is `log p(ids[i + 1] | ids[..=i])`.
    /// Computed a slice of positions at a time, so memory stays small for large vocabularies.
    pub fn token_logprobs(&self, ids: &[u32]) -> Result<Vec<f64>> {
        const SLICE: usize = 32;
        let mut out = Vec::with_capacity(ids.len().saturating_sub(1));
        self.run_private(ids, SLICE, LogitRows::All, |start, rows| {
            for (j, row) in rows.iter().enumerate() {
                let Some(&next) = ids.get(start + j + 1) else { break };
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                let lse = row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
                out.push(row[next as usize] as f64 - lse);
            }
        })?;
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
            self.core.engine.backend_name()
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
