//! Subsetting: each client uses a small, stable subset of a large fleet.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use pin_project_lite::pin_project;
use tower::discover::{Change, Discover};

use crate::endpoint::Endpoint;
use crate::pick::key::hash_value;
use crate::util::{mix64, Rng};

/// How a [`Subset`] chooses its endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubsetMode {
    /// gRFC A68 random subsetting: rendezvous hashing with a per-client
    /// salt. Every endpoint gets a score from the hash of the salt and its
    /// key; the subset is the `k` highest scores.
    ///
    /// Adding or removing one endpoint changes at most one entry of every
    /// client's subset. The number of clients an endpoint gets is random
    /// (binomial): with 300 clients, 300 endpoints and `k` = 30 the busiest
    /// endpoint holds about 1.4–1.5× the mean.
    Rendezvous {
        /// This client's salt; give every client its own (random) one.
        salt: u64,
    },
    /// Deterministic subsetting (the Google SRE book's algorithm) by client
    /// index. Clients are taken in rounds of `n / k` (n endpoints); each
    /// round orders the endpoints by a hash of the round and the key, and
    /// hands each client of the round its own `k` consecutive endpoints, so
    /// every endpoint serves the same number of clients, within one, when
    /// the clients' indices are consecutive (300 × 300, `k` = 30: exactly
    /// the mean).
    ///
    /// While `n / k` stays the same, adding or removing one endpoint
    /// changes at most one entry of every subset (the order is by hash,
    /// so the others keep their relative places). When `n / k` changes
    /// (at every multiple of `k`), the rounds change and subsets reshuffle.
    Deterministic {
        /// This client's index, from 0; consecutive indices balance best.
        client: u64,
    },
}

impl SubsetMode {
    /// Rendezvous subsetting with a salt drawn from the process's random
    /// hasher keys.
    pub fn random() -> Self {
        Self::Rendezvous {
            salt: Rng::from_entropy().next_u64(),
        }
    }
}

/// The subset of `k` endpoints, by index into `keys` (the endpoints' key
/// hashes), in no particular order. With `k` or fewer endpoints, all.
pub(crate) fn choose(mode: SubsetMode, k: usize, keys: &[u64]) -> Vec<usize> {
    let n = keys.len();
    if n <= k {
        return (0..n).collect();
    }
    let ordered = |salt: u64| {
        let salt = mix64(salt ^ 0x5b5e_7d1c_0b5e_7a11);
        let mut order: Vec<(u64, u64, usize)> = keys
            .iter()
            .enumerate()
            .map(|(i, &key)| (mix64(key ^ salt), key, i))
            .collect();
        order.sort_unstable();
        order
    };
    match mode {
        SubsetMode::Rendezvous { salt } => {
            let mut order = ordered(salt);
            order.reverse();
            order.iter().take(k).map(|&(_, _, i)| i).collect()
        }
        SubsetMode::Deterministic { client } => {
            let subsets = (n / k.max(1)) as u64;
            let round = client / subsets;
            let start = (client % subsets) as usize * k;
            ordered(round)[start..start + k]
                .iter()
                .map(|&(_, _, i)| i)
                .collect()
        }
    }
}

pin_project! {
    /// A `Discover` adapter that passes on a stable subset of `k` endpoints
    /// of any source, so that many clients of many servers each hold a few
    /// connections rather than one to every server.
    ///
    /// The subset is chosen by [`SubsetMode`]: gRFC A68's rendezvous hashing
    /// with a per-client salt, or deterministic subsetting by client index.
    /// Both choose by the hash of each endpoint's key ([`hash_value`]), so a
    /// subset depends only on the set of keys, not on the order of changes.
    ///
    /// # Behaviour
    ///
    /// * The adapter keeps every endpoint of the source (key and service)
    ///   and yields `Insert` for those that enter the subset, `Remove` for
    ///   those that leave it (their requests in flight finish), and an
    ///   `Insert` again when the source replaces a chosen endpoint.
    /// * Inserts come before removes in one batch of changes, so a subset
    ///   that swaps an endpoint is never empty in between.
    /// * Errors of the source pass through; an ended source ends the stream
    ///   after the last changes.
    ///
    /// # Cost
    ///
    /// Each batch of source changes (all that are ready, up to 1,024)
    /// recomputes the subset: O(n log n) for n endpoints, plus a copy of the
    /// n key hashes. Memory: one entry a known endpoint.
    ///
    /// # Weights
    ///
    /// Only endpoints of weight above 0 are candidates; weights do not
    /// change the odds of being chosen and pass through unchanged. An
    /// endpoint that drains (weight 0) leaves the subset, which is the same
    /// for it: no new requests, requests in flight finish.
    ///
    /// # No endpoints
    ///
    /// With `k` or fewer candidates, all of them are the subset; with none,
    /// the subset is empty. `k` = 0 is taken as 1.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_lb::{discover::{self, Subset, SubsetMode}, pick::RoundRobin, Balance};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let svc = tower::service_fn(|_: ()| async { Ok::<_, std::convert::Infallible>(()) });
    /// let (endpoints, discover) = discover::channel();
    /// for i in 0..10 {
    ///     endpoints.insert(format!("10.0.0.{i}:80"), svc.clone()).unwrap();
    /// }
    /// let subset = Subset::new(discover, 3, SubsetMode::Deterministic { client: 7 });
    /// let balance = Balance::new(subset, RoundRobin::new());
    /// balance.wait_for(|keys| keys.len() == 3).await;
    /// # }
    /// ```
    pub struct Subset<D: Discover> {
        #[pin]
        inner: D,
        k: usize,
        mode: SubsetMode,
        known: HashMap<D::Key, Known<D::Service>>,
        chosen: HashSet<D::Key>,
        pending: VecDeque<Change<D::Key, D::Service>>,
        error: Option<D::Error>,
        ended: bool,
    }
}

