//! Power of two choices over any load metric, with a memory of the last
//! winner.

use std::sync::atomic::{AtomicUsize, Ordering};

use tower::load::Load;

use super::{Candidates, EndpointInfo, Pick, Prepare};
use crate::util::Rng;
use crate::util::{reduce, LocalRng};

/// Weighted samples tried before a pick with exclusions falls back to a scan,
/// and before the second candidate is drawn uniformly from the others.
const RESAMPLES: usize = 4;

/// Power of two choices with memory: sample two endpoints, and send the
/// request to the least loaded of them and the previous pick's winner.
///
/// Load is whatever the endpoint services report through
/// [`tower::load::Load`] (requests in flight, a Peak-EWMA cost). Comparing
/// random endpoints avoids both the herd behaviour of always choosing the
/// global minimum from stale numbers and the O(n) cost of finding it.
///
/// The remembered winner is what keeps the tail short on a fleet whose
/// endpoints differ widely in speed. Plain power of two choices sends an
/// endpoint a share of the traffic set by how often it is sampled: when two
/// slow endpoints are drawn together one of them gets the request, however
/// loaded both are. Carrying the last winner forward makes every pick also
/// beat the best endpoint seen lately, so slow endpoints take a request only
/// when they are less loaded than that one, close to what least connections
/// does at O(n). (This is the "power of d choices with memory" of Shah and
/// Prabhakar.) The memory is a hint, one relaxed atomic word: picks racing
/// on other threads may overwrite each other's, and after the endpoint set
/// changes it may name another endpoint for a while; either way it is only
/// a third candidate, checked like the others.
///
/// # Cost
///
/// * **pick**: O(1): two weighted samples (a few random draws, from one
///   atomic step of the picker's generator), three `load()` calls, and a
///   relaxed store when the winner changes. With exclusions, a few more
///   samples and, if those all hit excluded endpoints, an O(n) scan.
/// * **prepare**: O(n): a Vose alias table over the weights, or a plain list
///   when all weights are equal.
///
/// # Weights
///
/// Candidates are sampled in proportion to weight, so with equal loads an
/// endpoint's share follows its weight; the load comparison then moves
/// traffic towards whichever candidate is less busy. Weight 0 is never
/// picked. The two candidates are distinct: the second is resampled a few
/// times if it repeats the first (which happens often when one weight
/// dominates) and then drawn uniformly from the others, so the dominant
/// endpoint is still compared with someone. On equal or incomparable loads the
/// first sample wins, and the remembered winner takes the request only when
/// its load is strictly lower, so on an idle or evenly loaded fleet picks
/// follow the weights.
///
/// # No endpoints, exclusions
///
/// With no endpoint of non-zero weight, `pick` returns `None`; with one, that
/// one. Excluded endpoints are never returned: a sample that hits one is
/// drawn again a few times, then the endpoints are scanned from a random
/// start for an allowed one; a remembered winner that is excluded, drained
/// (weight 0) or unavailable is passed over.
///
/// # Example
///
/// ```
/// use tower_lb::pick::{Candidates, EndpointInfo, Pick, Prepare, P2c};
///
/// struct Fixed(u32);
/// impl tower::load::Load for Fixed {
///     type Metric = u32;
///     fn load(&self) -> u32 {
///         self.0
///     }
/// }
///
/// let p2c = P2c::with_seed(42);
/// let metas = [EndpointInfo::new(1, 1), EndpointInfo::new(2, 1)];
/// let services = [Fixed(10), Fixed(0)];
/// let table = p2c.prepare(&metas);
/// let endpoints = Candidates::new(&metas, &services);
/// // Two endpoints: both are always the candidates, the idle one wins.
/// assert_eq!(p2c.pick(&table, &endpoints, &()), Some(1));
/// ```
#[derive(Debug)]
pub struct P2c {
    rng: Rng,
    /// The endpoint indices of the last two distinct winners, the latest
    /// first; `NONE` before there were any.
    memory: [AtomicUsize; 2],
}

/// No remembered winner.
const NONE: usize = usize::MAX;

impl P2c {
    /// A picker whose samples come from a generator seeded from entropy.
    #[must_use]
    pub fn new() -> Self {
        Self::with_rng(Rng::from_entropy())
    }

    /// A picker whose samples follow from `seed`, for reproducible tests.
    #[must_use]
    pub fn with_seed(seed: u64) -> Self {
        Self::with_rng(Rng::from_seed(seed))
    }

    fn with_rng(rng: Rng) -> Self {
        Self {
            rng,
            memory: [AtomicUsize::new(NONE), AtomicUsize::new(NONE)],
        }
    }
}

impl Default for P2c {
    fn default() -> Self {
        Self::new()
    }
}

