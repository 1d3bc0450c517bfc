//! Least connections: the endpoint with the least load for its weight.

use std::sync::atomic::{AtomicUsize, Ordering};

use tower::load::Load;

use super::{Candidates, EndpointInfo, Pick, Prepare};
use crate::util::Rng;

/// Least connections, weight-aware: the endpoint with the smallest
/// `load ÷ weight`.
///
/// Load is whatever the endpoint services report through
/// [`tower::load::Load`], as long as it converts into `f64`: requests in
/// flight with [`InFlight`](crate::load::InFlight), a latency cost with
/// [`Latency`](crate::load::Latency).
///
/// # Cost
///
/// * **pick**: O(min(n, w)) for a window of `w` endpoints, 16 unless set
///   with [`LeastConnections::window`]. Up to `w` endpoints, every load is
///   read and the choice is exact. Beyond, a pick reads the next `w`
///   endpoints of a cursor that sweeps the set (so every endpoint is looked
///   at once every `n ÷ w` picks) and the last winner, and takes the least
///   loaded of those: an approximation, since an endpoint outside the window
///   may be lower. The winner carried from pick to pick keeps it close:
///   to lose to the global minimum a pick's choice must beat the best
///   endpoint seen lately. Were every endpoint of the window excluded, a
///   full scan follows.
/// * **prepare**: O(n): lists the endpoints that may be picked with the
///   inverse of their weight.
///
/// # Weights
///
/// An endpoint of weight 4 is as attractive with 4 requests in flight as one
/// of weight 1 with 1. Weight 0 is never picked. Ties (every endpoint idle,
/// say) are broken at random rather than always in favour of the first
/// endpoint: the scan starts at a random endpoint and keeps the first strict
/// minimum. A load that is not a number counts as the highest possible.
///
/// # No endpoints, exclusions
///
/// With no endpoint of non-zero weight, `pick` returns `None`. Excluded
/// endpoints are skipped in the scan, so the least loaded allowed endpoint is
/// returned (of the window, beyond `w` endpoints), or `None` when none is
/// allowed.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use tower_lb::pick::{Candidates, LeastConnections, EndpointInfo, Pick, Prepare};
///
/// // A stand-in for an endpoint service that counts its requests in flight.
/// struct Counted(Arc<AtomicUsize>);
/// impl tower::load::Load for Counted {
///     type Metric = u32;
///     fn load(&self) -> u32 {
///         self.0.load(Ordering::Relaxed) as u32
///     }
/// }
///
/// let busy = Counted(Arc::new(AtomicUsize::new(3)));
/// let idle = Counted(Arc::new(AtomicUsize::new(1)));
/// let metas = [EndpointInfo::new(1, 1), EndpointInfo::new(2, 1)];
/// let services = [busy, idle];
///
/// let least = LeastConnections::with_seed(7);
/// let table = least.prepare(&metas);
/// let endpoints = Candidates::new(&metas, &services);
/// assert_eq!(least.pick(&table, &endpoints, &()), Some(1));
/// ```
#[derive(Debug)]
pub struct LeastConnections {
    rng: Rng,
    window: usize,
    /// Where the next window starts, in table positions (wrapping).
    cursor: AtomicUsize,
    /// The endpoint index of the last windowed pick's winner; `NONE` before.
    memory: AtomicUsize,
}

/// Endpoints read a pick by default, beyond which picks look at a window.
const DEFAULT_WINDOW: usize = 16;

const NONE: usize = usize::MAX;

impl LeastConnections {
    /// A picker that breaks ties with a generator seeded from entropy.
    #[must_use]
    pub fn new() -> Self {
        Self::with_rng(Rng::from_entropy())
    }

    /// A picker whose tie-breaking follows from `seed`, for reproducible
    /// tests.
    #[must_use]
    pub fn with_seed(seed: u64) -> Self {
        Self::with_rng(Rng::from_seed(seed))
    }

    fn with_rng(rng: Rng) -> Self {
        Self {
            rng,
            window: DEFAULT_WINDOW,
            cursor: AtomicUsize::new(0),
            memory: AtomicUsize::new(NONE),
        }
    }

