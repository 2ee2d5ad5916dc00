//! Serving features of `edgellm_runtime`: cached system prompts and the prefix cache on disk,
//! LoRA adapters by name, and metrics. Mirrors the matching `crate::runtime::Runtime` methods.

use std::ffi::c_char;
use std::path::Path;

use super::handle::{self, Versioned};
use super::runtime::edgellm_runtime;
use super::status::{boundary, edgellm_status};

/// Prefills `system_prompt` (NUL-terminated UTF-8) once and keeps its KV blocks in the prefix
/// cache, pinned: later requests whose templated prompt starts with the same tokens, with the
/// same adapter at scale 1, share those blocks without a copy and prefill only the rest. With a
/// chat template the cached part is what every `[system, user]` conversation with this system
/// prompt starts with; without one, the text itself. `lora_name` picks the adapter as a request
/// does (NULL: the runtime's default adapter; "": none). Writes the number of prompt tokens
/// cached (whole KV blocks) to `*cached_tokens` when it is not NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn edgellm_runtime_cache_system_prompt(
    rt: *const edgellm_runtime,
    system_prompt: *const c_char,
    lora_name: *const c_char,
    cached_tokens: *mut usize,
) -> edgellm_status {
    boundary("edgellm_runtime_cache_system_prompt", || {
        let runtime = &handle::borrow(rt)?.runtime;
        let text = handle::c_str(system_prompt, "system_prompt")?;
        let lora = handle::opt_c_str(lora_name, "lora_name")?;
        let n = runtime.cache_system_prompt(text, lora, None)?;
        handle::write_opt(cached_tokens, n);
        Ok(())
    })
}

/// Writes every cached prefix block to the file `path` (NUL-terminated UTF-8; replaced
/// atomically) and the number of blocks to `*blocks` when it is not NULL. The file is versioned
/// and records the model's fingerprint. Thread-safe.
#[no_mangle]
pub extern "C" fn edgellm_runtime_save_prefix_cache(rt: *const edgellm_runtime, path: *const c_char, blocks: *mut usize) -> edgellm_status {
    boundary("edgellm_runtime_save_prefix_cache", || {
        let runtime = &handle::borrow(rt)?.runtime;
        let n = runtime.save_prefix_cache(Path::new(handle::c_str(path, "path")?))?;
        handle::write_opt(blocks, n);
        Ok(())
    })
}

/// Loads a prefix cache saved by `edgellm_runtime_save_prefix_cache` for this model and writes
/// the number of blocks added to `*blocks` when it is not NULL. A file for another model or cache
/// layout is refused with `EDGELLM_ERR_INVALID_ARGUMENT`, a corrupt or truncated one with
/// `EDGELLM_ERR_MODEL_FORMAT`; nothing is loaded from a refused file and the runtime stays
/// usable. Thread-safe.
#[no_mangle]
pub extern "C" fn edgellm_runtime_load_prefix_cache(rt: *const edgellm_runtime, path: *const c_char, blocks: *mut usize) -> edgellm_status {
    boundary("edgellm_runtime_load_prefix_cache", || {
        let runtime = &handle::borrow(rt)?.runtime;
        let n = runtime.load_prefix_cache(Path::new(handle::c_str(path, "path")?))?;
        handle::write_opt(blocks, n);
        Ok(())
    })
}

/// Loads the PEFT LoRA adapter directory `path` (`adapter_config.json` and
/// `adapter_model.safetensors`, no conversion) under `name` (both NUL-terminated UTF-8),
/// replacing an adapter of that name. Every tensor is checked against the model's shapes: an
/// adapter made for another model fails with a message naming the tensor. Thread-safe; requests
/// already running keep the adapter they started with.
#[no_mangle]
pub extern "C" fn edgellm_runtime_load_lora(rt: *const edgellm_runtime, name: *const c_char, path: *const c_char) -> edgellm_status {
    boundary("edgellm_runtime_load_lora", || {
        let runtime = &handle::borrow(rt)?.runtime;
        Ok(runtime.load_lora(handle::c_str(name, "name")?, Path::new(handle::c_str(path, "path")?))?)
    })
}

