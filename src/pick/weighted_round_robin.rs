//! Smooth weighted round robin, precomputed into a schedule.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::fallback::walk_allowed;
use super::{Candidates, EndpointInfo, Pick, Prepare};

/// A schedule never needs more entries than this to be exact, whatever `n`.
const MIN_SCHEDULE_CAP: u64 = 65_536;

/// Schedule entries allowed per endpoint, when that exceeds the minimum cap.
const SCHEDULE_CAP_PER_ENDPOINT: u64 = 64;

/// Above this many steps (cycle length × endpoints) the O(total × n) nginx
/// build gives way to the O(total × log n) deadline build.
const NGINX_BUILD_LIMIT: u128 = 1 << 26;

/// Schedule entries a pick walks past excluded endpoints before it falls back
/// to a scan of the endpoints; keeps a pick bounded when one excluded
/// endpoint owns a long run of the schedule.
const EXCLUSION_WALK: usize = 64;

/// Smooth weighted round robin, as nginx does it: every endpoint gets its
/// weight's share of each cycle, spread out instead of in bursts.
///
/// Weights 5, 1, 1 for endpoints `a`, `b`, `c` give the cycle
/// `a a b a c a a`, where plain expansion would give `a a a a a b c`.
///
/// # Cost
///
/// * **pick**: O(1): one relaxed atomic add on a cursor in the picker and one
///   read of the schedule.
/// * **prepare**: builds one full cycle of the schedule (4 bytes an entry).
///   Weights are first divided by their greatest common divisor, so the cycle
///   has `total` = the sum of the reduced weights entries. The exact nginx
///   algorithm costs O(total × n); when that product would exceed 2²⁶ steps,
///   an earliest-deadline build runs instead in O(total × log n). It gives
///   every endpoint exactly its share of each cycle too, but its order is
///   not nginx's.
///
/// # Smoothness
///
/// Over every stretch of the cycle from its start, no endpoint is ever a
/// whole pick ahead of or behind its exact share; so in any window of the
/// repeating cycle an endpoint gets at most one pick more than its share
/// of the window rounded up. nginx's order usually has that property but
/// not always (weights 1, 1, 6, 21, 21 leave one endpoint 1.08 picks
/// behind): each nginx cycle is checked, in O(total), and one that falls
/// short is replaced by the earliest-deadline order, which always has it.
///
/// # Weights
///
/// Traffic is proportional to weight; weight 0 is never picked. The cycle is
/// capped at max(65 536, 64 × n) entries (plus at most n for rounding): when
/// the reduced weights sum to more, they are scaled down proportionally (each
/// stays at least 1), so
/// shares are then approximate, with an error of at most about one entry in
/// the cap for each endpoint (a weight of `u32::MAX` beside a weight of 1
/// still gives the light endpoint one pick a cycle).
///
/// # No endpoints, exclusions
///
/// With no endpoint of non-zero weight, `pick` returns `None`. When the
/// scheduled endpoint may not take the request (excluded by a retry, or
/// unhealthy), its turn passes to the cursor's next turn, up to 8 times, so
/// the others share its turns in proportion to their weights; then the pick
/// walks forward along the schedule (at most 64 entries) to the next allowed
/// one, then scans the endpoints in index order. Whatever is returned
/// satisfies [`Candidates::is_allowed`].
///
/// # Example
///
/// ```
/// use tower_lb::pick::{Candidates, EndpointInfo, Pick, Prepare, WeightedRoundRobin};
///
/// let wrr = WeightedRoundRobin::new();
/// let metas = [EndpointInfo::new(1, 5), EndpointInfo::new(2, 1), EndpointInfo::new(3, 1)];
/// let table = wrr.prepare(&metas);
/// let endpoints = Candidates::new(&metas, &[(), (), ()]);
/// let cycle: Vec<usize> = (0..7)
///     .map(|_| Pick::<(), ()>::pick(&wrr, &table, &endpoints, &()).unwrap())
///     .collect();
/// assert_eq!(cycle, [0, 0, 1, 0, 2, 0, 0]);
/// ```
#[derive(Debug, Default)]
pub struct WeightedRoundRobin {
    next: AtomicUsize,
}

impl WeightedRoundRobin {
    /// A picker whose cursor starts at the beginning of the cycle.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            next: AtomicUsize::new(0),
        }
    }
}