    /// Reads at most `window` endpoints a pick (and the last winner), as
    /// described under *Cost*; `usize::MAX` keeps every pick exact at O(n).
    /// A window of 0 is taken as 1.
    #[must_use]
    pub fn window(mut self, window: usize) -> Self {
        self.window = window.max(1);
        self
    }
}

impl Default for LeastConnections {
    fn default() -> Self {
        Self::new()
    }
}

/// The endpoints [`LeastConnections`] may pick, each with the inverse of its
/// weight.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LeastConnectionsTable {
    eligible: Box<[(usize, f64)]>,
}

impl LeastConnectionsTable {
    /// How many endpoints may be picked.
    pub fn len(&self) -> usize {
        self.eligible.len()
    }

    /// Whether no endpoint may be picked.
    pub fn is_empty(&self) -> bool {
        self.eligible.is_empty()
    }
}

impl Prepare for LeastConnections {
    type Table = LeastConnectionsTable;

    fn prepare(&self, endpoints: &[EndpointInfo]) -> LeastConnectionsTable {
        LeastConnectionsTable {
            eligible: endpoints
                .iter()
                .enumerate()
                .filter(|(_, meta)| meta.weight() > 0)
                .map(|(i, meta)| (i, 1.0 / f64::from(meta.weight())))
                .collect(),
        }
    }
}

impl<Req, S> Pick<Req, S> for LeastConnections
where
    S: Load,
    S::Metric: Into<f64>,
{
    fn pick(
        &self,
        table: &LeastConnectionsTable,
        endpoints: &Candidates<'_, S>,
        _req: &Req,
    ) -> Option<usize> {
        let n = table.eligible.len();
        if n == 0 {
            return None;
        }
        if n > self.window {
            if let Some(i) = self.pick_in_window(table, endpoints) {
                return Some(i);
            }
        }
        let services = endpoints.services();
        let filter = endpoints.has_exclusions();
        let start = self.rng.below(n);
        let (tail, head) = table.eligible.split_at(start);
        let mut best: Option<(usize, f64)> = None;
        for &(i, inverse_weight) in head.iter().chain(tail) {
            if filter && !endpoints.is_allowed(i) {
                continue;
            }
            let Some(service) = services.get(i) else {
                continue;
            };
            let score = service.load().into() * inverse_weight;
            let score = if score.is_nan() { f64::INFINITY } else { score };
            if best.is_none_or(|(_, low)| score < low) {
                best = Some((i, score));
            }
        }
        best.map(|(i, _)| i).filter(|&i| endpoints.is_allowed(i))
    }
}