/// The endpoints [`P2c`] may pick and how to sample them by weight.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct P2cTable {
    /// Endpoint indices of non-zero weight; samples are positions in it.
    eligible: Box<[usize]>,
    /// Per position: keep it when a draw's fraction is below `keep`, else take
    /// `alias`. `None` when all weights are equal and sampling is uniform.
    alias: Option<Box<[Column]>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Column {
    keep: u64,
    alias: usize,
}

impl P2cTable {
    /// How many endpoints may be picked.
    pub fn len(&self) -> usize {
        self.eligible.len()
    }

    /// Whether no endpoint may be picked.
    pub fn is_empty(&self) -> bool {
        self.eligible.is_empty()
    }

    /// A position in `eligible`, drawn in proportion to weight.
    fn sample(&self, rng: &mut LocalRng) -> usize {
        let n = self.eligible.len();
        let draw = u128::from(rng.next_u64()) * n as u128;
        // The high half picks a column uniformly, the low half is a uniform
        // fraction within it.
        let column = (draw >> 64) as usize;
        match &self.alias {
            None => column,
            Some(columns) => {
                let c = columns[column];
                if (draw as u64) < c.keep {
                    column
                } else {
                    c.alias
                }
            }
        }
    }
}

impl Prepare for P2c {
    type Table = P2cTable;

    fn prepare(&self, endpoints: &[EndpointInfo]) -> P2cTable {
        let (eligible, weights): (Vec<usize>, Vec<u64>) = endpoints
            .iter()
            .take(u32::MAX as usize)
            .enumerate()
            .filter(|(_, meta)| meta.weight() > 0)
            .map(|(i, meta)| (i, u64::from(meta.weight())))
            .unzip();
        let uniform = weights.windows(2).all(|pair| pair[0] == pair[1]);
        P2cTable {
            eligible: eligible.into_boxed_slice(),
            alias: (!uniform).then(|| alias_table(&weights)),
        }
    }
}

/// Vose's alias method in exact integers: column `i` holds `weights[i] × n`
/// parts of a capacity of `total` parts; an underfull column is topped up
/// from an overfull one, which becomes its alias.
fn alias_table(weights: &[u64]) -> Box<[Column]> {
    let n = weights.len() as u128;
    let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    let mut parts: Vec<u128> = weights.iter().map(|&w| u128::from(w) * n).collect();
    let mut columns: Vec<Column> = (0..weights.len())
        .map(|i| Column {
            keep: u64::MAX,
            alias: i,
        })
        .collect();
    let (mut small, mut large): (Vec<usize>, Vec<usize>) =
        (0..weights.len()).partition(|&i| parts[i] < total);
    while let (Some(&s), Some(&l)) = (small.last(), large.last()) {
        small.pop();
        // parts[s] < total < 2^32 × n, so the shifted value fits in u128
        // for any n below 2^32 and the quotient is below 2^64.
        columns[s] = Column {
            keep: ((parts[s] << 64) / total) as u64,
            alias: l,
        };
        parts[l] -= total - parts[s];
        if parts[l] < total {
            large.pop();
            small.push(l);
        }
    }
    // Whatever is left is full up to rounding: it keeps every draw, as its
    // initial column says.
    columns.into_boxed_slice()
}

impl<Req, S> Pick<Req, S> for P2c
where
    S: Load,
{
    fn pick(&self, table: &P2cTable, endpoints: &Candidates<'_, S>, _req: &Req) -> Option<usize> {
        let n = table.eligible.len();
        if n == 0 {
            return None;
        }
        // One step of the shared generator a pick, however many draws it
        // takes.
        let mut rng = self.rng.local();
        let first = candidate(table, endpoints, &mut rng, None)?;
        if n == 1 {
            return Some(table.eligible[first]);
        }
        let Some(second) = candidate(table, endpoints, &mut rng, Some(first)) else {
            return Some(table.eligible[first]);
        };
        let (a, b) = (table.eligible[first], table.eligible[second]);
        let services = endpoints.services();
        let (winner, load) = match (services.get(a), services.get(b)) {
            (Some(sa), Some(sb)) => {
                let (la, lb) = (sa.load(), sb.load());
                if lb < la {
                    (b, lb)
                } else {
                    (a, la)
                }
            }
            (Some(sa), None) => (a, sa.load()),
            (None, Some(sb)) => (b, sb.load()),
            (None, None) => return None,
        };
        // The last two distinct winners, checked like the samples; a tie
        // goes to the sample, so that picks on an even fleet follow weight.
        let remembered = [
            self.memory[0].load(Ordering::Relaxed),
            self.memory[1].load(Ordering::Relaxed),
        ];
        let (mut winner, mut load) = (winner, load);
        for m in remembered {
            if m == a || m == b || m == winner || !endpoints.is_allowed(m) {
                continue;
            }
            if let Some(lm) = services.get(m).map(Load::load) {
                if lm < load {
                    (winner, load) = (m, lm);
                }
            }
        }
        if winner != remembered[0] {
            self.memory[1].store(remembered[0], Ordering::Relaxed);
            self.memory[0].store(winner, Ordering::Relaxed);
        }
        Some(winner)
    }
}

