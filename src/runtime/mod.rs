//! The runtime: one loaded model (weights on a backend, vocabulary, chat template) that serves
//! generation requests. This is the Rust API the C ABI in `src/ffi` wraps one to one.

mod engine;
mod prompt;
pub mod request;
mod scheduler;
mod seq_gen;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::Instant;

pub use request::{
    CancelToken, FinishReason, GenerationOutput, GenerationRequest, Message, PromptInput, SamplingParams, StreamEvent, StreamFn,
    TokenLogprobs, MAX_LOGPROBS,
};

use crate::backend::cpu::CpuBackend;
use crate::error::{Error, Result};
use crate::kv_cache::file as kv_file;
use crate::kv_cache::{blocks_for, KvBudget, KvPlan, PrefixCache, BLOCK_TOKENS};
use crate::model::{open_source, LogitRows, Model, ModelSource, SeqInput};
use crate::vocab::{ChatTemplate, Vocab};
use engine::{Engine, ModelEngine};
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

/// A loaded adapter.
struct LoadedLora {
    placed: Arc<dyn std::any::Any + Send + Sync>,
    identity: u64,
    bytes: usize,
    /// Prefix-cache keys used with it (one per scale), purged when it is unloaded.
    keys: std::collections::HashSet<u64>,
}

/// The runtime's adapters and the default one.
#[derive(Default)]
struct Loras {
    by_name: std::collections::HashMap<String, LoadedLora>,
    default: String,
}

/// Prefix-cache key of an adapter used at a scale (never 0, which means no adapter).
fn adapter_key(identity: u64, scale: f32) -> u64 {
    let mut bytes = identity.to_le_bytes().to_vec();
    bytes.extend_from_slice(&scale.to_bits().to_le_bytes());
    kv_file::fnv1a(&bytes, kv_file::FNV_START).max(1)
}