impl LeastConnections {
    /// The least loaded of the next window and the last winner; `None` when
    /// none of them may take the request.
    fn pick_in_window<S>(
        &self,
        table: &LeastConnectionsTable,
        endpoints: &Candidates<'_, S>,
    ) -> Option<usize>
    where
        S: Load,
        S::Metric: Into<f64>,
    {
        let n = table.eligible.len();
        let services = endpoints.services();
        let filter = endpoints.has_exclusions();
        let score = |i: usize, inverse_weight: f64| {
            let s = services.get(i)?.load().into() * inverse_weight;
            Some(if s.is_nan() { f64::INFINITY } else { s })
        };
        let start = self.cursor.fetch_add(self.window, Ordering::Relaxed) % n;
        let mut best: Option<(usize, f64)> = None;
        let mut at = start;
        for _ in 0..self.window {
            let (i, inverse_weight) = table.eligible[at];
            at = if at + 1 == n { 0 } else { at + 1 };
            if filter && !endpoints.is_allowed(i) {
                continue;
            }
            let Some(score) = score(i, inverse_weight) else {
                continue;
            };
            if best.is_none_or(|(_, low)| score < low) {
                best = Some((i, score));
            }
        }
        let remembered = self.memory.load(Ordering::Relaxed);
        if endpoints.is_allowed(remembered) && best.is_none_or(|(i, _)| i != remembered) {
            let inverse_weight = 1.0 / f64::from(endpoints.metas()[remembered].weight());
            if let Some(score) = score(remembered, inverse_weight) {
                if best.is_none_or(|(_, low)| score < low) {
                    best = Some((remembered, score));
                }
            }
        }
        let (winner, _) = best?;
        if winner != remembered {
            self.memory.store(winner, Ordering::Relaxed);
        }
        Some(winner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::pick::testing::{idle, metas, Counted, Fixed};

    #[test]
    fn prefers_lower_load() {
        let least = LeastConnections::with_seed(1);
        let metas = metas(&[1, 1, 1]);
        let services = [Counted::new(5), Counted::new(2), Counted::new(9)];
        let table = least.prepare(&metas);
        let endpoints = Candidates::new(&metas, &services);
        for _ in 0..50 {
            assert_eq!(least.pick(&table, &endpoints, &()), Some(1));
        }
    }

    #[test]
    fn divides_load_by_weight() {
        let least = LeastConnections::with_seed(2);
        let metas = metas(&[1, 4]);
        // 2 ÷ 1 against 6 ÷ 4: the heavier endpoint is less loaded.
        let services = [Counted::new(2), Counted::new(6)];
        let table = least.prepare(&metas);
        let endpoints = Candidates::new(&metas, &services);
        assert_eq!(least.pick(&table, &endpoints, &()), Some(1));
        services[1].0.store(9, Ordering::Relaxed);
        assert_eq!(least.pick(&table, &endpoints, &()), Some(0));
    }

    #[test]
    fn spreads_ties() {
        let least = LeastConnections::with_seed(3);
        let metas = metas(&[1, 1, 1, 1]);
        let services = idle(4);
        let table = least.prepare(&metas);
        let endpoints = Candidates::new(&metas, &services);
        let mut c = [0; 4];
        for _ in 0..4000 {
            c[least.pick(&table, &endpoints, &()).unwrap()] += 1;
        }
        assert!(c.iter().all(|&k| (800..1200).contains(&k)), "{c:?}");
    }

    #[test]
    fn balances_in_flight_requests() {
        // Requests that never finish: each pick raises that endpoint's load,
        // so in-flight counts end up proportional to weight.
        let least = LeastConnections::with_seed(4);
        let metas = metas(&[1, 2, 3]);
        let services = idle(3);
        let table = least.prepare(&metas);
        let endpoints = Candidates::new(&metas, &services);
        for _ in 0..600 {
            let i = least.pick(&table, &endpoints, &()).unwrap();
            services[i].0.fetch_add(1, Ordering::Relaxed);
        }
        let loads: Vec<u32> = services.iter().map(Counted::get).collect();
        assert_eq!(loads, [100, 200, 300]);
    }

    #[test]
    fn zero_weight_and_exclusions() {
        let least = LeastConnections::with_seed(5);
        let metas = metas(&[0, 1, 1, 1]);
        let services = [
            Counted::new(0),
            Counted::new(0),
            Counted::new(1),
            Counted::new(7),
        ];
        let table = least.prepare(&metas);
        let plain = Candidates::new(&metas, &services);
        for _ in 0..20 {
            assert_eq!(least.pick(&table, &plain, &()), Some(1));
        }
        let excluded = [1];
        let endpoints = Candidates::new(&metas, &services).excluding(&excluded);
        assert_eq!(least.pick(&table, &endpoints, &()), Some(2));
        let all = [1, 2, 3];
        let none = Candidates::new(&metas, &services).excluding(&all);
        assert_eq!(least.pick(&table, &none, &()), None);
    }

    #[test]
    fn none_without_endpoints() {
        let least = LeastConnections::with_seed(6);
        let metas = metas(&[0, 0]);
        let services = [Counted::new(0), Counted::new(0)];
        let table = least.prepare(&metas);
        assert_eq!(
            least.pick(&table, &Candidates::new(&metas, &services), &()),
            None
        );
        let table = least.prepare(&[]);
        let empty: [Counted; 0] = [];
        assert_eq!(least.pick(&table, &Candidates::new(&[], &empty), &()), None);
    }

    #[test]
    fn odd_loads_and_weights_do_not_panic() {
        let least = LeastConnections::with_seed(7);
        let metas = metas(&[u32::MAX, 1, 1, 1]);
        let services = [
            Fixed(f64::NAN),
            Fixed(f64::INFINITY),
            Fixed(-1.0),
            Fixed(f64::MAX),
        ];
        let table = least.prepare(&metas);
        let endpoints = Candidates::new(&metas, &services);
        assert_eq!(least.pick(&table, &endpoints, &()), Some(2));
        let nan = [Fixed(f64::NAN)];
        let metas = metas[..1].to_vec();
        let endpoints = Candidates::new(&metas, &nan);
        assert_eq!(least.pick(&table, &endpoints, &()), Some(0));
    }

    #[test]
    fn a_window_keeps_large_sets_nearly_even() {
        // Requests that never finish, on 256 endpoints of weight 1 and 2:
        // windowed picks keep every endpoint within a request or two of
        // least connections' exact share.
        let least = LeastConnections::with_seed(8);
        let weights: Vec<u32> = (0..256).map(|i| 1 + (i % 2)).collect();
        let metas = metas(&weights);
        let services = idle(256);
        let table = least.prepare(&metas);
        let endpoints = Candidates::new(&metas, &services);
        for _ in 0..256 * 30 {
            let i = least.pick(&table, &endpoints, &()).unwrap();
            services[i].0.fetch_add(1, Ordering::Relaxed);
        }
        for (i, s) in services.iter().enumerate() {
            let exact = 20 * weights[i];
            assert!(
                s.get().abs_diff(exact) <= 2 * weights[i],
                "{i}: {}",
                s.get()
            );
        }
    }

    #[test]
    fn a_window_honours_exclusions_and_weights() {
        let least = LeastConnections::with_seed(9).window(4);
        let weights: Vec<u32> = (0..64).map(|i| u32::from(i % 8 != 0)).collect();
        let metas = metas(&weights);
        let services: Vec<Counted> = (0..64).map(|i| Counted::new(64 - i)).collect();
        let table = least.prepare(&metas);
        let excluded: Vec<u64> = metas[..60].iter().map(|m| m.key_hash()).collect();
        let endpoints = Candidates::new(&metas, &services).excluding(&excluded);
        for _ in 0..100 {
            let i = least.pick(&table, &endpoints, &()).unwrap();
            assert!(i >= 60 && weights[i] > 0, "{i}");
        }
        // Every endpoint excluded: none, after the fallback scan.
        let all: Vec<u64> = metas.iter().map(|m| m.key_hash()).collect();
        let none = Candidates::new(&metas, &services).excluding(&all);
        assert_eq!(least.pick(&table, &none, &()), None);
        // The remembered winner is not brought back once excluded.
        let plain = Candidates::new(&metas, &services);
        let first = least.pick(&table, &plain, &()).unwrap();
        let without = [metas[first].key_hash()];
        let retry = Candidates::new(&metas, &services).excluding(&without);
        for _ in 0..100 {
            assert_ne!(least.pick(&table, &retry, &()), Some(first));
        }
    }

    #[test]
    fn a_pick_reads_a_window_of_loads() {
        use std::sync::atomic::AtomicUsize;
        use std::sync::Arc;

        struct Read(Arc<AtomicUsize>);
        impl Load for Read {
            type Metric = u32;
            fn load(&self) -> u32 {
                self.0.fetch_add(1, Ordering::Relaxed);
                1
            }
        }
        let reads = Arc::new(AtomicUsize::new(0));
        let services: Vec<Read> = (0..4096).map(|_| Read(Arc::clone(&reads))).collect();
        let metas = metas(&vec![1; 4096]);
        let least = LeastConnections::with_seed(10);
        let table = least.prepare(&metas);
        let endpoints = Candidates::new(&metas, &services);
        for _ in 0..100 {
            reads.store(0, Ordering::Relaxed);
            least.pick(&table, &endpoints, &()).unwrap();
            assert!(reads.load(Ordering::Relaxed) <= 17);
        }
    }
}
