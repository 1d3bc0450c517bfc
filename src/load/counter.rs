//! The per-endpoint counters and the handle that holds one request in them.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Requests in flight and requests started for one endpoint; cheap to clone,
/// and every clone reads and moves the same numbers.
///
/// Every [`InFlight`](super::InFlight) and [`Latency`](super::Latency)
/// holds one, shared by all clones of the wrapper (the balancer clones an
/// endpoint for each request), so [`Counter::in_flight`] is the endpoint's
/// count, not one clone's. Keep a clone for a status page: reading it is two
/// relaxed atomic loads.
///
/// ```
/// use tower_lb::load::Counter;
///
/// let counter = Counter::new();
/// let handle = counter.start();
/// assert_eq!((counter.in_flight(), counter.requests()), (1, 1));
/// drop(handle);
/// assert_eq!((counter.in_flight(), counter.requests()), (0, 1));
/// ```
#[derive(Clone, Default)]
pub struct Counter {
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    in_flight: AtomicUsize,
    requests: AtomicU64,
}

impl Counter {
    /// A counter at zero.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one request as started and in flight until the returned
    /// [`Handle`] is dropped.
    #[must_use = "the request stops counting as in flight when the handle is dropped"]
    pub fn start(&self) -> Handle {
        // Relaxed: the counts publish no other data, and a reader that sees a
        // slightly old value only makes a slightly stale pick.
        self.counts.in_flight.fetch_add(1, Ordering::Relaxed);
        self.counts.requests.fetch_add(1, Ordering::Relaxed);
        Handle {
            counter: self.clone(),
        }
    }

    /// Requests started and not yet finished.
    #[inline]
    pub fn in_flight(&self) -> usize {
        self.counts.in_flight.load(Ordering::Relaxed)
    }

    /// Requests started since the counter was made (wrapping at `u64::MAX`).
    pub fn requests(&self) -> u64 {
        self.counts.requests.load(Ordering::Relaxed)
    }

    /// Whether `self` and `other` count the same endpoint.
    pub fn same_as(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.counts, &other.counts)
    }
}

impl fmt::Debug for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Counter")
            .field("in_flight", &self.in_flight())
            .field("requests", &self.requests())
            .finish()
    }
}

/// One request in flight: the count falls by one when this is dropped.
///
/// [`InFlight`](super::InFlight) makes one per call and hands it, with the
/// response, to its completion strategy (tower's
/// [`TrackCompletion`](tower::load::TrackCompletion)), which decides how long
/// to keep it: [`CompleteOnBodyEnd`](super::CompleteOnBodyEnd) until the
/// response body ends, [`CompleteOnResponse`](super::CompleteOnResponse)
/// until the response arrives.
pub struct Handle {
    counter: Counter,
}

impl Handle {
    /// The counter this handle holds a request in.
    pub fn counter(&self) -> &Counter {
        &self.counter
    }
}

impl super::AnswerHandle for Handle {}

impl Drop for Handle {
    fn drop(&mut self) {
        self.counter
            .counts
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("in_flight", &self.counter.in_flight())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_count_until_dropped() {
        let counter = Counter::new();
        let a = counter.start();
        let b = counter.clone().start();
        assert_eq!(counter.in_flight(), 2);
        drop(a);
        assert_eq!(counter.in_flight(), 1);
        assert!(b.counter().same_as(&counter));
        drop(b);
        assert_eq!(counter.in_flight(), 0);
        assert_eq!(counter.requests(), 2);
        assert!(!counter.same_as(&Counter::new()));
    }

    #[test]
    fn counts_across_threads() {
        let counter = Counter::new();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                let counter = counter.clone();
                scope.spawn(move || {
                    for _ in 0..1000 {
                        let _handle = counter.start();
                    }
                });
            }
        });
        assert_eq!(counter.in_flight(), 0);
        assert_eq!(counter.requests(), 4000);
    }
}
