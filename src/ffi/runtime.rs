//! `edgellm_runtime`: create/destroy a runtime, read model facts, serve requests. Mirrors
//! `crate::runtime::Runtime`.

use std::ffi::{c_char, CString};
use std::path::Path;

use super::handle::{self, Handle, Versioned};
use super::request::{edgellm_request, RequestData};
use super::response::{edgellm_response, ResponseData};
use super::status::{boundary, edgellm_status, Failure};
use crate::kv_cache::KvBudget;
use crate::runtime::{BackendKind, ModelInfo, Runtime, RuntimeParams, StreamEvent, StreamFn};
use crate::Error;

/// Opaque loaded model ready to serve requests. Thread-safe: every function taking a
/// `const edgellm_runtime*` may be called from several threads at once.
#[allow(non_camel_case_types)]
pub struct edgellm_runtime {
    _private: [u8; 0],
}

/// Compute backend choice (values of `edgellm_runtime_params.backend`).
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum edgellm_backend {
    /// The CPU backend (always available).
    EDGELLM_BACKEND_CPU = 0,
    /// The CUDA backend (needs a CUDA-enabled build and a driver).
    EDGELLM_BACKEND_CUDA = 1,
    /// CUDA when available, else the CPU.
    EDGELLM_BACKEND_AUTO = 2,
}

/// Parameters for `edgellm_runtime_create`. Get defaults from
/// `edgellm_runtime_default_params()` and change fields; never fill `struct_size` by hand.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct edgellm_runtime_params {
    /// Size of this struct as the caller compiled it; set by `edgellm_runtime_default_params()`.
    pub struct_size: u32,
    /// CPU worker threads; 0 uses every available core.
    pub threads: u32,
    /// Context window in tokens; 0 uses the model's trained context length.
    pub context_length: u32,
    /// Maximum number of sequences decoded together.
    pub max_batch: u32,
    /// An `edgellm_backend` value.
    pub backend: u32,
    /// Default seed for requests that do not set their own.
    pub seed: u64,
    /// Non-zero: the CPU backend computes with f32 activations and an f32 KV cache (its reference
    /// arithmetic) instead of int8 activations and an f16 cache; several times slower. Added in
    /// 0.2; callers built against 0.1 get 0.
    pub exact_math: u32,
    /// KV-cache budget as a fraction (0, 1] of the host's physical memory; used when
    /// `kv_cache_bytes` is 0. 0 (the default) with `kv_cache_bytes` 0 sizes the cache
    /// automatically: `max_batch` full contexts, capped at a quarter of host memory but never less
    /// than one context. Added in 0.2.
    pub kv_cache_fraction: f32,
    /// KV-cache budget in bytes (all sequences and cached prefixes); 0 uses `kv_cache_fraction`
    /// or the automatic size. A budget below one full context fails `edgellm_runtime_create` with
    /// `EDGELLM_ERR_OUT_OF_MEMORY`, saying what would fit. Added in 0.2.
    pub kv_cache_bytes: u64,
}

impl Default for edgellm_runtime_params {
    fn default() -> Self {
        let d = RuntimeParams::default();
        edgellm_runtime_params {
            struct_size: std::mem::size_of::<Self>() as u32,
            threads: saturate(d.threads),
            context_length: saturate(d.context_length),
            max_batch: saturate(d.max_batch),
            backend: match d.backend {
                BackendKind::Cpu => edgellm_backend::EDGELLM_BACKEND_CPU,
                BackendKind::Cuda => edgellm_backend::EDGELLM_BACKEND_CUDA,
                BackendKind::Auto => edgellm_backend::EDGELLM_BACKEND_AUTO,
            } as u32,
            seed: d.seed,
            exact_math: d.exact_math as u32,
            kv_cache_fraction: 0.0,
            kv_cache_bytes: 0,
        }
    }
}

fn saturate(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

impl Versioned for edgellm_runtime_params {
    /// Version 0.1 ended with `seed`.
    const MIN_SIZE: usize = std::mem::offset_of!(edgellm_runtime_params, exact_math);
    const NAME: &'static str = "edgellm_runtime_params";
}

/// Converts the C parameters, rejecting an unknown backend value.
fn runtime_params(p: edgellm_runtime_params) -> Result<RuntimeParams, Failure> {
    let backend = match p.backend {
        0 => BackendKind::Cpu,
        1 => BackendKind::Cuda,
        2 => BackendKind::Auto,
        other => return Err(Error::InvalidArgument(format!("unknown backend {other}")).into()),
    };
    Ok(RuntimeParams {
        threads: p.threads as usize,
        context_length: p.context_length as usize,
        max_batch: p.max_batch as usize,
        backend,
        seed: p.seed,
        exact_math: p.exact_math != 0,
        kv_budget: if p.kv_cache_bytes > 0 {
            KvBudget::Bytes(p.kv_cache_bytes)
        } else if p.kv_cache_fraction != 0.0 {
            KvBudget::HostFraction(p.kv_cache_fraction as f64)
        } else {
            KvBudget::Auto
        },
    })
}

/// What an `edgellm_runtime` handle owns: the runtime and the strings getters lend out.
pub(crate) struct RuntimeData {
    pub(crate) runtime: Runtime,
    architecture: CString,
    name: CString,
}

impl Handle for edgellm_runtime {
    type Target = RuntimeData;
    const NAME: &'static str = "runtime";
}

// Requests on one runtime come from many threads (see `edgellm_runtime`'s doc); this fails to
// compile if the runtime ever stops being shareable.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<RuntimeData>();
};

