//! Plain round robin.

use std::sync::atomic::AtomicUsize;

use super::weighted_round_robin::Schedule;
use super::{Candidates, EndpointInfo, Pick, Prepare};

/// Round robin: each endpoint in turn, ignoring weights.
///
/// # Cost
///
/// * **pick**: O(1): one relaxed atomic add on a cursor in the picker and one
///   read of the table.
/// * **prepare**: O(n): the table lists the endpoints that may be picked.
///
/// # Weights
///
/// Every endpoint of non-zero weight gets the same share: over `k × m` picks
/// from `m` such endpoints, each gets exactly `k`. Weight 0 is never picked.
/// Use [`WeightedRoundRobin`](super::WeightedRoundRobin) for shares that
/// follow weights.
///
/// # No endpoints, exclusions
///
/// With no endpoint of non-zero weight, `pick` returns `None`. An endpoint
/// that may not take the request (excluded by a retry, or unhealthy) passes
/// its turn on: the cursor moves to the next turn, up to 8 times, so the
/// remaining endpoints share its turns evenly (with 1 of 4 down, each of the
/// other 3 gets a third) instead of its neighbour taking them all. Past
/// that, the next allowed endpoint along the cycle; whatever is returned
/// satisfies [`Candidates::is_allowed`].
///
/// # Example
///
/// ```
/// use tower_lb::pick::{Candidates, EndpointInfo, Pick, Prepare, RoundRobin};
///
/// let rr = RoundRobin::new();
/// let metas = [EndpointInfo::new(1, 1), EndpointInfo::new(2, 0), EndpointInfo::new(3, 7)];
/// let table = rr.prepare(&metas);
/// let endpoints = Candidates::new(&metas, &[(), (), ()]);
/// let picks: Vec<usize> = (0..4)
///     .map(|_| Pick::<(), ()>::pick(&rr, &table, &endpoints, &()).unwrap())
///     .collect();
/// assert_eq!(picks, [0, 2, 0, 2]);
/// ```
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// A picker that starts at the first endpoint.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            next: AtomicUsize::new(0),
        }
    }
}

impl Prepare for RoundRobin {
    type Table = Schedule;

    fn prepare(&self, endpoints: &[EndpointInfo]) -> Schedule {
        Schedule::new(
            endpoints
                .iter()
                .take(u32::MAX as usize)
                .enumerate()
                .filter(|(_, meta)| meta.weight() > 0)
                .map(|(i, _)| i as u32)
                .collect(),
        )
    }
}

impl<Req, S> Pick<Req, S> for RoundRobin {
    fn pick(&self, table: &Schedule, endpoints: &Candidates<'_, S>, _req: &Req) -> Option<usize> {
        // The table is in index order, so walking it and then scanning the
        // endpoints both step forward to the next allowed endpoint.
        table.round_robin(&self.next, endpoints)
    }
}

#[cfg(test)]
mod tests;