/// Counters and memory figures of a runtime (see [`Runtime::metrics`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuntimeMetrics {
    /// Bytes of weight data.
    pub weight_bytes: u64,
    /// Bytes of KV blocks in use (sequences and cached prefixes).
    pub kv_used_bytes: u64,
    /// Bytes of the whole KV cache.
    pub kv_total_bytes: u64,
    /// KV blocks in use.
    pub kv_used_blocks: usize,
    /// KV blocks in all.
    pub kv_total_blocks: usize,
    /// KV blocks held by the prefix cache.
    pub kv_cached_blocks: usize,
    /// Prompts finished.
    pub sequences: u64,
    /// Tokens generated.
    pub generated_tokens: u64,
    /// Prompt tokens admitted.
    pub prompt_tokens: u64,
    /// Prompt tokens whose keys and values came from the prefix cache.
    pub reused_prompt_tokens: u64,
    /// Prompts that found a cached prefix.
    pub cache_hits: u64,
    /// Prompts looked up in the prefix cache.
    pub cache_lookups: u64,
    /// Forward steps the scheduler ran.
    pub steps: u64,
    /// Mean number of sequences per step.
    pub mean_batch: f64,
    /// Bytes of loaded LoRA adapters.
    pub lora_bytes: u64,
    /// Bytes of activation buffers the largest step allocates.
    pub scratch_bytes: u64,
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
                            // The request fails: its other prompts stop at their next step.
                            request.cancel.cancel();
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

    /// Prefills a system prompt once and keeps its KV blocks pinned in the prefix cache: later
    /// requests whose templated prompt starts with the same tokens share those blocks (no copy)
    /// and prefill only the rest. With a chat template, the prefix is the part of
    /// `[system, user]` conversations that does not depend on the user's message; without one,
    /// the text itself. Returns the number of prompt tokens now cached (whole blocks).
    /// `lora_name` picks the adapter the prompt is computed with (as in a request: `None` is
    /// the default adapter, `Some("")` none); only requests with the same adapter and scale 1
    /// share the blocks.
    pub fn cache_system_prompt(&self, system_prompt: &str, lora_name: Option<&str>, style: Option<&str>) -> Result<usize> {
        let (lora, key) = self.resolve_lora(lora_name, 1.0)?;
        let lora_ref = lora.as_ref().map(|(a, scale)| crate::model::adapters::LoraRef { adapter: a.as_ref(), scale: *scale });
        let ids = self.system_prefix(system_prompt, style)?;
        if ids.len() < BLOCK_TOKENS {
            return Ok(0);
        }
        let whole = ids.len() / BLOCK_TOKENS * BLOCK_TOKENS;
        let ids = &ids[..whole];
        self.check_ids(ids)?;
        // Blocks already cached are found, not recomputed.
        let matched = {
            let mut kv = lock(&self.core.shared.kv);
            let scheduler::KvState { alloc, prefix } = &mut *kv;
            prefix.lookup(alloc, key, ids, whole / BLOCK_TOKENS)
        };
        let done = matched.len() * BLOCK_TOKENS;
        let result = (|| {
            if done < whole {
                let fresh = self.take_blocks(blocks_for(whole) - matched.len())?;
                let mut blocks = matched.clone();
                blocks.extend_from_slice(&fresh);
                let run = self.prefill(ids, done, &blocks, lora_ref);
                let mut kv = lock(&self.core.shared.kv);
                if run.is_ok() {
                    let scheduler::KvState { alloc, prefix } = &mut *kv;
                    prefix.insert(alloc, key, ids, &blocks);
                }
                kv.release(&fresh);
                run?;
            }
            Ok(())
        })();
        let mut kv = lock(&self.core.shared.kv);
        kv.release(&matched);
        result?;
        Ok(kv.prefix.pin(key, ids) * BLOCK_TOKENS)
    }

    /// The token ids every chat with this system prompt starts with.
    fn system_prefix(&self, system_prompt: &str, style: Option<&str>) -> Result<Vec<u32>> {
        let vocab = &self.core.vocab;
        let msg = |role: &str, content: &str| Message { role: role.into(), content: content.into() };
        let chat = |user: &str| -> Result<Vec<u32>> {
            let messages = PromptInput::Messages(vec![msg("system", system_prompt), msg("user", user)]);
            prompt::prompt_ids(&messages, true, |m: &[Message]| self.render(m, true, style), vocab)
        };
        match (chat("A"), chat("Z")) {
            (Ok(a), Ok(b)) => {
                let n = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
                Ok(a[..n].to_vec())
            }
            // No chat template: the system prompt is raw text at the start of the prompt.
            (Err(Error::Template(_)), _) | (_, Err(Error::Template(_))) => vocab.encode(system_prompt, true),
            (Err(e), _) | (_, Err(e)) => Err(e),
        }
    }

    /// The adapter a request names (see [`GenerationRequest::lora_name`]) and its prefix-cache
    /// key; an unknown name is `NotFound`, naming it and the loaded ones.
    #[allow(clippy::type_complexity)]
    fn resolve_lora(&self, name: Option<&str>, scale: f32) -> Result<(Option<(Arc<dyn std::any::Any + Send + Sync>, f32)>, u64)> {
        if !scale.is_finite() {
            return Err(Error::InvalidArgument(format!("the LoRA scale {scale} is not finite")));
        }
        let mut loras = self.loras.write().unwrap_or_else(|p| p.into_inner());
        let name = name.map(str::to_string).unwrap_or_else(|| loras.default.clone());
        if name.is_empty() {
            return Ok((None, 0));
        }
        let known = loras.by_name.keys().cloned().collect::<Vec<_>>().join(", ");
        let l = loras
            .by_name
            .get_mut(&name)
            .ok_or_else(|| Error::NotFound(format!("no LoRA adapter named {name:?} is loaded (loaded: [{known}])")))?;
        let key = adapter_key(l.identity, scale);
        l.keys.insert(key);
        Ok((Some((Arc::clone(&l.placed), scale)), key))
    }

    /// Loads the PEFT adapter directory `dir` (`adapter_config.json` and
    /// `adapter_model.safetensors`) under `name`, checking every tensor against the model's
    /// shapes; a name already in use is replaced. Requests name it (or it becomes the default
    /// through [`Runtime::switch_lora`]); running requests keep the adapter they started with.
    pub fn load_lora(&self, name: &str, dir: &Path) -> Result<()> {
        if name.is_empty() {
            return Err(Error::InvalidArgument("an adapter name must not be empty (\"\" means no adapter)".into()));
        }
        let adapter = crate::lora::LoraAdapter::load(dir, self.core.engine.config())?;
        let placed = self.core.engine.place_lora(&adapter)?;
        let loaded = LoadedLora { placed, identity: adapter.identity(), bytes: adapter.bytes(), keys: Default::default() };
        let old = self.loras.write().unwrap_or_else(|p| p.into_inner()).by_name.insert(name.to_string(), loaded);
        if let Some(old) = old {
            self.purge_prefixes(&old);
        }
        Ok(())
    }

    /// Unloads adapter `name` (requests already running with it finish with it) and drops the
    /// prefixes cached with it; the default adapter goes back to none if it was this one.
    pub fn unload_lora(&self, name: &str) -> Result<()> {
        let old = {
            let mut loras = self.loras.write().unwrap_or_else(|p| p.into_inner());
            let old = loras.by_name.remove(name).ok_or_else(|| Error::NotFound(format!("no LoRA adapter named {name:?} is loaded")))?;
            if loras.default == name {
                loras.default.clear();
            }
            old
        };
        self.purge_prefixes(&old);
        Ok(())
    }

    fn purge_prefixes(&self, l: &LoadedLora) {
        let mut kv = lock(&self.core.shared.kv);
        let scheduler::KvState { alloc, prefix } = &mut *kv;
        for &k in &l.keys {
            prefix.remove_adapter(alloc, k);
        }
    }

    /// Makes `name` the adapter of requests that do not name one; `""` means none.
    pub fn switch_lora(&self, name: &str) -> Result<()> {
        let mut loras = self.loras.write().unwrap_or_else(|p| p.into_inner());
        if !name.is_empty() && !loras.by_name.contains_key(name) {
            return Err(Error::NotFound(format!("no LoRA adapter named {name:?} is loaded")));
        }
        loras.default = name.to_string();
        Ok(())
    }

    /// Names of the loaded adapters, sorted.
    pub fn lora_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.loras.read().unwrap_or_else(|p| p.into_inner()).by_name.keys().cloned().collect();
        v.sort();
        v
    }

    /// Takes `n` KV blocks for a direct computation, evicting cached prefixes as needed.
    fn take_blocks(&self, n: usize) -> Result<Vec<u32>> {
        lock(&self.core.shared.kv).take(n).ok_or_else(|| {
            Error::OutOfMemory(format!("{n} KV blocks are needed but running requests and cached prompts hold the cache"))
        })
    }

    /// Runs prompt tokens `ids[from..]` of a sequence whose blocks are `blocks`, in chunks;
    /// returns the logits of its last position.
    fn prefill(&self, ids: &[u32], from: usize, blocks: &[u32], lora: Option<crate::model::adapters::LoraRef<'_>>) -> Result<Vec<f32>> {
        let mut last = Vec::new();
        let mut pos = from;
        while pos < ids.len() {
            let end = (pos + PREFILL_CHUNK).min(ids.len());
            let logits = if end == ids.len() { LogitRows::Last } else { LogitRows::None };
            let seq = SeqInput { ids: &ids[pos..end], pos0: pos, blocks, prompt: true, logits, lora };
            last = self.core.engine.forward(std::slice::from_ref(&seq))?.pop().unwrap_or_default().pop().unwrap_or_default();
            pos = end;
        }
        Ok(last)
    }

    fn cache_geometry(&self) -> kv_file::Geometry {
        let cfg = self.core.engine.config();
        kv_file::Geometry {
            model: self.core.fingerprint,
            block_tokens: BLOCK_TOKENS as u32,
            n_layers: cfg.n_layers as u32,
            kv_dim: cfg.kv_dim() as u32,
            element_bytes: self.core.engine.kv_element_bytes() as u32,
        }
    }

    /// Writes every cached prefix block (keys, values, tokens, pins) to `path`, checked against
    /// this model when loaded back. Returns the number of blocks written.
    pub fn save_prefix_cache(&self, path: &Path) -> Result<usize> {
        let g = self.cache_geometry();
        let entries = {
            // Held while reading: no cached block can be freed and reused meanwhile.
            let kv = lock(&self.core.shared.kv);
            let mut out = Vec::with_capacity(kv.prefix.len());
            for (key, e) in kv.prefix.entries_in_order() {
                let s0 = e.block as usize * BLOCK_TOKENS;
                out.push(kv_file::FileEntry {
                    key,
                    parent: e.parent,
                    adapter: e.adapter,
                    pinned: e.pinned,
                    tokens: e.tokens.to_vec(),
                    kv: self.core.engine.kv_read(s0..s0 + BLOCK_TOKENS)?,
                });
            }
            out
        };
        kv_file::write(path, &g, &entries)?;
        Ok(entries.len())
    }

    /// Loads a prefix cache written by [`Runtime::save_prefix_cache`] for this model; a file for
    /// another model, another cache layout, or a corrupt one is refused whole. Blocks already
    /// cached are kept; loading stops early when the cache is full. Returns the number of blocks
    /// added.
    pub fn load_prefix_cache(&self, path: &Path) -> Result<usize> {
        let entries = kv_file::read(path, &self.cache_geometry())?;
        for e in &entries {
            if crate::kv_cache::prefix::block_key(e.parent, e.adapter, &e.tokens) != e.key {
                return Err(Error::format(path, "an entry's key does not match its tokens (written by an incompatible build)"));
            }
        }
        let mut kv = lock(&self.core.shared.kv);
        let mut added = 0;
        for e in entries {
            let parent_ok = e.parent.is_none_or(|p| kv.prefix.contains(p));
            if kv.prefix.contains(e.key) || !parent_ok {
                continue;
            }
            let Some(block) = kv.take(1).and_then(|b| b.first().copied()) else { break };
            let s0 = block as usize * BLOCK_TOKENS;
            if let Err(err) = self.core.engine.kv_write(s0..s0 + BLOCK_TOKENS, &e.kv) {
                kv.release(&[block]);
                return Err(err);
            }
            let entry = PrefixCache::new_entry(block, e.parent, e.tokens.into(), e.adapter, e.pinned);
            kv.prefix.restore(e.key, entry);
            added += 1;
        }
        Ok(added)
    }

    /// Memory and counters of this runtime.
    pub fn metrics(&self) -> RuntimeMetrics {
        let (used, cached) = {
            let kv = lock(&self.core.shared.kv);
            (kv.alloc.n_blocks() - kv.alloc.n_free(), kv.prefix.len())
        };
        let st = &self.core.shared.stats;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let block_bytes = (self.info.kv_block_tokens as u64) * self.info.kv_bytes_per_token;
        let steps = get(&st.steps);
        RuntimeMetrics {
            weight_bytes: self.info.weight_bytes,
            kv_used_bytes: used as u64 * block_bytes,
            kv_total_bytes: self.info.kv_bytes,
            kv_used_blocks: used,
            kv_total_blocks: self.info.kv_blocks,
            kv_cached_blocks: cached,
            sequences: get(&st.sequences),
            generated_tokens: get(&st.generated_tokens),
            prompt_tokens: get(&st.prompt_tokens),
            reused_prompt_tokens: get(&st.reused_tokens),
            cache_hits: get(&st.cache_hits),
            cache_lookups: get(&st.cache_lookups),
            steps,
            mean_batch: if steps > 0 { get(&st.step_sequences) as f64 / steps as f64 } else { 0.0 },
            scratch_bytes: self.info.scratch_bytes,
            lora_bytes: self.loras.read().unwrap_or_else(|p| p.into_inner()).by_name.values().map(|l| l.bytes as u64).sum(),
        }
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

    /// Runs `ids` as one sequence in blocks of its own (outside the batch, which waits for each
    /// pass) and hands each chunk's logits rows to `each`; `rows` picks them.
    fn run_private(&self, ids: &[u32], chunk: usize, rows: LogitRows, mut each: impl FnMut(usize, Vec<Vec<f32>>)) -> Result<()> {
        self.check_ids(ids)?;
        let blocks = self.take_blocks(blocks_for(ids.len()))?;
        let run = (|| {
            let chunks = ids.len().div_ceil(chunk);
            for (c, part) in ids.chunks(chunk).enumerate() {
                let want = if c + 1 == chunks && rows == LogitRows::None { LogitRows::Last } else { rows };
                let seq = SeqInput { ids: part, pos0: c * chunk, blocks: &blocks, prompt: true, logits: want, lora: None };
                let out = self.core.engine.forward(std::slice::from_ref(&seq))?.pop().unwrap_or_default();
                each(c * chunk, out);
            }
            Ok(())
        })();
        lock(&self.core.shared.kv).release(&blocks);
        run
    }

    /// Logits for `ids` (with the runtime's arithmetic: see [`RuntimeParams::exact_math`]): the last position, or every position.
    pub fn logits(&self, ids: &[u32], all_positions: bool) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::new();
        let rows = if all_positions { LogitRows::All } else { LogitRows::None };
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

/// A fingerprint of a model: its hyperparameters, its tensor table and the first and last bytes of
/// every tensor (cheap to compute, and a different file of the same shape differs in them).
fn model_fingerprint(cfg: &crate::model::ModelConfig, weights: &crate::tensor::WeightMap) -> u64 {
    let mut h = kv_file::fnv1a(format!("{cfg:?}").as_bytes(), kv_file::FNV_START);
    let mut tensors: Vec<_> = weights.iter().collect();
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    for t in tensors {
        h = kv_file::fnv1a(format!("{}:{}:{:?}", t.name, t.dtype.name(), t.shape).as_bytes(), h);
        let b = t.bytes();
        h = kv_file::fnv1a(&b[..b.len().min(256)], h);
        h = kv_file::fnv1a(&b[b.len().saturating_sub(256)..], h);
    }
    h
}

/// Tokenizer errors from a model file name the file.
fn in_file(e: Error, path: &Path) -> Error {
    match e {
        Error::Tokenizer(m) => Error::format(path, format!("vocabulary: {m}")),
        other => other,
    }
}
