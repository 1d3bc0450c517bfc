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
mod tests;