/// A C copy of metadata text; a NUL inside (possible in a hostile file) ends the string there.
fn c_string(text: &str) -> CString {
    let before_nul = text.split('\0').next().unwrap_or_default();
    CString::new(before_nul).unwrap_or_default()
}

fn info<'a>(rt: *const edgellm_runtime) -> Result<&'a ModelInfo, Failure> {
    Ok(handle::borrow(rt)?.runtime.info())
}

/// Returns runtime parameters with every field at its default and `struct_size` set.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn edgellm_runtime_default_params() -> edgellm_runtime_params {
    super::status::boundary_value(edgellm_runtime_params::default(), edgellm_runtime_params::default)
}

/// Loads the model at `model_path` (a GGUF file or a Hugging Face model directory; NUL-terminated
/// UTF-8) with `params` (NULL = defaults) and stores the new runtime in `*out`.
///
/// The caller owns the runtime and frees it with `edgellm_runtime_destroy`. `*out` is written
/// only on success. Thread-safe.
#[no_mangle]
pub extern "C" fn edgellm_runtime_create(
    model_path: *const c_char,
    params: *const edgellm_runtime_params,
    out: *mut *mut edgellm_runtime,
) -> edgellm_status {
    boundary("edgellm_runtime_create", || {
        let path = handle::c_str(model_path, "model_path")?;
        let params = runtime_params(handle::read_versioned(params)?)?;
        handle::require_out(out, "out")?;
        let runtime = Runtime::create(Path::new(path), &params)?;
        let architecture = c_string(&runtime.info().architecture);
        let name = c_string(&runtime.info().name);
        let data = RuntimeData {
            runtime,
            architecture,
            name,
        };
        handle::write(out, handle::into_raw::<edgellm_runtime>(data), "out")
    })
}

/// Frees a runtime. NULL is ignored. No other call may be using the runtime; responses already
/// produced stay valid.
#[no_mangle]
pub extern "C" fn edgellm_runtime_destroy(rt: *mut edgellm_runtime) {
    super::status::boundary_value((), || handle::destroy(rt));
}

/// Generates for every prompt of `req` and stores the results in `*out` (one output per prompt,
/// in prompt order), calling the request's stream callback on this thread as tokens are made.
///
/// The caller owns the response and frees it with `edgellm_response_destroy`; `*out` is written
/// only on success. The runtime may serve several threads at once; `req` must not be used by
/// another thread during the call. A prompt that does not fit the context window fails the call
/// with `EDGELLM_ERR_CONTEXT_OVERFLOW` and leaves the runtime usable.
#[no_mangle]
pub extern "C" fn edgellm_runtime_handle_request(
    rt: *const edgellm_runtime,
    req: *const edgellm_request,
    out: *mut *mut edgellm_response,
) -> edgellm_status {
    boundary("edgellm_runtime_handle_request", || {
        let runtime = &handle::borrow(rt)?.runtime;
        let data: &RequestData = handle::borrow(req)?;
        handle::require_out(out, "out")?;
        let mut stream = data.stream.map(|callback| {
            let user_data = data.user_data;
            // Text plus a NUL, reused for every token so streaming does not allocate per token.
            let mut text = Vec::new();
            move |ev: StreamEvent<'_>| -> bool {
                text.clear();
                text.extend_from_slice(ev.text.as_bytes());
                text.push(0);
                // Ids beyond int32_t cannot occur in real vocabularies; -1 marks one if it did.
                let token = i32::try_from(ev.token).unwrap_or(-1);
                // SAFETY: the caller registered `callback` and `user_data` together and keeps
                // them valid while the request is handled; `text` outlives the call.
                let verdict =
                    unsafe { callback(user_data, ev.prompt_index, token, text.as_ptr().cast(), ev.text.len()) };
                verdict == 0
            }
        });
        let stream = stream.as_mut().map(|f| f as &mut StreamFn<'_>);
        let outputs = runtime.handle_request(&data.request, stream)?;
        let response = ResponseData::new(outputs)?;
        handle::write(out, handle::into_raw::<edgellm_response>(response), "out")
    })
}

