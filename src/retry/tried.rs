//! The endpoints one request has tried, shared by all of its attempts.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

/// How many distinct endpoints a [`TriedEndpoints`] remembers.
const CAPACITY: usize = 8;

/// The endpoints a request has been sent to, by
/// [`Meta::key_hash`](crate::pick::Meta::key_hash), shared by every attempt
/// of that request.
///
/// The [`Retry`](super::Retry) layer puts one in each retryable request's
/// extensions before the first attempt. `http::Extensions` clones share it
/// (it is an `Arc`), so when tower's retry clones the request for the next
/// attempt, the clone carries what the earlier attempts recorded. The
/// [`Balance`](crate::Balance) reads it on every pick, rules the endpoints in
/// it out (see [`Endpoints::excluding`](crate::pick::Endpoints::excluding)),
/// and records the endpoint it picks.
///
/// A caller may insert its own before sending, and keep a clone, to learn
/// afterwards which endpoints a request went to; the layer keeps one it
/// finds rather than replacing it. Give each request its own set: requests
/// that share one avoid each other's endpoints.
///
/// It remembers up to 8 distinct endpoints ([`CAPACITY`](Self::CAPACITY));
/// picks after that are counted but not remembered, so a ninth retry may
/// return to an endpoint already tried. Recording and reading are a few
/// atomic operations: no lock, no allocation.
///
/// ```
/// use tower_lb::retry::TriedEndpoints;
///
/// let tried = TriedEndpoints::new();
/// let shared = tried.clone();
/// shared.record(0xa1);
/// shared.record(0xb2);
/// shared.record(0xa1); // a repeat is counted, not stored twice
/// assert_eq!(tried.picks(), 3);
/// assert_eq!(tried.last(), Some(0xa1));
/// let mut hashes = [0; TriedEndpoints::CAPACITY];
/// let n = tried.fill(&mut hashes);
/// assert_eq!(&hashes[..n], &[0xa1, 0xb2]);
/// ```
#[derive(Clone, Default)]
pub struct TriedEndpoints {
    inner: Arc<Slots>,
}

#[derive(Default)]
struct Slots {
    hashes: [AtomicU64; CAPACITY],
    /// Bit `i` is set once `hashes[i]` holds a value; readers trust only
    /// set bits, so a slot reserved but not yet written is never read.
    filled: AtomicU8,
    /// The next slot to reserve.
    next: AtomicUsize,
    picks: AtomicU32,
    last: AtomicU64,
}

impl TriedEndpoints {
    /// How many distinct endpoints are remembered.
    pub const CAPACITY: usize = CAPACITY;

    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that the request was sent to the endpoint whose key hashes to
    /// `key_hash`. The balancer calls it on every pick.
    pub fn record(&self, key_hash: u64) {
        let slots = &*self.inner;
        slots.last.store(key_hash, Ordering::Relaxed);
        // Release pairs with the Acquire in `last`, so a reader that sees the
        // count also sees the hash stored before it.
        slots.picks.fetch_add(1, Ordering::Release);
        if self.contains(key_hash) || slots.next.load(Ordering::Relaxed) >= CAPACITY {
            return;
        }
        let i = slots.next.fetch_add(1, Ordering::Relaxed);
        if i < CAPACITY {
            slots.hashes[i].store(key_hash, Ordering::Relaxed);
            slots.filled.fetch_or(1 << i, Ordering::Release);
        }
    }

    /// Whether the endpoint whose key hashes to `key_hash` was recorded.
    pub fn contains(&self, key_hash: u64) -> bool {
        let mut out = [0; CAPACITY];
        let n = self.fill(&mut out);
        out[..n].contains(&key_hash)
    }

    /// Copies the remembered key hashes, in the order they were recorded,
    /// into `out` and returns how many it wrote (at most `out.len()`).
    pub fn fill(&self, out: &mut [u64]) -> usize {
        let slots = &*self.inner;
        let filled = slots.filled.load(Ordering::Acquire);
        let mut n = 0;
        for (i, hash) in slots.hashes.iter().enumerate() {
            if n == out.len() {
                break;
            }
            if filled & (1 << i) != 0 {
                out[n] = hash.load(Ordering::Relaxed);
                n += 1;
            }
        }
        n
    }