/// Unloads adapter `name` and drops the prefixes cached with it; an unknown name is
/// `EDGELLM_ERR_NOT_FOUND`. If it was the default adapter, the default becomes none.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn edgellm_runtime_unload_lora(rt: *const edgellm_runtime, name: *const c_char) -> edgellm_status {
    boundary("edgellm_runtime_unload_lora", || {
        Ok(handle::borrow(rt)?.runtime.unload_lora(handle::c_str(name, "name")?)?)
    })
}

/// Makes adapter `name` the one used by requests that name none ("" = no adapter); an unknown
/// name is `EDGELLM_ERR_NOT_FOUND`. Thread-safe.
#[no_mangle]
pub extern "C" fn edgellm_runtime_switch_lora(rt: *const edgellm_runtime, name: *const c_char) -> edgellm_status {
    boundary("edgellm_runtime_switch_lora", || {
        Ok(handle::borrow(rt)?.runtime.switch_lora(handle::c_str(name, "name")?)?)
    })
}

/// Memory and counters of a runtime. Set `struct_size` to `sizeof(edgellm_runtime_metrics)`
/// before calling `edgellm_runtime_get_metrics`; a library with more fields fills only those the
/// caller knows.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct edgellm_runtime_metrics {
    /// Size of this struct as the caller compiled it.
    pub struct_size: u32,
    /// KV blocks in all (planned from the budget at creation).
    pub kv_total_blocks: u32,
    /// KV blocks in use by requests and cached prefixes.
    pub kv_used_blocks: u32,
    /// KV blocks held by the prefix cache.
    pub kv_cached_blocks: u32,
    /// Bytes of weight data.
    pub weight_bytes: u64,
    /// Bytes of the whole KV cache.
    pub kv_total_bytes: u64,
    /// Bytes of the KV blocks in use.
    pub kv_used_bytes: u64,
    /// Bytes of loaded LoRA adapters.
    pub lora_bytes: u64,
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
    /// Forward steps run by the scheduler.
    pub steps: u64,
    /// Mean number of sequences per step (continuous batching at work).
    pub mean_batch: f64,
    /// Bytes of activation buffers the largest step allocates.
    pub scratch_bytes: u64,
}

impl Versioned for edgellm_runtime_metrics {
    const MIN_SIZE: usize = 8;
    const NAME: &'static str = "edgellm_runtime_metrics";
}

/// Fills `*metrics` (whose `struct_size` the caller set) with the runtime's memory by kind and
/// its counters. Thread-safe.
#[no_mangle]
pub extern "C" fn edgellm_runtime_get_metrics(rt: *const edgellm_runtime, metrics: *mut edgellm_runtime_metrics) -> edgellm_status {
    boundary("edgellm_runtime_get_metrics", || {
        let m = handle::borrow(rt)?.runtime.metrics();
        let sat = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        let value = edgellm_runtime_metrics {
            struct_size: std::mem::size_of::<edgellm_runtime_metrics>() as u32,
            kv_total_blocks: sat(m.kv_total_blocks),
            kv_used_blocks: sat(m.kv_used_blocks),
            kv_cached_blocks: sat(m.kv_cached_blocks),
            weight_bytes: m.weight_bytes,
            kv_total_bytes: m.kv_total_bytes,
            kv_used_bytes: m.kv_used_bytes,
            lora_bytes: m.lora_bytes,
            sequences: m.sequences,
            generated_tokens: m.generated_tokens,
            prompt_tokens: m.prompt_tokens,
            reused_prompt_tokens: m.reused_prompt_tokens,
            cache_hits: m.cache_hits,
            cache_lookups: m.cache_lookups,
            steps: m.steps,
            mean_batch: m.mean_batch,
            scratch_bytes: m.scratch_bytes,
        };
        handle::write_versioned(metrics, value)
    })
}
