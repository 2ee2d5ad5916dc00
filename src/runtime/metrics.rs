//! Runtime metrics: memory by kind and the scheduler's counters.

use std::sync::atomic::Ordering;

use super::scheduler::lock;
use super::Runtime;

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

impl Runtime {
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
            lora_bytes: self.lora_bytes(),
        }
    }
}
