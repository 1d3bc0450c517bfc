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
mod tests;
