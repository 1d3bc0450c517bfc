//! A lock-free, seedable generator shared by the randomised pickers.

use std::sync::atomic::{AtomicU64, Ordering};

const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64 over an atomic counter: each call takes the next counter value
/// with one `fetch_add` and mixes it, so concurrent callers never wait on each
/// other and a seeded picker gives the same sequence for the same order of
/// calls.
#[derive(Debug)]
pub(crate) struct Rng {
    state: AtomicU64,
}

impl Rng {
    pub(crate) fn from_seed(seed: u64) -> Self {
        Self {
            state: AtomicU64::new(seed),
        }
    }

    /// A generator seeded from the process's random hasher keys.
    pub(crate) fn from_entropy() -> Self {
        use std::hash::BuildHasher;
        let seed = std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64);
        Self::from_seed(seed)
    }

    pub(crate) fn next_u64(&self) -> u64 {
        let z = self
            .state
            .fetch_add(GAMMA, Ordering::Relaxed)
            .wrapping_add(GAMMA);
        mix64(z)
    }

    /// A value in `0..n` (n > 0), by multiply-shift rather than modulo.
    pub(crate) fn below(&self, n: usize) -> usize {
        reduce(self.next_u64(), n)
    }

    /// A private generator for one pick, seeded by one step of this one.
    ///
    /// A pick that needs several draws (p2c's two samples and their
    /// retries) then makes a single atomic operation on the shared state,
    /// which is the costly part when threads pick at once.
    pub(crate) fn local(&self) -> LocalRng {
        LocalRng {
            state: self.next_u64(),
        }
    }
}

/// SplitMix64 on a plain integer: the draws of one pick. Streams of two
/// picks start at independent random points, so they do not overlap in
/// practice.
#[derive(Debug)]
pub(crate) struct LocalRng {
    state: u64,
}

impl LocalRng {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix64(self.state)
    }

    /// A value in `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        reduce(self.next_u64(), n)
    }
}

/// Maps a 64-bit hash uniformly onto `0..n` without a division.
pub(crate) fn reduce(hash: u64, n: usize) -> usize {
    ((u128::from(hash) * n as u128) >> 64) as usize
}

/// The SplitMix64 finaliser: a fast bijective mixer with good avalanche.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_sequences_repeat() {
        let a = Rng::from_seed(7);
        let b = Rng::from_seed(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn local_generators_repeat_and_differ() {
        let (a, b) = (Rng::from_seed(3), Rng::from_seed(3));
        let (mut x, mut y) = (a.local(), b.local());
        for _ in 0..10 {
            assert_eq!(x.next_u64(), y.next_u64());
        }
        let mut z = a.local();
        assert_ne!(x.next_u64(), z.next_u64());
        assert!((0..1000).all(|_| z.below(7) < 7));
    }

    #[test]
    fn below_stays_in_range() {
        let rng = Rng::from_seed(1);
        let mut seen = [0usize; 5];
        for _ in 0..5000 {
            seen[rng.below(5)] += 1;
        }
        assert!(seen.iter().all(|&c| c > 800), "{seen:?}");
        assert_eq!(reduce(u64::MAX, 3), 2);
        assert_eq!(reduce(0, 3), 0);
    }
}