/// One endpoint of the source.
struct Known<S> {
    hash: u64,
    service: S,
}

impl<D: Discover> Subset<D> {
    /// Keeps a subset of `k` endpoints of `inner`, chosen by `mode`.
    pub fn new(inner: D, k: usize, mode: SubsetMode) -> Self {
        Self {
            inner,
            k: k.max(1),
            mode,
            known: HashMap::new(),
            chosen: HashSet::new(),
            pending: VecDeque::new(),
            error: None,
            ended: false,
        }
    }

    /// The subset size.
    pub fn k(&self) -> usize {
        self.k
    }

    /// How the subset is chosen.
    pub fn mode(&self) -> SubsetMode {
        self.mode
    }
}

impl<D: Discover> fmt::Debug for Subset<D>
where
    D::Key: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subset")
            .field("k", &self.k)
            .field("mode", &self.mode)
            .field("known", &self.known.len())
            .field("chosen", &self.chosen)
            .finish()
    }
}

/// How many source changes one poll takes before recomputing.
const BATCH: usize = 1024;

impl<D> Stream for Subset<D>
where
    D: Discover,
    D::Key: Hash + Eq + Clone,
    D::Service: Endpoint + Clone,
{
    type Item = Result<Change<D::Key, D::Service>, D::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        loop {
            if let Some(change) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(change)));
            }
            if let Some(error) = this.error.take() {
                return Poll::Ready(Some(Err(error)));
            }
            if *this.ended {
                return Poll::Ready(None);
            }
            // Take every change that is ready, then recompute once.
            let mut replaced: Vec<D::Key> = Vec::new();
            let mut changed = false;
            let mut waiting = false;
            for _ in 0..BATCH {
                match this.inner.as_mut().poll_discover(cx) {
                    Poll::Ready(Some(Ok(Change::Insert(key, service)))) => {
                        changed = true;
                        let hash = hash_value(&key);
                        if this
                            .known
                            .insert(key.clone(), Known { hash, service })
                            .is_some()
                        {
                            replaced.push(key);
                        }
                    }
                    Poll::Ready(Some(Ok(Change::Remove(key)))) => {
                        changed |= this.known.remove(&key).is_some();
                    }
                    Poll::Ready(Some(Err(error))) => {
                        *this.error = Some(error);
                        break;
                    }
                    Poll::Ready(None) => {
                        *this.ended = true;
                        break;
                    }
                    Poll::Pending => {
                        waiting = true;
                        break;
                    }
                }
            }
            if !waiting && this.error.is_none() && !*this.ended {
                // The batch ran out: come back for the rest.
                cx.waker().wake_by_ref();
            }
            if changed {
                update(
                    *this.mode,
                    *this.k,
                    this.known,
                    this.chosen,
                    &replaced,
                    this.pending,
                );
            }
            if this.pending.is_empty() && this.error.is_none() && !*this.ended {
                return Poll::Pending;
            }
        }
    }
}

/// Recomputes the subset and queues the changes from the one before.
fn update<K: Hash + Eq + Clone, S: Endpoint + Clone>(
    mode: SubsetMode,
    k: usize,
    known: &HashMap<K, Known<S>>,
    chosen: &mut HashSet<K>,
    replaced: &[K],
    pending: &mut VecDeque<Change<K, S>>,
) {
    let candidates: Vec<(&K, &Known<S>)> = known
        .iter()
        .filter(|(_, known)| known.service.weight() > 0)
        .collect();
    let hashes: Vec<u64> = candidates.iter().map(|(_, known)| known.hash).collect();
    let next: HashSet<K> = choose(mode, k, &hashes)
        .into_iter()
        .map(|i| candidates[i].0.clone())
        .collect();
    for key in &next {
        if !chosen.contains(key) || replaced.contains(key) {
            pending.push_back(Change::Insert(key.clone(), known[key].service.clone()));
        }
    }
    for key in chosen.iter() {
        if !next.contains(key) {
            pending.push_back(Change::Remove(key.clone()));
        }
    }
    *chosen = next;
}

#[cfg(test)]
#[path = "subset_tests.rs"]
mod tests;
