//! The prefix cache: full KV blocks kept after their sequence ends, found again by their content.
//!
//! A block's key is a hash chained over every block before it (plus the LoRA adapter in use, since
//! an adapter changes the keys and values), so a lookup walks a prompt block by block and stops at
//! the first miss: the blocks found are exactly the longest cached prefix. Entries also keep their
//! tokens and parent key, checked on every hit, so a hash collision is a miss and never wrong KV.
//! The cache holds one reference to each of its blocks; under memory pressure the least recently
//! used unpinned leaf that no sequence holds is evicted.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use super::{BlockAllocator, BLOCK_TOKENS};

/// One cached block.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The KV block.
    pub block: u32,
    /// Key of the block before it (`None` for a sequence's first block).
    pub parent: Option<u64>,
    /// The [`BLOCK_TOKENS`] tokens it holds.
    pub tokens: Box<[u32]>,
    /// Identity of the adapter its keys and values were computed with (0: none).
    pub adapter: u64,
    /// Whether an explicit system-prompt cache call asked to keep it.
    pub pinned: bool,
    children: u32,
    last_use: u64,
}

/// Cached blocks by content.
#[derive(Debug, Default)]
pub struct PrefixCache {
    entries: HashMap<u64, Entry>,
    clock: u64,
}

/// Key of a block holding `tokens` after the block keyed `parent`, computed with `adapter`.
pub fn block_key(parent: Option<u64>, adapter: u64, tokens: &[u32]) -> u64 {
    // SipHash with fixed keys: stable across runs and processes, so saved caches stay valid.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parent.hash(&mut h);
    adapter.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

impl PrefixCache {
    /// An empty cache.
    pub fn new() -> PrefixCache {
        PrefixCache::default()
    }

    /// Number of cached blocks.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether a block with key `key` is cached.
    pub fn contains(&self, key: u64) -> bool {
        self.entries.contains_key(&key)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Cached blocks, parents before children, for saving.
    pub fn entries_in_order(&self) -> Vec<(u64, &Entry)> {
        let mut depth: HashMap<u64, usize> = HashMap::new();
        fn depth_of(k: u64, e: &HashMap<u64, Entry>, memo: &mut HashMap<u64, usize>) -> usize {
            if let Some(&d) = memo.get(&k) {
                return d;
            }
            let d = match e.get(&k).and_then(|x| x.parent) {
                Some(p) if e.contains_key(&p) => depth_of(p, e, memo) + 1,
                _ => 0,
            };
            memo.insert(k, d);
            d
        }
        let mut out: Vec<(u64, &Entry)> = self.entries.iter().map(|(k, e)| (*k, e)).collect();
        for (k, _) in &out {
            depth_of(*k, &self.entries, &mut depth);
        }
        out.sort_by_key(|(k, _)| (depth[k], *k));
        out
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn matches(e: &Entry, parent: Option<u64>, adapter: u64, tokens: &[u32]) -> bool {
        e.parent == parent && e.adapter == adapter && *e.tokens == *tokens
    }

    /// The cached blocks holding the longest prefix of `tokens` (whole blocks, at most
    /// `max_blocks`), each retained for the caller, which releases them when done.
    pub fn lookup(&mut self, alloc: &mut BlockAllocator, adapter: u64, tokens: &[u32], max_blocks: usize) -> Vec<u32> {
        let now = self.tick();
        let mut found = Vec::new();
        let mut parent = None;
        for chunk in tokens.chunks_exact(BLOCK_TOKENS).take(max_blocks) {
            let key = block_key(parent, adapter, chunk);
            match self.entries.get_mut(&key) {
                Some(e) if Self::matches(e, parent, adapter, chunk) => {
                    e.last_use = now;
                    alloc.retain(e.block);
                    found.push(e.block);
                }
                _ => break,
            }
            parent = Some(key);
        }
        found
    }

    /// Makes the full blocks of a sequence findable: `blocks[i]` holds
    /// `tokens[i * BLOCK_TOKENS..(i + 1) * BLOCK_TOKENS]`. The cache takes a reference to each
    /// block it adds; a block whose content is already cached under another block is skipped
    /// (its holder frees it). Returns the number of blocks added.
    pub fn insert(&mut self, alloc: &mut BlockAllocator, adapter: u64, tokens: &[u32], blocks: &[u32]) -> usize {
        let now = self.tick();
        let mut parent = None;
        let mut added = 0;
        for (chunk, &block) in tokens.chunks_exact(BLOCK_TOKENS).zip(blocks) {
            let key = block_key(parent, adapter, chunk);
            match self.entries.get_mut(&key) {
                Some(e) if Self::matches(e, parent, adapter, chunk) => e.last_use = now,
                // A different block under the same key: a hash collision; stop here.
                Some(_) => break,
                None => {
                    alloc.retain(block);
                    if let Some(p) = parent.and_then(|p| self.entries.get_mut(&p)) {
                        p.children += 1;
                    }
                    let e = Entry { block, parent, tokens: chunk.into(), adapter, pinned: false, children: 0, last_use: now };
                    self.entries.insert(key, e);
                    added += 1;
                }
            }
            parent = Some(key);
        }
        added
    }

    /// Marks the cached blocks of the prefix `tokens` as pinned (never evicted); returns how many
    /// whole blocks of it are cached and now pinned.
    pub fn pin(&mut self, adapter: u64, tokens: &[u32]) -> usize {
        let mut parent = None;
        let mut n = 0;
        for chunk in tokens.chunks_exact(BLOCK_TOKENS) {
            let key = block_key(parent, adapter, chunk);
            match self.entries.get_mut(&key) {
                Some(e) if Self::matches(e, parent, adapter, chunk) => {
                    e.pinned = true;
                    n += 1;
                }
                _ => break,
            }
            parent = Some(key);
        }
        n
    }

    /// Frees the least recently used block that is unpinned, has no cached child and is held by
    /// no sequence; false when no block qualifies.
    pub fn evict_one(&mut self, alloc: &mut BlockAllocator) -> bool {
        let victim = self
            .entries
            .iter()
            .filter(|(_, e)| !e.pinned && e.children == 0 && alloc.refs(e.block) == 1)
            .min_by_key(|(_, e)| e.last_use)
            .map(|(k, _)| *k);
        match victim {
            Some(k) => {
                self.remove(alloc, k);
                true
            }
            None => false,
        }
    }

    fn remove(&mut self, alloc: &mut BlockAllocator, key: u64) {
        if let Some(e) = self.entries.remove(&key) {
            if let Some(p) = e.parent.and_then(|p| self.entries.get_mut(&p)) {
                p.children = p.children.saturating_sub(1);
            }
            alloc.release(e.block);
        }
    }

    /// Drops every entry computed with `adapter` (pinned ones too), e.g. when it is unloaded.
    pub fn remove_adapter(&mut self, alloc: &mut BlockAllocator, adapter: u64) {
        let keys: Vec<u64> = self.entries.iter().filter(|(_, e)| e.adapter == adapter).map(|(k, _)| *k).collect();
        for k in keys {
            self.remove(alloc, k);
        }
    }

    /// Adds an entry read back from a saved cache (its block already holds the keys and values
    /// and is retained for the cache by the caller).
    pub fn restore(&mut self, key: u64, e: Entry) {
        if let Some(p) = e.parent.and_then(|p| self.entries.get_mut(&p)) {
            p.children += 1;
        }
        self.entries.insert(key, Entry { children: 0, last_use: 0, ..e });
    }

    /// Makes an entry for [`PrefixCache::restore`].
    pub fn new_entry(block: u32, parent: Option<u64>, tokens: Box<[u32]>, adapter: u64, pinned: bool) -> Entry {
        Entry { block, parent, tokens, adapter, pinned, children: 0, last_use: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(n: usize, salt: u32) -> Vec<u32> {
        (0..n as u32).map(|i| i * 7 + salt).collect()
    }

    #[test]
    fn lookup_finds_the_longest_cached_prefix_in_whole_blocks() {
        let mut a = BlockAllocator::new(8);
        let mut c = PrefixCache::new();
        let t = toks(3 * BLOCK_TOKENS + 5, 1);
        let blocks: Vec<u32> = (0..4).map(|_| a.alloc().unwrap()).collect();
        assert_eq!(c.insert(&mut a, 0, &t, &blocks), 3);
        for &b in &blocks {
            a.release(b);
        }
        // The partial fourth block was not cached and is free again.
        assert_eq!(a.n_free(), 5);
        let mut q = t[..2 * BLOCK_TOKENS + 3].to_vec();
        assert_eq!(c.lookup(&mut a, 0, &q, usize::MAX), blocks[..2].to_vec());
        q[BLOCK_TOKENS + 1] += 1;
        assert_eq!(c.lookup(&mut a, 0, &q, usize::MAX), blocks[..1].to_vec());
        // Another adapter sees nothing.
        assert!(c.lookup(&mut a, 9, &t, usize::MAX).is_empty());
    }

    #[test]
    fn eviction_takes_unheld_unpinned_leaves_first() {
        let mut a = BlockAllocator::new(4);
        let mut c = PrefixCache::new();
        let t = toks(2 * BLOCK_TOKENS, 3);
        let blocks: Vec<u32> = (0..2).map(|_| a.alloc().unwrap()).collect();
        c.insert(&mut a, 0, &t, &blocks);
        // Still held by the sequence: nothing to evict.
        assert!(!c.evict_one(&mut a));
        blocks.iter().for_each(|&b| {
            a.release(b);
        });
        assert!(c.evict_one(&mut a));
        assert_eq!(c.len(), 1);
        assert_eq!(c.lookup(&mut a, 0, &t, usize::MAX).len(), 1, "the parent stays");
        a.release(blocks[0]);
        c.pin(0, &t);
        assert!(!c.evict_one(&mut a), "pinned blocks stay");
    }
}