/// Writes a pointer to the model's architecture name ("llama", "qwen2", "qwen3", "gemma3",
/// "mistral") to `*name`: NUL-terminated, owned by the runtime, valid until
/// `edgellm_runtime_destroy`. Thread-safe.
#[no_mangle]
pub extern "C" fn edgellm_runtime_architecture(rt: *const edgellm_runtime, name: *mut *const c_char) -> edgellm_status {
    boundary("edgellm_runtime_architecture", || {
        handle::write(name, handle::borrow(rt)?.architecture.as_ptr(), "name")
    })
}

/// Writes a pointer to the model's name from its metadata (empty when the file names none) to
/// `*name`: NUL-terminated, owned by the runtime, valid until `edgellm_runtime_destroy`.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn edgellm_runtime_model_name(rt: *const edgellm_runtime, name: *mut *const c_char) -> edgellm_status {
    boundary("edgellm_runtime_model_name", || {
        handle::write(name, handle::borrow(rt)?.name.as_ptr(), "name")
    })
}

/// Writes the context length the model was trained with, in tokens, to `*length`.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn edgellm_runtime_trained_context_length(
    rt: *const edgellm_runtime,
    length: *mut usize,
) -> edgellm_status {
    boundary("edgellm_runtime_trained_context_length", || {
        handle::write(length, info(rt)?.trained_context_length, "length")
    })
}

/// Writes the model's hidden (embedding) size to `*size`. Thread-safe.
#[no_mangle]
pub extern "C" fn edgellm_runtime_hidden_size(rt: *const edgellm_runtime, size: *mut usize) -> edgellm_status {
    boundary("edgellm_runtime_hidden_size", || {
        handle::write(size, info(rt)?.hidden_size, "size")
    })
}

/// Writes the total number of weight parameters to `*count`. Thread-safe.
#[no_mangle]
pub extern "C" fn edgellm_runtime_parameter_count(rt: *const edgellm_runtime, count: *mut u64) -> edgellm_status {
    boundary("edgellm_runtime_parameter_count", || {
        handle::write(count, info(rt)?.n_params, "count")
    })
}

/// Writes the bytes of weight data (as stored, quantized) to `*bytes`. Thread-safe.
#[no_mangle]
pub extern "C" fn edgellm_runtime_weight_bytes(rt: *const edgellm_runtime, bytes: *mut u64) -> edgellm_status {
    boundary("edgellm_runtime_weight_bytes", || {
        handle::write(bytes, info(rt)?.weight_bytes, "bytes")
    })
}

/// Writes the bytes of KV cache one token of context needs to `*bytes`. Thread-safe.
#[no_mangle]
pub extern "C" fn edgellm_runtime_kv_bytes_per_token(rt: *const edgellm_runtime, bytes: *mut u64) -> edgellm_status {
    boundary("edgellm_runtime_kv_bytes_per_token", || {
        handle::write(bytes, info(rt)?.kv_bytes_per_token, "bytes")
    })
}

/// Writes the number of tokens in the model's vocabulary to `*size`. Thread-safe.
#[no_mangle]
pub extern "C" fn edgellm_runtime_vocab_size(rt: *const edgellm_runtime, size: *mut usize) -> edgellm_status {
    boundary("edgellm_runtime_vocab_size", || {
        handle::write(size, info(rt)?.vocab_size, "size")
    })
}

/// Writes the context window this runtime was created with, in tokens, to `*length`.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn edgellm_runtime_context_length(rt: *const edgellm_runtime, length: *mut usize) -> edgellm_status {
    boundary("edgellm_runtime_context_length", || {
        handle::write(length, info(rt)?.context_length, "length")
    })
}

/// Writes the number of transformer layers of the model to `*count`. Thread-safe.
#[no_mangle]
pub extern "C" fn edgellm_runtime_layer_count(rt: *const edgellm_runtime, count: *mut usize) -> edgellm_status {
    boundary("edgellm_runtime_layer_count", || {
        handle::write(count, info(rt)?.n_layers, "count")
    })
}

/// Captures the decode step as CUDA graphs so later decoding replays them. A runtime on the CPU
/// backend returns `EDGELLM_ERR_UNSUPPORTED`. Thread-safe.
#[no_mangle]
pub extern "C" fn edgellm_runtime_capture_cuda_graph(rt: *const edgellm_runtime) -> edgellm_status {
    boundary("edgellm_runtime_capture_cuda_graph", || {
        Ok(handle::borrow(rt)?.runtime.capture_cuda_graph()?)
    })
}
