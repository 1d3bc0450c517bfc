//! Least connections: the endpoint with the least load for its weight.

use tower::load::Load;

use super::{Endpoints, Meta, Pick, Prepare};
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
/// * **pick**: O(n): reads every endpoint's load. For large sets prefer
///   [`P2c`](super::P2c), which reads two.
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
/// returned, or `None` when none is allowed.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use tower_lb::pick::{Endpoints, LeastConnections, Meta, Pick, Prepare};
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
/// let metas = [Meta::new(1, 1), Meta::new(2, 1)];
/// let services = [busy, idle];
///
/// let least = LeastConnections::with_seed(7);
/// let table = least.prepare(&metas);
/// let endpoints = Endpoints::new(&metas, &services);
/// assert_eq!(least.pick(&table, &endpoints, &()), Some(1));
/// ```
#[derive(Debug)]
pub struct LeastConnections {
    rng: Rng,
}

impl LeastConnections {
    /// A picker that breaks ties with a generator seeded from entropy.
    #[must_use]
    pub fn new() -> Self {
        Self {
            rng: Rng::from_entropy(),
        }
    }

    /// A picker whose tie-breaking follows from `seed`, for reproducible
    /// tests.
    #[must_use]
    pub fn with_seed(seed: u64) -> Self {
        Self {
            rng: Rng::from_seed(seed),
        }
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

    fn prepare(&self, endpoints: &[Meta]) -> LeastConnectionsTable {
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
        endpoints: &Endpoints<'_, S>,
        _req: &Req,
    ) -> Option<usize> {
        let n = table.eligible.len();
        if n == 0 {
            return None;
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
        let endpoints = Endpoints::new(&metas, &services);
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
        let endpoints = Endpoints::new(&metas, &services);
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
        let endpoints = Endpoints::new(&metas, &services);
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
        let endpoints = Endpoints::new(&metas, &services);
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
        let plain = Endpoints::new(&metas, &services);
        for _ in 0..20 {
            assert_eq!(least.pick(&table, &plain, &()), Some(1));
        }
        let excluded = [1];
        let endpoints = Endpoints::new(&metas, &services).excluding(&excluded);
        assert_eq!(least.pick(&table, &endpoints, &()), Some(2));
        let all = [1, 2, 3];
        let none = Endpoints::new(&metas, &services).excluding(&all);
        assert_eq!(least.pick(&table, &none, &()), None);
    }

    #[test]
    fn none_without_endpoints() {
        let least = LeastConnections::with_seed(6);
        let metas = metas(&[0, 0]);
        let services = [Counted::new(0), Counted::new(0)];
        let table = least.prepare(&metas);
        assert_eq!(
            least.pick(&table, &Endpoints::new(&metas, &services), &()),
            None
        );
        let table = least.prepare(&[]);
        let empty: [Counted; 0] = [];
        assert_eq!(least.pick(&table, &Endpoints::new(&[], &empty), &()), None);
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
        let endpoints = Endpoints::new(&metas, &services);
        assert_eq!(least.pick(&table, &endpoints, &()), Some(2));
        let nan = [Fixed(f64::NAN)];
        let metas = metas[..1].to_vec();
        let endpoints = Endpoints::new(&metas, &nan);
        assert_eq!(least.pick(&table, &endpoints, &()), Some(0));
    }
}