/// One full cycle of endpoint indices, walked by a cursor; the table of
/// [`WeightedRoundRobin`], [`RoundRobin`](super::RoundRobin) and
/// [`IpHash`](super::IpHash).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Schedule {
    entries: Box<[u32]>,
}

impl Schedule {
    pub(crate) fn new(entries: Vec<u32>) -> Self {
        Self {
            entries: entries.into_boxed_slice(),
        }
    }

    /// The endpoint indices of one cycle, in order.
    pub fn entries(&self) -> &[u32] {
        &self.entries
    }

    /// How many entries one cycle has.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no endpoint can be picked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry at `pos` if it is allowed; else the next allowed entry along
    /// the schedule (at most [`EXCLUSION_WALK`] steps), else the first allowed
    /// endpoint after it in index order. `pos` must be below `len()`.
    pub(crate) fn allowed_from<S>(
        &self,
        pos: usize,
        endpoints: &Candidates<'_, S>,
    ) -> Option<usize> {
        let first = *self.entries.get(pos)? as usize;
        let entry = |at: usize| self.entries[at] as usize;
        if let Some(i) = walk_allowed(self.len(), pos, EXCLUSION_WALK, entry, endpoints) {
            return Some(i);
        }
        let n = endpoints.len();
        if n == 0 {
            return None;
        }
        let start = first % n;
        (1..=n)
            .map(|k| (start + k) % n)
            .find(|&i| endpoints.is_allowed(i))
    }

    /// The entry under `cursor`, which moves on one entry a call. An entry
    /// that is not allowed gives its turn to the cursor's next entry (up to
    /// [`REDRAWS`] times, then the walk of [`allowed_from`](Self::allowed_from)),
    /// so the endpoints still allowed share the turns of the others evenly
    /// instead of the next one in the cycle taking them all.
    pub(crate) fn round_robin<S>(
        &self,
        cursor: &AtomicUsize,
        endpoints: &Candidates<'_, S>,
    ) -> Option<usize> {
        let len = self.entries.len();
        if len == 0 {
            return None;
        }
        let mut pos = cursor.fetch_add(1, Ordering::Relaxed) % len;
        if endpoints.has_exclusions() {
            for _ in 0..REDRAWS.min(len) {
                let i = self.entries[pos] as usize;
                if endpoints.is_allowed(i) {
                    return Some(i);
                }
                pos = cursor.fetch_add(1, Ordering::Relaxed) % len;
            }
        }
        self.allowed_from(pos, endpoints)
    }
}

/// Turns of the cycle a round-robin pick takes before it walks the schedule
/// for an allowed endpoint: each costs one more atomic add on the cursor.
const REDRAWS: usize = 8;

impl Prepare for WeightedRoundRobin {
    type Table = Schedule;

    fn prepare(&self, endpoints: &[EndpointInfo]) -> Schedule {
        Schedule::new(smooth_schedule(endpoints))
    }
}

impl<Req, S> Pick<Req, S> for WeightedRoundRobin {
    fn pick(&self, table: &Schedule, endpoints: &Candidates<'_, S>, _req: &Req) -> Option<usize> {
        table.round_robin(&self.next, endpoints)
    }
}

// ===== schedule building =====

/// One full smooth cycle over the endpoints of non-zero weight: each appears
/// in proportion to its weight (exactly, unless the cycle had to be scaled
/// down to its cap), spread as evenly as the weights allow.
pub(crate) fn smooth_schedule(metas: &[EndpointInfo]) -> Vec<u32> {
    let mut weighted: Vec<(u32, u64)> = metas
        .iter()
        .take(u32::MAX as usize)
        .enumerate()
        .filter(|(_, meta)| meta.weight() > 0)
        .map(|(i, meta)| (i as u32, u64::from(meta.weight())))
        .collect();
    if weighted.is_empty() {
        return Vec::new();
    }
    let n = weighted.len() as u64;
    let mut total = reduce_by_gcd(&mut weighted);
    let cap = MIN_SCHEDULE_CAP.max(SCHEDULE_CAP_PER_ENDPOINT.saturating_mul(n));
    if total > cap {
        for (_, w) in &mut weighted {
            // Rounded share of the cap; fits in u64 since it is at most cap.
            let scaled =
                (u128::from(*w) * u128::from(cap) + u128::from(total) / 2) / u128::from(total);
            *w = (scaled as u64).max(1);
        }
        total = reduce_by_gcd(&mut weighted);
    }
    if u128::from(total) * u128::from(n) <= NGINX_BUILD_LIMIT {
        let schedule = nginx_schedule(&weighted, total);
        if within_one_pick(&schedule, &weighted, total) {
            return schedule;
        }
    }
    deadline_schedule(&weighted, total)
}

