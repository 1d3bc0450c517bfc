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
mod tests;
