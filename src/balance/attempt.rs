//! The attempt set: the endpoints one request has tried, shared by all of
//! its attempts, and how a layer above the balancer hands it down.

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;

/// An endpoint's key as every event of the crate names it (its `Debug`
/// form), made once when the endpoint is inserted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EndpointName(Arc<Box<str>>);

impl EndpointName {
    pub(crate) fn of<K: fmt::Debug>(key: &K) -> Self {
        Self(Arc::new(format!("{key:?}").into_boxed_str()))
    }
}

impl fmt::Display for EndpointName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How many distinct endpoints a [`TriedEndpoints`] remembers.
const CAPACITY: usize = 8;

/// The endpoints a request has been sent to, by
/// [`EndpointInfo::key_hash`](crate::pick::EndpointInfo::key_hash), shared by every attempt
/// of that request: the *attempt set*.
///
/// A layer above the balancer that sends one request more than once (the
/// retry layer, a hedging layer, your own) makes the set current while it
/// calls down the stack, with [`TriedEndpoints::scope`]. The
/// [`Balance`](crate::Balance) reads the current set on every pick, rules the
/// endpoints in it out (see
/// [`Candidates::excluding`](crate::pick::Candidates::excluding)) and records
/// the endpoint it picks. Any request type works: the set travels beside the
/// request, not in it.
///
/// `scope` covers the synchronous `call` of the services beneath it, which
/// is where the balancer picks (a request that has to wait for an endpoint
/// keeps the set it was called with). Layers between the caller of `scope`
/// and the balancer must call their inner service from their own `call`, as
/// tower's timeout, concurrency-limit and map layers do; a `Buffer` in
/// between would lose it (the balancer needs none).
///
/// It remembers up to 8 distinct endpoints ([`CAPACITY`](Self::CAPACITY));
/// picks after that are counted but not remembered, so a ninth retry may
/// return to an endpoint already tried. Recording and reading are a few
/// atomic operations: no lock, no allocation.
///
/// ```
/// use tower_lb::balance::TriedEndpoints;
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
///
/// // A retrying layer makes it current around each attempt's `call`.
/// assert!(TriedEndpoints::current().is_none());
/// tried.scope(|| assert_eq!(TriedEndpoints::current().map(|t| t.picks()), Some(3)));
/// assert!(TriedEndpoints::current().is_none());
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
    /// The name of the endpoint picked last, for events.
    last_name: ArcSwapOption<Box<str>>,
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

    /// Records a pick as [`record`](Self::record) does, with the name
    /// events give the endpoint.
    pub(crate) fn record_named(&self, key_hash: u64, name: &EndpointName) {
        self.inner.last_name.store(Some(Arc::clone(&name.0)));
        self.record(key_hash);
    }

    /// The endpoint picked last, named as the balancer's and the health
    /// layer's events name it (its key's `Debug` form); `None` before the
    /// first pick, or when the picks were recorded by hand.
    pub fn last_endpoint(&self) -> Option<String> {
        self.inner
            .last_name
            .load_full()
            .map(|name| name.to_string())
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

thread_local! {
    /// The attempt set of the `call` running on this thread, if a layer
    /// above made one current.
    static CURRENT: RefCell<Option<TriedEndpoints>> = const { RefCell::new(None) };
}

/// Puts back the set that was current before a [`TriedEndpoints::scope`],
/// also when the call inside it panics.
struct Restore(Option<TriedEndpoints>);

impl Drop for Restore {
    fn drop(&mut self) {
        let previous = self.0.take();
        CURRENT.with(|current| *current.borrow_mut() = previous);
    }
}

impl TriedEndpoints {
    /// Runs `call` with this set current on this thread: every pick a
    /// balancer makes inside it avoids the endpoints in the set and records
    /// the one it picks. Scopes nest; the outer set is current again after.
    pub fn scope<R>(&self, call: impl FnOnce() -> R) -> R {
        let previous = CURRENT.with(|current| current.borrow_mut().replace(self.clone()));
        let _restore = Restore(previous);
        call()
    }

    /// The set a surrounding [`scope`](Self::scope) made current, if any.
    pub fn current() -> Option<TriedEndpoints> {
        CURRENT.with(|current| current.borrow().clone())
    }

    /// Runs `read` on the current set without cloning it: what the balancer
    /// does on every pick.
    pub(crate) fn with_current<R>(read: impl FnOnce(Option<&TriedEndpoints>) -> R) -> R {
        CURRENT.with(|current| match current.try_borrow() {
            Ok(set) => read(set.as_ref()),
            // A pick inside a pick (a picker that calls a balancer): no set.
            Err(_) => read(None),
        })
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
    fn scopes_nest_and_restore() {
        let outer = TriedEndpoints::new();
        let inner = TriedEndpoints::new();
        outer.scope(|| {
            TriedEndpoints::with_current(|set| set.unwrap().record(1));
            inner.scope(|| TriedEndpoints::with_current(|set| set.unwrap().record(2)));
            TriedEndpoints::with_current(|set| set.unwrap().record(3));
        });
        assert!(TriedEndpoints::current().is_none());
        assert_eq!((outer.picks(), outer.last()), (2, Some(3)));
        assert_eq!((inner.picks(), inner.last()), (1, Some(2)));
    }

    #[test]
    fn a_panicking_call_restores_the_outer_set() {
        let set = TriedEndpoints::new();
        let caught = std::panic::catch_unwind(|| set.scope(|| panic!("inside")));
        assert!(caught.is_err());
        assert!(TriedEndpoints::current().is_none());
    }
}