/// Whether, over every prefix of the cycle, each endpoint's count is less
/// than one pick away from its exact share `t × w / total`. An endpoint is
/// furthest ahead just after one of its picks and furthest behind just
/// before one, so checking there is enough: O(total).
fn within_one_pick(schedule: &[u32], weighted: &[(u32, u64)], total: u64) -> bool {
    let total = u128::from(total);
    let mut seen = vec![0u128; weighted.len()];
    schedule.iter().enumerate().all(|(t, &index)| {
        // `weighted` is in index order: its position is found by search.
        let Ok(p) = weighted.binary_search_by_key(&index, |&(i, _)| i) else {
            return false;
        };
        let (w, t, k) = (u128::from(weighted[p].1), t as u128, seen[p]);
        seen[p] += 1;
        // Behind before the pick: t·w/total − k < 1; ahead after it:
        // (k + 1) − (t + 1)·w/total < 1.
        t * w < (k + 1) * total && k * total < (t + 1) * w
    })
}

/// Divides every weight by their greatest common divisor; returns their sum.
fn reduce_by_gcd(weighted: &mut [(u32, u64)]) -> u64 {
    let g = weighted.iter().fold(0, |g, &(_, w)| gcd(g, w)).max(1);
    let mut total = 0u64;
    for (_, w) in weighted.iter_mut() {
        *w /= g;
        total = total.saturating_add(*w);
    }
    total
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// nginx's smooth weighted round robin: each step every endpoint's current
/// value grows by its weight, the largest (ties to the lowest index) is
/// chosen and its value drops by the total.
fn nginx_schedule(weighted: &[(u32, u64)], total: u64) -> Vec<u32> {
    // total × n ≤ 2^26 here, so every value fits an i64 with room to spare.
    let step = total as i64;
    let mut current = vec![0i64; weighted.len()];
    let mut schedule = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        let mut best_value = i64::MIN;
        for (j, (&(_, w), value)) in weighted.iter().zip(current.iter_mut()).enumerate() {
            *value += w as i64;
            if *value > best_value {
                best = j;
                best_value = *value;
            }
        }
        current[best] -= step;
        schedule.push(weighted[best].0);
    }
    schedule
}

