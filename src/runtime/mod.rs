//! The runtime: one loaded model (weights on a backend, vocabulary, chat template) that serves
//! generation requests. This is the Rust API the C ABI in `src/ffi` wraps one to one.

pub mod request;

use std::path::Path;

pub use request::{
    CancelToken, FinishReason, GenerationOutput, GenerationRequest, Message, PromptInput, SamplingParams, StreamEvent, StreamFn,
};

use crate::error::{Error, Result};

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
    /// Default seed for requests that do not set their own.
    pub seed: u64,
}

impl Default for RuntimeParams {
    fn default() -> Self {
        RuntimeParams { threads: 0, context_length: 0, max_batch: 4, backend: BackendKind::Auto, seed: 0 }
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

/// A loaded model ready to serve requests. `Send + Sync`: requests from several threads are
/// serialized internally.
pub struct Runtime {
    _private: (),
}

impl Runtime {
    /// Loads the model at `path` (a GGUF file or a Hugging Face directory).
    pub fn create(path: &Path, params: &RuntimeParams) -> Result<Runtime> {
        let _ = (path, params);
        Err(Error::Unsupported("runtime not implemented yet".into()))
    }

    /// Facts about the loaded model.
    pub fn info(&self) -> &ModelInfo {
        unimplemented!()
    }

    /// Generates for every prompt of `request`, streaming pieces to `stream` when given.
    pub fn handle_request(
        &self,
        request: &GenerationRequest,
        stream: Option<&mut StreamFn<'_>>,
    ) -> Result<Vec<GenerationOutput>> {
        let _ = (request, stream);
        Err(Error::Unsupported("runtime not implemented yet".into()))
    }

    /// Tokenizes `text`; `add_special` adds BOS when the vocabulary adds one. Special-token text
    /// such as `<|im_start|>` is always recognised.
    pub fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let _ = (text, add_special);
        Err(Error::Unsupported("runtime not implemented yet".into()))
    }

    /// Turns token ids back into text (special tokens included as their text).
    pub fn detokenize(&self, ids: &[u32]) -> Result<String> {
        let _ = ids;
        Err(Error::Unsupported("runtime not implemented yet".into()))
    }

    /// Renders `messages` with the model's chat template, or the built-in `style` when given.
    pub fn apply_chat_template(&self, messages: &[Message], add_generation_prompt: bool, style: Option<&str>) -> Result<String> {
        let _ = (messages, add_generation_prompt, style);
        Err(Error::Unsupported("runtime not implemented yet".into()))
    }

    /// Exact-path (f32 activations) logits for `ids`: the last position, or every position.
    pub fn logits(&self, ids: &[u32], all_positions: bool) -> Result<Vec<Vec<f32>>> {
        let _ = (ids, all_positions);
        Err(Error::Unsupported("runtime not implemented yet".into()))
    }

    /// Captures the decode step as CUDA graphs; the CPU backend answers `Unsupported`.
    pub fn capture_cuda_graph(&self) -> Result<()> {
        Err(Error::Unsupported("CUDA graphs need the CUDA backend; this runtime runs on the CPU".into()))
    }
}
