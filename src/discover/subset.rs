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
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

    use super::*;
    use crate::endpoint::Weighted;

    /// The keys of the subset, as a set.
    fn subset(mode: SubsetMode, k: usize, keys: &[u64]) -> BTreeSet<u64> {
        choose(mode, k, keys).into_iter().map(|i| keys[i]).collect()
    }

    /// How many entries differ between two subsets: one swapped endpoint is one
    /// entry.
    fn moved(before: &BTreeSet<u64>, after: &BTreeSet<u64>) -> usize {
        before
            .difference(after)
            .count()
            .max(after.difference(before).count())
    }

    fn server_keys(n: usize) -> Vec<u64> {
        (0..n)
            .map(|i| hash_value(&format!("10.0.{}.{}:8080", i / 250, i % 250)))
            .collect()
    }

    /// A runner with a fixed seed, so that failures repeat.
    fn runner(cases: u32) -> TestRunner {
        TestRunner::new_with_rng(
            Config {
                cases,
                ..Config::default()
            },
            TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
        )
    }

    #[test]
    fn subsets_have_k_distinct_entries() {
        let keys = server_keys(100);
        for mode in [
            SubsetMode::Rendezvous { salt: 1 },
            SubsetMode::Deterministic { client: 12 },
        ] {
            assert_eq!(subset(mode, 10, &keys).len(), 10);
            assert_eq!(subset(mode, 100, &keys).len(), 100);
            assert_eq!(subset(mode, 500, &keys).len(), 100);
            assert!(subset(mode, 10, &[]).is_empty());
        }
    }

    /// One endpoint added or removed moves at most one entry of a rendezvous
    /// subset, whatever the set, the salt and `k`.
    #[test]
    fn rendezvous_one_change_moves_one_entry() {
        runner(512)
            .run(
                &(
                    prop::collection::hash_set(any::<u64>(), 1..300),
                    1usize..40,
                    any::<u64>(),
                    any::<u64>(),
                    any::<prop::sample::Index>(),
                ),
                |(keys, k, salt, added, removed)| {
                    let keys: Vec<u64> = keys.into_iter().collect();
                    let mode = SubsetMode::Rendezvous { salt };
                    let before = subset(mode, k, &keys);
                    if !keys.contains(&added) {
                        let mut more = keys.clone();
                        more.push(added);
                        prop_assert!(moved(&before, &subset(mode, k, &more)) <= 1);
                    }
                    let mut fewer = keys.clone();
                    fewer.swap_remove(removed.index(keys.len()));
                    prop_assert!(moved(&before, &subset(mode, k, &fewer)) <= 1);
                    Ok(())
                },
            )
            .unwrap();
    }

    /// The deterministic variant moves at most one entry while `n / k` stays
    /// the same; at a multiple of `k` the rounds change.
    #[test]
    fn deterministic_one_change_moves_one_entry_within_a_round_size() {
        runner(512)
            .run(
                &(
                    prop::collection::hash_set(any::<u64>(), 2..300),
                    1usize..40,
                    0u64..1000,
                    any::<u64>(),
                    any::<prop::sample::Index>(),
                ),
                |(keys, k, client, added, removed)| {
                    let keys: Vec<u64> = keys.into_iter().collect();
                    let n = keys.len();
                    let mode = SubsetMode::Deterministic { client };
                    let before = subset(mode, k, &keys);
                    if !keys.contains(&added) && (n + 1) / k == n / k {
                        let mut more = keys.clone();
                        more.push(added);
                        prop_assert!(moved(&before, &subset(mode, k, &more)) <= 1);
                    }
                    if (n - 1) / k == n / k {
                        let mut fewer = keys.clone();
                        fewer.swap_remove(removed.index(n));
                        prop_assert!(moved(&before, &subset(mode, k, &fewer)) <= 1);
                    }
                    Ok(())
                },
            )
            .unwrap();
    }

    /// Clients per server over `clients` clients, as (max ÷ mean, min ÷ mean).
    fn spread(
        clients: u64,
        servers: usize,
        k: usize,
        mode: impl Fn(u64) -> SubsetMode,
    ) -> (f64, f64) {
        let keys = server_keys(servers);
        let mut load = vec![0u32; servers];
        for client in 0..clients {
            for i in choose(mode(client), k, &keys) {
                load[i] += 1;
            }
        }
        let mean = (clients as f64 * k as f64) / servers as f64;
        let max = *load.iter().max().unwrap() as f64;
        let min = *load.iter().min().unwrap() as f64;
        (max / mean, min / mean)
    }

    /// 300 clients × 300 servers, k = 30: the busiest server's clients over the
    /// mean. The deterministic variant holds the 1.3× bound; rendezvous
    /// subsetting with random salts does not (it is binomial).
    #[test]
    fn balance_at_300_by_300() {
        let salts = crate::util::Rng::from_seed(2024);
        let salts: Vec<u64> = (0..300).map(|_| salts.next_u64()).collect();
        let (r_max, r_min) = spread(300, 300, 30, |c| SubsetMode::Rendezvous {
            salt: salts[c as usize],
        });
        let (d_max, d_min) = spread(300, 300, 30, |client| SubsetMode::Deterministic { client });
        println!(
            "300 x 300, k = 30: rendezvous max {r_max:.2}x min {r_min:.2}x of the mean; \
         deterministic max {d_max:.2}x min {d_min:.2}x"
        );
        assert!(d_max <= 1.3, "deterministic: {d_max}");
        assert!(d_min >= 0.7, "deterministic: {d_min}");
        // Rendezvous is random: far from 1.3, but no server is left out or
        // loaded twice over.
        assert!(r_max < 2.0 && r_min > 0.2, "rendezvous: {r_max} {r_min}");

        // Off the even numbers (n not a multiple of k, clients not a multiple
        // of n / k) the deterministic variant still holds the bound.
        let (d_max, _) = spread(310, 317, 30, |client| SubsetMode::Deterministic { client });
        println!("310 x 317, k = 30: deterministic max {d_max:.2}x");
        assert!(d_max <= 1.3, "deterministic 310 x 317: {d_max}");
    }

    // ===== the adapter =====

    fn drain<D>(discover: &mut D) -> Vec<String>
    where
        D: Discover<Key = u32, Service = Weighted<()>> + Unpin,
        D::Error: fmt::Debug,
    {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut out = Vec::new();
        while let Poll::Ready(Some(change)) = Pin::new(&mut *discover).poll_discover(&mut cx) {
            out.push(match change.unwrap() {
                Change::Insert(key, svc) => format!("+{key}@{}", svc.weight()),
                Change::Remove(key) => format!("-{key}"),
            });
        }
        out
    }

    #[test]
    fn adapter_passes_on_subset_changes_only() {
        let (tx, rx) = crate::discover::channel::<u32, ()>();
        let mut subset = Subset::new(rx, 3, SubsetMode::Rendezvous { salt: 9 });
        for key in 0..10 {
            tx.insert(key, ()).unwrap();
        }
        let first = drain(&mut subset);
        assert_eq!(first.len(), 3, "{first:?}");
        let chosen: Vec<u32> = subset.chosen.iter().copied().collect();

        // An endpoint outside the subset comes and goes: nothing to pass on,
        // unless it outranks a chosen one (then one swap).
        let outside = (0..10).find(|key| !chosen.contains(key)).unwrap();
        tx.remove(outside).unwrap();
        assert!(drain(&mut subset).is_empty());

        // A chosen endpoint leaves: one insert, then its remove.
        let gone = chosen[0];
        tx.remove(gone).unwrap();
        let swap = drain(&mut subset);
        assert_eq!(swap.len(), 2, "{swap:?}");
        assert!(swap[0].starts_with('+') && swap[1] == format!("-{gone}"));

        // A chosen endpoint drains (weight 0): it leaves the subset.
        let draining = chosen[1];
        tx.insert_weighted(draining, (), 0).unwrap();
        let swap = drain(&mut subset);
        assert!(swap.contains(&format!("-{draining}")), "{swap:?}");
        assert_eq!(subset.chosen.len(), 3);

        // A chosen endpoint replaced with a new weight passes through.
        let kept = chosen[2];
        tx.insert_weighted(kept, (), 5).unwrap();
        assert_eq!(drain(&mut subset), [format!("+{kept}@5")]);
    }
}
