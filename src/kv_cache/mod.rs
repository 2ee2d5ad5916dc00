//! Paged KV-cache bookkeeping, independent of where the keys and values live: the cache is cut
//! into fixed blocks of [`BLOCK_TOKENS`] positions (`plan` sizes it from a memory budget),
//! sequences hold lists of blocks (`blocks` counts references), and the prefix cache (`prefix`)
//! keeps finished blocks findable by their token content, so a later prompt with the same prefix
//! shares them without a copy. The backend stores the rows; this module only hands out indices.

pub mod blocks;
pub mod file;
pub mod plan;
pub mod prefix;

pub use blocks::BlockAllocator;
pub use plan::{KvBudget, KvPlan};
pub use prefix::PrefixCache;

/// Positions per KV block. 16 keeps the unshared tail of a cached prompt small (at most 15
/// positions are recomputed) while a decode step still reads each block as one strided run.
pub const BLOCK_TOKENS: usize = 16;

/// Backend slot (row index within a layer's storage) of position `pos` of a sequence whose
/// block table is `blocks`.
#[inline]
pub fn slot(blocks: &[u32], pos: usize) -> usize {
    blocks[pos / BLOCK_TOKENS] as usize * BLOCK_TOKENS + pos % BLOCK_TOKENS
}

/// Blocks needed to hold `tokens` positions.
pub fn blocks_for(tokens: usize) -> usize {
    tokens.div_ceil(BLOCK_TOKENS)
}
