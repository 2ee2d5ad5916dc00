//! Reference-counted KV blocks: a block is free, or held by one or more sequences and/or the
//! prefix cache; it returns to the free list when its last holder lets go.

/// Hands out block indices and counts their holders.
#[derive(Debug)]
pub struct BlockAllocator {
    refs: Vec<u32>,
    /// Free blocks, the next one to hand out last: recently freed (still warm, already
    /// faulted-in) blocks are reused first, so the touched part of the cache stays compact.
    free: Vec<u32>,
}

impl BlockAllocator {
    /// An allocator of `n` blocks, all free.
    pub fn new(n: usize) -> BlockAllocator {
        BlockAllocator { refs: vec![0; n], free: (0..n as u32).rev().collect() }
    }

    /// Total number of blocks.
    pub fn n_blocks(&self) -> usize {
        self.refs.len()
    }

    /// Blocks nobody holds.
    pub fn n_free(&self) -> usize {
        self.free.len()
    }

    /// Takes a free block (reference count 1), or `None` when every block is held.
    pub fn alloc(&mut self) -> Option<u32> {
        let b = self.free.pop()?;
        self.refs[b as usize] = 1;
        Some(b)
    }

    /// Adds a holder to a held block.
    pub fn retain(&mut self, b: u32) {
        debug_assert!(self.refs[b as usize] > 0, "retain of free block {b}");
        self.refs[b as usize] += 1;
    }

    /// Drops a holder; returns true when that freed the block.
    pub fn release(&mut self, b: u32) -> bool {
        let r = &mut self.refs[b as usize];
        debug_assert!(*r > 0, "release of free block {b}");
        *r = r.saturating_sub(1);
        if *r == 0 {
            self.free.push(b);
            true
        } else {
            false
        }
    }

    /// Number of holders of block `b`.
    pub fn refs(&self, b: u32) -> u32 {
        self.refs[b as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_return_when_the_last_holder_releases() {
        let mut a = BlockAllocator::new(3);
        let x = a.alloc().unwrap();
        let y = a.alloc().unwrap();
        assert_eq!((x, y), (0, 1));
        a.retain(x);
        assert!(!a.release(x));
        assert_eq!(a.n_free(), 1);
        assert!(a.release(x));
        assert_eq!(a.n_free(), 2);
        // The block freed last is handed out first.
        assert_eq!(a.alloc(), Some(x));
        assert_eq!(a.alloc(), Some(2));
        assert_eq!(a.alloc(), None);
    }
}