/// A position in the table whose endpoint is allowed and is not `other`:
/// weighted samples first, then (for the second candidate) a uniform draw
/// among the others, then a scan from a random start.
fn candidate<S>(
    table: &P2cTable,
    endpoints: &Candidates<'_, S>,
    rng: &mut LocalRng,
    other: Option<usize>,
) -> Option<usize> {
    let n = table.eligible.len();
    let usable = |p: usize| Some(p) != other && endpoints.is_allowed(table.eligible[p]);
    for _ in 0..RESAMPLES {
        let p = table.sample(rng);
        if usable(p) {
            return Some(p);
        }
    }
    if let Some(o) = other {
        // n ≥ 2 here: any position but `o`, uniformly.
        let p = (o + 1 + rng.below(n - 1)) % n;
        if usable(p) {
            return Some(p);
        }
    }
    let start = reduce(rng.next_u64(), n);
    (0..n).map(|k| (start + k) % n).find(|&p| usable(p))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::pick::testing::{idle, metas, Counted};

    #[test]
    fn chooses_the_less_loaded_of_two() {
        let p2c = P2c::with_seed(1);
        let metas = metas(&[1, 1]);
        let services = [Counted::new(4), Counted::new(3)];
        let table = p2c.prepare(&metas);
        let endpoints = Candidates::new(&metas, &services);
        for _ in 0..100 {
            assert_eq!(p2c.pick(&table, &endpoints, &()), Some(1));
        }
    }

    #[test]
    fn never_picks_the_most_loaded_of_many() {
        let p2c = P2c::with_seed(2);
        let metas = metas(&[1; 8]);
        let services: Vec<Counted> = (0..8).map(Counted::new).collect();
        let table = p2c.prepare(&metas);
        let endpoints = Candidates::new(&metas, &services);
        let mut c = [0; 8];
        for _ in 0..8000 {
            c[p2c.pick(&table, &endpoints, &()).unwrap()] += 1;
        }
        assert_eq!(c[7], 0);
        // Once sampled, endpoint 0 is remembered and wins every pick after.
        assert!(c[0] > 7900, "{c:?}");
    }

    #[test]
    fn the_remembered_winner_competes_with_the_samples() {
        // Requests that never finish: the memory carries the least loaded
        // endpoint forward, so loads stay as even as least connections
        // keeps them, where plain sampling lets them drift apart.
        let p2c = P2c::with_seed(9);
        let metas = metas(&[1; 16]);
        let services = idle(16);
        let table = p2c.prepare(&metas);
        let endpoints = Candidates::new(&metas, &services);
        for _ in 0..1600 {
            let i = p2c.pick(&table, &endpoints, &()).unwrap();
            services[i].0.fetch_add(1, Ordering::Relaxed);
        }
        let loads: Vec<u32> = services.iter().map(Counted::get).collect();
        let (low, high) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
        assert!(high - low <= 2, "{loads:?}");
    }

    #[test]
    fn a_remembered_winner_that_may_not_be_used_is_passed_over() {
        let p2c = P2c::with_seed(10);
        let metas = metas(&[1, 1, 1, 1]);
        let services = [
            Counted::new(0),
            Counted::new(5),
            Counted::new(5),
            Counted::new(5),
        ];
        let table = p2c.prepare(&metas);
        let endpoints = Candidates::new(&metas, &services);
        while p2c.pick(&table, &endpoints, &()) != Some(0) {}
        // Endpoint 0 is remembered; excluded, unavailable or drained, it
        // must not come back through the memory.
        let excluded = [metas[0].key_hash()];
        let retry = Candidates::new(&metas, &services).excluding(&excluded);
        let gated = Candidates::new(&metas, &services).with_availability(|s: &Counted| s.get() > 0);
        let drained = super::super::testing::metas(&[0, 1, 1, 1]);
        let drained_table = p2c.prepare(&drained);
        let drained = Candidates::new(&drained, &services);
        for _ in 0..200 {
            assert_ne!(p2c.pick(&table, &retry, &()), Some(0));
            assert_ne!(p2c.pick(&table, &gated, &()), Some(0));
            assert_ne!(p2c.pick(&drained_table, &drained, &()), Some(0));
        }
        // A memory from a larger set names no endpoint of a smaller one.
        let small = super::super::testing::metas(&[1]);
        let small_table = p2c.prepare(&small);
        let one = [Counted::new(9)];
        p2c.memory[0].store(3, Ordering::Relaxed);
        assert_eq!(
            p2c.pick(&small_table, &Candidates::new(&small, &one), &()),
            Some(0)
        );
    }

    #[test]
    fn samples_in_proportion_to_weight() {
        let p2c = P2c::with_seed(3);
        let weights = [1, 2, 3, 4];
        let metas = metas(&weights);
        let table = p2c.prepare(&metas);
        let mut c = [0usize; 4];
        let mut rng = p2c.rng.local();
        for _ in 0..100_000 {
            c[table.eligible[table.sample(&mut rng)]] += 1;
        }
        for (i, &w) in weights.iter().enumerate() {
            let expected = 10_000.0 * f64::from(w);
            assert!((c[i] as f64 - expected).abs() < 0.05 * expected, "{c:?}");
        }
    }

    #[test]
    fn equal_loads_follow_weights() {
        // With equal loads the first sample wins, so picks follow weight.
        let p2c = P2c::with_seed(4);
        let metas = metas(&[1, 3]);
        let services = idle(2);
        let table = p2c.prepare(&metas);
        let endpoints = Candidates::new(&metas, &services);
        let mut c = [0usize; 2];
        for _ in 0..40_000 {
            c[p2c.pick(&table, &endpoints, &()).unwrap()] += 1;
        }
        assert!((9_000..11_000).contains(&c[0]), "{c:?}");
    }

    #[test]
    fn alias_table_is_exact() {
        // Column probabilities add back up to each weight's share.
        let weights = [1u64, 7, 0xffff_ffff, 3, 3];
        let columns = alias_table(&weights);
        let n = weights.len() as f64;
        let total: f64 = weights.iter().map(|&w| w as f64).sum();
        let mut mass = vec![0f64; weights.len()];
        for (i, c) in columns.iter().enumerate() {
            let keep = c.keep as f64 / 2f64.powi(64);
            mass[i] += keep / n;
            mass[c.alias] += (1.0 - keep) / n;
        }
        for (i, &w) in weights.iter().enumerate() {
            assert!((mass[i] - w as f64 / total).abs() < 1e-12, "{mass:?}");
        }
    }

    #[test]
    fn dominant_weight_is_still_compared() {
        let p2c = P2c::with_seed(5);
        let metas = metas(&[u32::MAX, 1]);
        let services = [Counted::new(10), Counted::new(0)];
        let table = p2c.prepare(&metas);
        let endpoints = Candidates::new(&metas, &services);
        assert_eq!(p2c.pick(&table, &endpoints, &()), Some(1));
        services[1].0.store(10, Ordering::Relaxed);
        assert_eq!(p2c.pick(&table, &endpoints, &()), Some(0));
    }

    #[test]
    fn one_or_no_endpoints() {
        let p2c = P2c::with_seed(6);
        let metas1 = metas(&[0, 5, 0]);
        let services = idle(3);
        let table = p2c.prepare(&metas1);
        let endpoints = Candidates::new(&metas1, &services);
        assert_eq!(p2c.pick(&table, &endpoints, &()), Some(1));
        let excluded = [1];
        let endpoints = Candidates::new(&metas1, &services).excluding(&excluded);
        assert_eq!(p2c.pick(&table, &endpoints, &()), None);
        let metas0 = metas(&[0, 0, 0]);
        let table = p2c.prepare(&metas0);
        assert_eq!(
            p2c.pick(&table, &Candidates::new(&metas0, &services), &()),
            None
        );
    }

    #[test]
    fn exclusions_are_honoured() {
        let p2c = P2c::with_seed(7);
        let metas = metas(&[1, 100, 1, 1, 1000]);
        let services = [
            Counted::new(5),
            Counted::new(0),
            Counted::new(1),
            Counted::new(2),
            Counted::new(0),
        ];
        let table = p2c.prepare(&metas);
        let excluded = [1, 4];
        let endpoints = Candidates::new(&metas, &services).excluding(&excluded);
        let mut c = [0; 5];
        for _ in 0..3000 {
            c[p2c.pick(&table, &endpoints, &()).unwrap()] += 1;
        }
        assert_eq!((c[1], c[4]), (0, 0));
        // The least loaded allowed endpoint, once sampled, is remembered.
        assert!(c[2] > 2900, "{c:?}");
        let only = [0, 1, 2, 4];
        let endpoints = Candidates::new(&metas, &services).excluding(&only);
        for _ in 0..100 {
            assert_eq!(p2c.pick(&table, &endpoints, &()), Some(3));
        }
    }

    #[test]
    fn thousands_of_endpoints() {
        let p2c = P2c::with_seed(8);
        let weights: Vec<u32> = (0..5000u32).map(|i| i % 7).collect();
        let metas = metas(&weights);
        let services = idle(5000);
        let table = p2c.prepare(&metas);
        let endpoints = Candidates::new(&metas, &services);
        for _ in 0..1000 {
            let i = p2c.pick(&table, &endpoints, &()).unwrap();
            assert!(weights[i] > 0);
        }
    }
}
