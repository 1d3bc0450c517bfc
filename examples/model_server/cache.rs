//! The emulated KV cache: which prompt blocks this server holds, evicted
//! least recently used first, counted in tokens.
//!
//! A prompt is cut into blocks of [`BLOCK_BYTES`] bytes ([`BLOCK_TOKENS`]
//! tokens at [`BYTES_PER_TOKEN`]); block `i` is named by a hash chained over
//! every block before it, so a block matches only when the whole text before
//! it matches too, as in a paged KV cache with prefix caching.

use std::collections::{BTreeMap, HashMap};

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Prompt bytes a token stands for; the emulator has no tokenizer.
pub(crate) const BYTES_PER_TOKEN: usize = 4;

/// Tokens a cache block holds (vLLM's default block size).
pub(crate) const BLOCK_TOKENS: usize = 16;

/// Bytes of prompt text a cache block holds.
pub(crate) const BLOCK_BYTES: usize = BLOCK_TOKENS * BYTES_PER_TOKEN;

/// Tokens in `bytes` bytes of text, rounded up.
pub(crate) fn tokens(bytes: usize) -> usize {
    bytes.div_ceil(BYTES_PER_TOKEN)
}

/// The chained hashes of the full blocks of `text` (a partial last block
/// is never cached, as in vLLM).
pub(crate) fn block_hashes(text: &[u8]) -> Vec<u64> {
    let mut previous = 0x6d6f_6465_6c00_0000_u64;
    text.chunks_exact(BLOCK_BYTES)
        .map(|block| {
            previous = xxh3_64_with_seed(block, previous);
            previous
        })
        .collect()
}

/// A bounded set of block hashes with least-recently-used eviction.
#[derive(Debug)]
pub(crate) struct PrefixCache {
    capacity: usize,
    /// Block hash → the tick of its last use.
    used: HashMap<u64, u64>,
    /// Tick of last use → block hash: the oldest comes first.
    order: BTreeMap<u64, u64>,
    tick: u64,
}

impl PrefixCache {
    /// A cache of `capacity_tokens` tokens (whole blocks; at least one).
    pub(crate) fn new(capacity_tokens: usize) -> Self {
        Self {
            capacity: (capacity_tokens / BLOCK_TOKENS).max(1),
            used: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
        }
    }

    /// How many leading blocks of `blocks` are cached. Marks them used.
    pub(crate) fn lookup(&mut self, blocks: &[u64]) -> usize {
        let hit = blocks
            .iter()
            .take_while(|h| self.used.contains_key(h))
            .count();
        for &h in &blocks[..hit] {
            self.touch(h);
        }
        hit
    }

    /// Caches `blocks`, evicting the least recently used beyond capacity.
    pub(crate) fn insert(&mut self, blocks: &[u64]) {
        for &h in blocks {
            self.touch(h);
        }
        while self.used.len() > self.capacity {
            let Some((_, h)) = self.order.pop_first() else {
                break;
            };
            self.used.remove(&h);
        }
    }

    /// Drops everything.
    pub(crate) fn clear(&mut self) {
        self.used.clear();
        self.order.clear();
    }

    /// Blocks held now.
    pub(crate) fn len(&self) -> usize {
        self.used.len()
    }

    /// Blocks it can hold.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    fn touch(&mut self, h: u64) {
        self.tick += 1;
        if let Some(old) = self.used.insert(h, self.tick) {
            self.order.remove(&old);
        }
        self.order.insert(self.tick, h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chained_blocks_match_only_with_their_prefix() {
        let a = block_hashes(&[b'a'; 3 * BLOCK_BYTES]);
        let mut b_text = vec![b'b'; BLOCK_BYTES];
        b_text.extend_from_slice(&[b'a'; 2 * BLOCK_BYTES]);
        let b = block_hashes(&b_text);
        assert_eq!(a.len(), 3);
        assert!(a.iter().all(|h| !b.contains(h)));
    }

    #[test]
    fn evicts_least_recently_used() {
        let mut cache = PrefixCache::new(2 * BLOCK_TOKENS);
        cache.insert(&[1, 2]);
        assert_eq!(cache.lookup(&[1]), 1);
        cache.insert(&[3]);
        assert_eq!(cache.lookup(&[1, 3]), 2);
        assert_eq!(cache.lookup(&[2]), 0);
        assert_eq!(cache.len(), 2);
    }
}