    /// How many distinct endpoints are remembered.
    pub fn len(&self) -> usize {
        self.inner.filled.load(Ordering::Acquire).count_ones() as usize
    }

    /// Whether no endpoint was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many picks were recorded, repeats and picks past the capacity
    /// included: the number of attempts that reached a balancer.
    pub fn picks(&self) -> u32 {
        self.inner.picks.load(Ordering::Acquire)
    }

    /// The key hash of the endpoint picked last, if any.
    pub fn last(&self) -> Option<u64> {
        if self.picks() == 0 {
            None
        } else {
            Some(self.inner.last.load(Ordering::Relaxed))
        }
    }
}

impl fmt::Debug for TriedEndpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut hashes = [0; CAPACITY];
        let n = self.fill(&mut hashes);
        f.debug_struct("TriedEndpoints")
            .field("key_hashes", &&hashes[..n])
            .field("picks", &self.picks())
            .finish()
    }
}

/// A request type that may carry the [`TriedEndpoints`] of a retry.
///
/// [`Balance`](crate::Balance) requires it of its requests so that it can
/// avoid the endpoints a retried request already tried, whatever the
/// request type. `http::Request` reads its extensions; the plain types used
/// in examples and tests (`()`, strings, integers, `Vec`) carry none. A
/// request type of your own opts in with an empty impl, or returns its set
/// if it retries:
///
/// ```
/// struct Query(String);
/// impl tower_lb::retry::Exclusions for Query {}
/// ```
pub trait Exclusions {
    /// The set of endpoints this request has tried, if it carries one.
    fn tried(&self) -> Option<&TriedEndpoints> {
        None
    }
}

impl<B> Exclusions for http::Request<B> {
    fn tried(&self) -> Option<&TriedEndpoints> {
        self.extensions().get()
    }
}

impl<T: Exclusions + ?Sized> Exclusions for &T {
    fn tried(&self) -> Option<&TriedEndpoints> {
        (**self).tried()
    }
}

impl<T: Exclusions + ?Sized> Exclusions for Box<T> {
    fn tried(&self) -> Option<&TriedEndpoints> {
        (**self).tried()
    }
}

impl<T> Exclusions for Vec<T> {}

macro_rules! carries_none {
    ($($ty:ty),*) => { $(impl Exclusions for $ty {})* };
}

carries_none!(
    (),
    bool,
    char,
    str,
    String,
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_up_to_capacity_then_only_counts() {
        let tried = TriedEndpoints::new();
        assert!(tried.is_empty());
        assert_eq!(tried.last(), None);
        for h in 0..20u64 {
            tried.record(h * 3);
        }
        assert_eq!(tried.len(), CAPACITY);
        assert_eq!(tried.picks(), 20);
        assert_eq!(tried.last(), Some(57));
        let mut out = [u64::MAX; 16];
        let n = tried.fill(&mut out);
        assert_eq!(&out[..n], &[0, 3, 6, 9, 12, 15, 18, 21]);
        assert!(!tried.contains(57), "past capacity: counted, not stored");
    }

    #[test]
    fn fill_never_writes_past_out() {
        let tried = TriedEndpoints::new();
        (1..=5).for_each(|h| tried.record(h));
        let mut out = [0; 2];
        assert_eq!(tried.fill(&mut out), 2);
        assert_eq!(out, [1, 2]);
        assert_eq!(tried.fill(&mut []), 0);
    }

    #[test]
    fn clones_share_one_set_across_threads() {
        let tried = TriedEndpoints::new();
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let tried = tried.clone();
                s.spawn(move || (0..2).for_each(|k| tried.record(t * 10 + k)));
            }
        });
        assert_eq!(tried.len(), 8);
        assert_eq!(tried.picks(), 8);
    }

    #[test]
    fn requests_read_their_extension() {
        let mut req = http::Request::new(());
        assert!(req.tried().is_none());
        let tried = TriedEndpoints::new();
        req.extensions_mut().insert(tried.clone());
        req.tried().unwrap().record(9);
        assert_eq!(tried.last(), Some(9));
        assert!("plain".tried().is_none() && 7u64.tried().is_none());
    }
}
