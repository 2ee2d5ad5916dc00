//! Sizing the KV cache before anything is allocated: a budget (bytes, a fraction of host memory,
//! or automatic) becomes a number of blocks, and a budget that cannot hold one full context is
//! refused with the context that would fit.

use super::BLOCK_TOKENS;
use crate::error::{Error, Result};

/// How much memory the KV cache may take.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KvBudget {
    /// Room for `max_batch` full contexts, capped at a quarter of host memory (at least one
    /// context).
    Auto,
    /// This many bytes.
    Bytes(u64),
    /// This fraction (0, 1] of the host's physical memory.
    HostFraction(f64),
}

/// The KV cache's size, decided before it is allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvPlan {
    /// Positions per block.
    pub block_tokens: usize,
    /// Number of blocks.
    pub n_blocks: usize,
    /// Bytes one position takes over all layers (keys and values).
    pub bytes_per_token: usize,
}

impl KvPlan {
    /// Sizes the cache for a model needing `bytes_per_token` per position, serving contexts of
    /// `context` tokens and batches of `max_batch` sequences, within `budget`.
    pub fn new(budget: KvBudget, bytes_per_token: usize, context: usize, max_batch: usize) -> Result<KvPlan> {
        let per_block = (bytes_per_token * BLOCK_TOKENS) as u64;
        let one_context = super::blocks_for(context) as u64;
        let bytes = match budget {
            KvBudget::Auto => {
                let want = one_context * max_batch as u64 * per_block;
                let cap = host_memory_bytes().map(|m| m / 4).unwrap_or(u64::MAX);
                want.min(cap).max(one_context * per_block)
            }
            KvBudget::Bytes(b) => b,
            KvBudget::HostFraction(f) => {
                if !(f > 0.0 && f <= 1.0) {
                    return Err(Error::InvalidArgument(format!("the KV cache fraction {f} is outside (0, 1]")));
                }
                let total = host_memory_bytes()
                    .ok_or_else(|| Error::Unsupported("the host memory size is unknown here; give the KV budget in bytes".into()))?;
                (total as f64 * f) as u64
            }
        };
        let n_blocks = (bytes / per_block.max(1)) as usize;
        if (n_blocks as u64) < one_context {
            let fits = n_blocks * BLOCK_TOKENS;
            return Err(Error::OutOfMemory(format!(
                "a KV budget of {bytes} bytes holds {fits} tokens ({per_block} bytes per block of {BLOCK_TOKENS}), less than one context of {context} tokens; raise the budget to at least {} bytes or use a context of at most {fits} tokens",
                one_context * per_block
            )));
        }
        Ok(KvPlan { block_tokens: BLOCK_TOKENS, n_blocks, bytes_per_token })
    }

    /// Bytes the whole cache takes.
    pub fn bytes(&self) -> u64 {
        (self.n_blocks * self.block_tokens * self.bytes_per_token) as u64
    }

    /// Positions the whole cache holds.
    pub fn capacity_tokens(&self) -> usize {
        self.n_blocks * self.block_tokens
    }
}

/// Physical memory of this machine, from `/proc/meminfo` (Linux).
pub fn host_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_in_bytes_gives_whole_blocks() {
        let p = KvPlan::new(KvBudget::Bytes(10 * 16 * 100 + 99), 100, 64, 1).unwrap();
        assert_eq!(p.n_blocks, 10);
        assert_eq!(p.capacity_tokens(), 160);
    }

    #[test]
    fn budget_below_one_context_says_what_fits() {
        let e = KvPlan::new(KvBudget::Bytes(3 * 16 * 100), 100, 64, 1).unwrap_err().to_string();
        assert!(e.contains("holds 48 tokens") && e.contains("6400 bytes"), "{e}");
    }

    #[test]
    fn auto_budget_holds_every_batch_slot_when_memory_allows() {
        let p = KvPlan::new(KvBudget::Auto, 100, 64, 4).unwrap();
        assert_eq!(p.n_blocks, 16);
        assert!(KvPlan::new(KvBudget::HostFraction(1.5), 100, 64, 1).is_err());
    }
}
