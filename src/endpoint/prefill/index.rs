//! A bounded, lock-free index of the prompt blocks sent to one endpoint.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Ways in a set: four entries of 16 bytes fill one 64-byte cache line, so
/// a lookup touches one line.
const WAYS: usize = 4;

struct Entry {
    /// The block hash; 0 is an empty entry (a hash of 0 is stored as 1).
    tag: AtomicU64,
    /// When it was last inserted or refreshed (the index's clock).
    stamp: AtomicU64,
}

/// Which blocks were recently sent to one endpoint: a set-associative table
/// of `capacity` entries (4 ways a set), the least recently used entry of a
/// set replaced first.
///
/// Readers and writers never lock: every field is an atomic, and a race
/// between two writers of one set at worst loses one of their blocks, which
/// an approximate index tolerates. Memory is fixed at creation: 16 bytes an
/// entry ([`BlockIndex::bytes_per_block`]).
pub(crate) struct BlockIndex {
    sets: Box<[[Entry; WAYS]]>,
    clock: AtomicU64,
    filled: AtomicUsize,
}

impl BlockIndex {
    /// An empty index of at least `capacity` blocks (a whole number of
    /// sets; at least one set).
    pub(crate) fn new(capacity: usize) -> Self {
        let sets = capacity.div_ceil(WAYS).max(1);
        Self {
            sets: (0..sets)
                .map(|_| {
                    std::array::from_fn(|_| Entry {
                        tag: AtomicU64::new(0),
                        stamp: AtomicU64::new(0),
                    })
                })
                .collect(),
            clock: AtomicU64::new(0),
            filled: AtomicUsize::new(0),
        }
    }

    /// Bytes of memory an entry takes.
    pub(crate) const fn bytes_per_block() -> usize {
        std::mem::size_of::<Entry>()
    }

    /// Blocks it can hold.
    pub(crate) fn capacity(&self) -> usize {
        self.sets.len() * WAYS
    }

    /// Blocks it holds.
    pub(crate) fn len(&self) -> usize {
        self.filled.load(Relaxed)
    }

    #[inline]
    fn set(&self, hash: u64) -> &[Entry; WAYS] {
        // Multiply-shift: uniform hashes spread over any number of sets.
        let i = ((u128::from(hash) * self.sets.len() as u128) >> 64) as usize;
        &self.sets[i]
    }

    #[inline]
    fn tag(hash: u64) -> u64 {
        hash.max(1)
    }

    /// Whether `hash` is held.
    #[inline]
    pub(crate) fn contains(&self, hash: u64) -> bool {
        let tag = Self::tag(hash);
        self.set(hash).iter().any(|e| e.tag.load(Relaxed) == tag)
    }

    /// Records `hashes` as just used.
    pub(crate) fn insert(&self, hashes: &[u64]) {
        let now = self.clock.fetch_add(1, Relaxed) + 1;
        for &hash in hashes {
            let tag = Self::tag(hash);
            let set = self.set(hash);
            if let Some(e) = set.iter().find(|e| e.tag.load(Relaxed) == tag) {
                e.stamp.store(now, Relaxed);
                continue;
            }
            let Some(oldest) = set.iter().min_by_key(|e| e.stamp.load(Relaxed)) else {
                continue;
            };
            if oldest.tag.swap(tag, Relaxed) == 0 {
                self.filled.fetch_add(1, Relaxed);
            }
            oldest.stamp.store(now, Relaxed);
        }
    }

    /// When `hash` was last inserted or refreshed (the index's clock), if
    /// it is held.
    pub(crate) fn stamp(&self, hash: u64) -> Option<u64> {
        let tag = Self::tag(hash);
        self.set(hash)
            .iter()
            .find(|e| e.tag.load(Relaxed) == tag)
            .map(|e| e.stamp.load(Relaxed))
    }

    /// Forgets every block last inserted or refreshed at or before `stamp`:
    /// a server whose cache evicts least recently used blocks first no
    /// longer holds any of them once it has evicted one of that age.
    /// `O(capacity)`.
    pub(crate) fn forget_up_to(&self, stamp: u64) {
        for set in self.sets.iter() {
            for e in set {
                let tag = e.tag.load(Relaxed);
                if tag != 0
                    && e.stamp.load(Relaxed) <= stamp
                    && e.tag.compare_exchange(tag, 0, Relaxed, Relaxed).is_ok()
                {
                    self.filled.fetch_sub(1, Relaxed);
                }
            }
        }
    }

    /// How many leading blocks of `hashes` are held: the longest run from
    /// the first, found by bisection (`O(log n)` lookups).
    ///
    /// Bisection assumes that a held block's predecessors are held too,
    /// which chained hashes and least-recently-used replacement make
    /// nearly always true (a prompt's blocks are inserted together, and an
    /// earlier block is shared by at least as many prompts); when it is
    /// not, the answer is a run that ends at a held block.
    pub(crate) fn leading(&self, hashes: &[u64]) -> usize {
        let Some(&first) = hashes.first() else {
            return 0;
        };
        if !self.contains(first) {
            return 0;
        }
        // Invariant: hashes[lo - 1] is held; hashes[hi] is not (or hi = len).
        let (mut lo, mut hi) = (1, hashes.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.contains(hashes[mid]) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

impl fmt::Debug for BlockIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockIndex")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_what_was_inserted_and_counts_the_leading_run() {
        let index = BlockIndex::new(1024);
        let prompt: Vec<u64> = (1..=100u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect();
        index.insert(&prompt[..60]);
        assert_eq!(index.leading(&prompt), 60);
        assert_eq!(index.leading(&prompt[1..]), 59);
        assert_eq!(index.leading(&[7, 8]), 0);
        assert_eq!(index.leading(&[]), 0);
        assert_eq!(index.len(), 60);
    }

    #[test]
    fn memory_is_bounded_whatever_is_inserted() {
        let index = BlockIndex::new(64);
        for round in 0..100u64 {
            let blocks: Vec<u64> = (0..50)
                .map(|i| (round << 32 | i).wrapping_mul(0x9E37_79B9_7F4A_7C15))
                .collect();
            index.insert(&blocks);
        }
        assert_eq!(index.capacity(), 64);
        assert!(index.len() <= 64);
        assert_eq!(BlockIndex::bytes_per_block(), 16);
    }

    #[test]
    fn least_recently_used_is_replaced_first() {
        // One set of four ways.
        let index = BlockIndex::new(4);
        index.insert(&[1, 2, 3, 4]);
        index.insert(&[1]);
        index.insert(&[5]);
        assert!(index.contains(1) && index.contains(5));
        assert!(!index.contains(2));
    }

    #[test]
    fn forgetting_by_age_keeps_what_is_newer() {
        let index = BlockIndex::new(1024);
        index.insert(&[11, 12]);
        index.insert(&[21, 22]);
        index.insert(&[31]);
        let cut = index.stamp(22).unwrap();
        index.forget_up_to(cut);
        assert!(!index.contains(11) && !index.contains(22));
        assert!(index.contains(31));
        assert_eq!(index.len(), 1);
    }
}
