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
mod tests {
    use super::*;
    use crate::pick::testing::metas;

    fn tally(
        rr: &RoundRobin,
        table: &Schedule,
        endpoints: &Candidates<'_, ()>,
        picks: usize,
    ) -> Vec<usize> {
        let mut c = vec![0; endpoints.len()];
        for _ in 0..picks {
            c[Pick::<(), ()>::pick(rr, table, endpoints, &()).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn splits_exactly() {
        let rr = RoundRobin::new();
        let metas = metas(&[1, 1, 1]);
        let table = rr.prepare(&metas);
        let endpoints = Candidates::new(&metas, &[(); 3]);
        assert_eq!(tally(&rr, &table, &endpoints, 3000), [1000, 1000, 1000]);
    }

    #[test]
    fn ignores_weights_but_skips_zero() {
        let rr = RoundRobin::new();
        let metas = metas(&[u32::MAX, 0, 1, 5]);
        let table = rr.prepare(&metas);
        let endpoints = Candidates::new(&metas, &[(); 4]);
        assert_eq!(tally(&rr, &table, &endpoints, 300), [100, 0, 100, 100]);
    }

    #[test]
    fn none_without_endpoints() {
        let rr = RoundRobin::new();
        for weights in [&[][..], &[0, 0][..]] {
            let metas = metas(weights);
            let services = vec![(); metas.len()];
            let table = rr.prepare(&metas);
            let endpoints = Candidates::new(&metas, &services);
            assert_eq!(Pick::<(), ()>::pick(&rr, &table, &endpoints, &()), None);
        }
    }

    #[test]
    fn exclusions_step_forward() {
        let rr = RoundRobin::new();
        let metas = metas(&[1, 1, 1, 1]);
        let table = rr.prepare(&metas);
        let services = [(); 4];
        let excluded = [1, 2];
        let endpoints = Candidates::new(&metas, &services).excluding(&excluded);
        // The turns of 1 and 2 pass to the cursor's next turns, so 0 and 3
        // share them evenly rather than 3, the next in line, taking them all.
        assert_eq!(tally(&rr, &table, &endpoints, 400), [200, 0, 0, 200]);
        let all = [3, 2, 1, 0];
        let none = Candidates::new(&metas, &services).excluding(&all);
        assert_eq!(Pick::<(), ()>::pick(&rr, &table, &none, &()), None);
    }

    #[test]
    fn thousands_of_endpoints() {
        let rr = RoundRobin::new();
        let metas = metas(&vec![1; 5000]);
        let table = rr.prepare(&metas);
        let services = vec![(); 5000];
        let excluded: Vec<u64> = (0..4999).collect();
        let endpoints = Candidates::new(&metas, &services).excluding(&excluded);
        assert_eq!(
            Pick::<(), ()>::pick(&rr, &table, &endpoints, &()),
            Some(4999)
        );
    }

    #[test]
    fn cursor_wraps_without_panicking() {
        let rr = RoundRobin {
            next: AtomicUsize::new(usize::MAX - 1),
        };
        let metas = metas(&[1, 1, 1]);
        let table = rr.prepare(&metas);
        let endpoints = Candidates::new(&metas, &[(); 3]);
        for _ in 0..5 {
            assert!(Pick::<(), ()>::pick(&rr, &table, &endpoints, &()).is_some());
        }
    }
}