/// Earliest-deadline-first over proportional-fair windows: the k-th pick of
/// an endpoint of weight w becomes due at slot ⌊k·total/w⌋ and must happen
/// before slot ⌈(k+1)·total/w⌉. On one "processor" with weights summing to
/// the cycle length every window is met, so no endpoint is ever a whole pick
/// ahead of or behind its share; each step costs O(log n).
fn deadline_schedule(weighted: &[(u32, u64)], total: u64) -> Vec<u32> {
    let release = |k: u64, w: u64| (u128::from(k) * u128::from(total) / u128::from(w)) as u64;
    let deadline =
        |k: u64, w: u64| (u128::from(k + 1) * u128::from(total)).div_ceil(u128::from(w)) as u64;
    let mut done = vec![0u64; weighted.len()];
    // Both heaps hold (slot, position in `weighted`), smallest first.
    let mut ready: BinaryHeap<Reverse<(u64, usize)>> = weighted
        .iter()
        .enumerate()
        .map(|(p, &(_, w))| Reverse((deadline(0, w), p)))
        .collect();
    let mut waiting: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    let mut schedule = Vec::with_capacity(total as usize);
    for slot in 0..total {
        while let Some(&Reverse((due, p))) = waiting.peek() {
            if due > slot && !ready.is_empty() {
                break;
            }
            waiting.pop();
            ready.push(Reverse((deadline(done[p], weighted[p].1), p)));
        }
        let Some(Reverse((_, p))) = ready.pop() else {
            break;
        };
        schedule.push(weighted[p].0);
        done[p] += 1;
        let w = weighted[p].1;
        if done[p] < w {
            let due = release(done[p], w);
            if due <= slot + 1 {
                ready.push(Reverse((deadline(done[p], w), p)));
            } else {
                waiting.push(Reverse((due, p)));
            }
        }
    }
    schedule
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pick::testing::metas;
    use crate::util::Rng;

    fn counts(schedule: &[u32], n: usize) -> Vec<u64> {
        let mut c = vec![0u64; n];
        for &i in schedule {
            c[i as usize] += 1;
        }
        c
    }

    /// The largest amount, in picks, by which any endpoint runs ahead of or
    /// behind its exact share over any prefix of the cycle.
    fn max_lag(schedule: &[u32], weighted: &[(u32, u64)]) -> f64 {
        let total: u64 = weighted.iter().map(|&(_, w)| w).sum();
        let mut seen = vec![0u64; weighted.len()];
        let mut worst = 0f64;
        for (t, &e) in schedule.iter().enumerate() {
            let p = weighted.iter().position(|&(i, _)| i == e).unwrap();
            seen[p] += 1;
            for (q, &(_, w)) in weighted.iter().enumerate() {
                let ideal = (t as f64 + 1.0) * w as f64 / total as f64;
                worst = worst.max((seen[q] as f64 - ideal).abs());
            }
        }
        worst
    }

    fn random_weights(rng: &Rng, n: usize, max: u64) -> Vec<(u32, u64)> {
        (0..n)
            .map(|i| (i as u32, 1 + rng.next_u64() % max))
            .collect()
    }

    #[test]
    fn nginx_example_order() {
        let wrr = WeightedRoundRobin::new();
        let metas = metas(&[5, 1, 1]);
        let table = wrr.prepare(&metas);
        let endpoints = Candidates::new(&metas, &[(), (), ()]);
        let picks: Vec<usize> = (0..14)
            .map(|_| Pick::<(), ()>::pick(&wrr, &table, &endpoints, &()).unwrap())
            .collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn weights_reduced_by_gcd() {
        assert_eq!(smooth_schedule(&metas(&[10, 2, 2])), [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_schedule(&metas(&[7, 7, 7])), [0, 1, 2]);
        assert_eq!(smooth_schedule(&metas(&[u32::MAX, u32::MAX])), [0, 1]);
    }

    #[test]
    fn exact_counts_for_random_weights() {
        let rng = Rng::from_seed(11);
        for round in 0..200 {
            let n = 1 + rng.below(12);
            let weights: Vec<u32> = (0..n).map(|_| rng.below(50) as u32).collect();
            let schedule = smooth_schedule(&metas(&weights));
            let nonzero: Vec<u64> = weights
                .iter()
                .filter(|&&w| w > 0)
                .map(|&w| u64::from(w))
                .collect();
            if nonzero.is_empty() {
                assert!(schedule.is_empty());
                continue;
            }
            let g = nonzero.iter().fold(0, |g, &w| gcd(g, w));
            let c = counts(&schedule, n);
            for (i, &w) in weights.iter().enumerate() {
                assert_eq!(c[i], u64::from(w) / g, "round {round}: {weights:?}");
            }
        }
    }

    #[test]
    fn published_cycles_stay_within_one_pick_of_fair_share() {
        // The guarantee of the deadline build, and of nginx's order where it
        // is kept: over every prefix of the cycle, every endpoint's count is
        // within one pick of its exact share; so over any window it is
        // fewer than two picks away.
        let rng = Rng::from_seed(3);
        for _ in 0..200 {
            let n = 1 + rng.below(9);
            let mut weighted = random_weights(&rng, n, 40);
            let total = reduce_by_gcd(&mut weighted);
            let weights: Vec<u32> = weighted.iter().map(|&(_, w)| w as u32).collect();
            for schedule in [
                smooth_schedule(&metas(&weights)),
                deadline_schedule(&weighted, total),
            ] {
                assert_eq!(schedule.len() as u64, total);
                let c = counts(&schedule, n);
                for (p, &(_, w)) in weighted.iter().enumerate() {
                    assert_eq!(c[p], w);
                }
                let lag = max_lag(&schedule, &weighted);
                assert!(lag < 1.0, "{weighted:?}: lag {lag}, {schedule:?}");
            }
        }
    }

    #[test]
    fn nginx_cycles_that_fall_behind_are_replaced() {
        // nginx's order leaves the third endpoint 1.08 picks behind its
        // share here; the published cycle must not.
        let mut weighted: Vec<(u32, u64)> = [1, 1, 6, 21, 21]
            .iter()
            .enumerate()
            .map(|(i, &w)| (i as u32, w))
            .collect();
        let total = reduce_by_gcd(&mut weighted);
        let nginx = nginx_schedule(&weighted, total);
        assert!(max_lag(&nginx, &weighted) > 1.0);
        assert!(!within_one_pick(&nginx, &weighted, total));

        let schedule = smooth_schedule(&metas(&[1, 1, 6, 21, 21]));
        assert!(within_one_pick(&schedule, &weighted, total));
        assert!(max_lag(&schedule, &weighted) < 1.0);
        assert_eq!(counts(&schedule, 5), [1, 1, 6, 21, 21]);
        // Where nginx's order is within one pick, it is kept.
        assert_eq!(smooth_schedule(&metas(&[5, 1, 1])), [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn the_check_agrees_with_the_lag() {
        let rng = Rng::from_seed(12);
        for _ in 0..300 {
            let n = 2 + rng.below(6);
            let mut weighted = random_weights(&rng, n, 30);
            let total = reduce_by_gcd(&mut weighted);
            let nginx = nginx_schedule(&weighted, total);
            let lag = max_lag(&nginx, &weighted);
            assert_eq!(
                within_one_pick(&nginx, &weighted, total),
                lag < 1.0,
                "{weighted:?}"
            );
        }
    }

    #[test]
    fn windows_never_exceed_fair_share_by_two() {
        // A window's fair share can be exceeded by more than one pick with
        // nginx's order (by 1.59 for weights 13, 11, 15, 9, 14, 12), never by
        // two: it is the difference of two prefix lags, each below one.
        let rng = Rng::from_seed(5);
        let mut worst = 0f64;
        for _ in 0..100 {
            let n = 2 + rng.below(6);
            let mut weighted = random_weights(&rng, n, 16);
            let total = reduce_by_gcd(&mut weighted) as usize;
            for schedule in [
                nginx_schedule(&weighted, total as u64),
                deadline_schedule(&weighted, total as u64),
            ] {
                // The cycle repeats, so windows may wrap around its end.
                let twice: Vec<u32> = schedule.iter().chain(&schedule).copied().collect();
                for &(e, w) in &weighted {
                    let mut prefix = vec![0usize; twice.len() + 1];
                    for (t, &i) in twice.iter().enumerate() {
                        prefix[t + 1] = prefix[t] + usize::from(i == e);
                    }
                    for start in 0..total {
                        for len in 1..=total {
                            let seen = (prefix[start + len] - prefix[start]) as f64;
                            let fair = len as f64 * w as f64 / total as f64;
                            worst = worst.max(seen - fair);
                            assert!(seen < fair + 2.0, "{weighted:?}: {schedule:?}");
                        }
                    }
                }
            }
        }
        assert!(worst > 1.0, "the bound is tight enough to matter: {worst}");
    }

    #[test]
    fn deadline_build_takes_over_for_large_sets() {
        // 2000 endpoints of weights 1..=40: total × n is far above 2^26.
        let weights: Vec<u32> = (0..2000).map(|i| 1 + (i % 40)).collect();
        let schedule = smooth_schedule(&metas(&weights));
        let c = counts(&schedule, weights.len());
        for (i, &w) in weights.iter().enumerate() {
            assert_eq!(c[i], u64::from(w));
        }
        let weighted: Vec<(u32, u64)> = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| (i as u32, u64::from(w)))
            .collect();
        // A sample of prefixes: checking all of them is quadratic.
        let total: u64 = weighted.iter().map(|&(_, w)| w).sum();
        let mut seen = vec![0u64; weights.len()];
        for (t, &e) in schedule.iter().enumerate() {
            seen[e as usize] += 1;
            if t % 997 == 0 {
                for (q, &(_, w)) in weighted.iter().enumerate() {
                    let ideal = (t as f64 + 1.0) * w as f64 / total as f64;
                    assert!((seen[q] as f64 - ideal).abs() < 1.0);
                }
            }
        }
    }

    #[test]
    fn thousands_of_endpoints_with_huge_weights() {
        let rng = Rng::from_seed(8);
        let weights: Vec<u32> = (0..10_000).map(|_| rng.next_u64() as u32 | 1).collect();
        let schedule = smooth_schedule(&metas(&weights));
        assert!(schedule.len() <= 64 * 10_000 + 10_000);
        let c = counts(&schedule, weights.len());
        assert!(c.iter().all(|&k| k >= 1));
    }

    #[test]
    fn huge_weights_are_scaled_to_the_cap() {
        let schedule = smooth_schedule(&metas(&[u32::MAX, 1]));
        let c = counts(&schedule, 2);
        assert_eq!(c[1], 1);
        assert!(schedule.len() as u64 <= MIN_SCHEDULE_CAP + 2);
        assert_eq!(c[0] + c[1], schedule.len() as u64);

        // Proportions survive scaling to within about one entry in the cap.
        let weights = [1_000_000_000, 300_000_000, 7, u32::MAX];
        let schedule = smooth_schedule(&metas(&weights));
        assert!(schedule.len() as u64 <= MIN_SCHEDULE_CAP + 4);
        let c = counts(&schedule, 4);
        let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
        for (i, &w) in weights.iter().enumerate() {
            let share = c[i] as f64 / schedule.len() as f64;
            assert!((share - f64::from(w) / total).abs() < 1e-4, "{c:?}");
            assert!(c[i] >= 1);
        }
    }

    #[test]
    fn all_zero_or_no_endpoints_give_none() {
        let wrr = WeightedRoundRobin::new();
        for weights in [&[][..], &[0, 0, 0][..]] {
            let metas = metas(weights);
            let services = vec![(); metas.len()];
            let table = wrr.prepare(&metas);
            assert!(table.is_empty());
            let endpoints = Candidates::new(&metas, &services);
            assert_eq!(Pick::<(), ()>::pick(&wrr, &table, &endpoints, &()), None);
        }
    }

    #[test]
    fn zero_weight_is_never_picked() {
        let wrr = WeightedRoundRobin::new();
        let metas = metas(&[0, 3, 0, 1]);
        let table = wrr.prepare(&metas);
        let endpoints = Candidates::new(&metas, &[(); 4]);
        for _ in 0..100 {
            let i = Pick::<(), ()>::pick(&wrr, &table, &endpoints, &()).unwrap();
            assert!(i == 1 || i == 3);
        }
    }

    #[test]
    fn exclusions_are_honoured() {
        let wrr = WeightedRoundRobin::new();
        let metas = metas(&[5, 1, 1]);
        let table = wrr.prepare(&metas);
        let services = [(); 3];
        let excluded = [0];
        let endpoints = Candidates::new(&metas, &services).excluding(&excluded);
        let mut c = [0; 3];
        for _ in 0..70 {
            c[Pick::<(), ()>::pick(&wrr, &table, &endpoints, &()).unwrap()] += 1;
        }
        assert_eq!(c[0], 0);
        assert!(c[1] > 0 && c[2] > 0);
        let all = [0, 1, 2];
        let none = Candidates::new(&metas, &services).excluding(&all);
        assert_eq!(Pick::<(), ()>::pick(&wrr, &table, &none, &()), None);
    }

    #[test]
    fn an_unavailable_endpoints_turns_follow_the_weights_of_the_others() {
        let wrr = WeightedRoundRobin::new();
        // a b c d with weights 2 2 1 1, c down: a b d share its turns 2:2:1.
        let metas = metas(&[2, 2, 1, 1]);
        let table = wrr.prepare(&metas);
        let up = [true, true, false, true];
        let endpoints = Candidates::new(&metas, &up).with_availability(|up: &bool| *up);
        let mut c = [0; 4];
        for _ in 0..6000 {
            c[Pick::<(), bool>::pick(&wrr, &table, &endpoints, &()).unwrap()] += 1;
        }
        assert_eq!(c[2], 0);
        assert_eq!(c[0], c[1], "{c:?}");
        assert!((c[0] as i64 - 2 * c[3] as i64).abs() <= 6, "{c:?}");
    }

    #[test]
    fn long_excluded_runs_fall_back_to_a_scan() {
        let wrr = WeightedRoundRobin::new();
        let metas = metas(&[10_000, 1]);
        let table = wrr.prepare(&metas);
        let services = [(); 2];
        let excluded = [0];
        let endpoints = Candidates::new(&metas, &services).excluding(&excluded);
        for _ in 0..1000 {
            assert_eq!(Pick::<(), ()>::pick(&wrr, &table, &endpoints, &()), Some(1));
        }
    }

    #[test]
    fn stale_tables_never_return_a_missing_endpoint() {
        let wrr = WeightedRoundRobin::new();
        let table = wrr.prepare(&metas(&[1, 1, 1, 1]));
        let metas = metas(&[1]);
        let endpoints = Candidates::new(&metas, &[()]);
        for _ in 0..8 {
            assert_eq!(Pick::<(), ()>::pick(&wrr, &table, &endpoints, &()), Some(0));
        }
    }
}
