//! Consistent hashing with bounded loads.

use std::error::Error;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tower::load::Load;

use super::ring::{HashRing, WALK};
use super::ConsistentHash;
use crate::pick::fallback::WeightedIndices;
use crate::pick::{key::HashKey, Candidates, EndpointInfo, Pick, Prepare};
use crate::util::mix64;

/// Consistent hashing with bounded loads (Mirrokni, Thorup and
/// Zadimoghaddam, "Consistent Hashing with Bounded Loads", 2017): a key goes
/// to its endpoint on the ring unless that endpoint is already above
/// `factor` × its fair share of the load, in which case it goes on clockwise
/// to the first endpoint that is not.
///
/// A popular key (one tenant, one model, one hot cache line) then spills
/// over to the next endpoints along the ring instead of swamping its own,
/// and everything [`ConsistentHash`] promises still holds for keys whose
/// endpoint has room. Made with [`ConsistentHash::bounded_load`].
///
/// Load is whatever the endpoint services report through
/// [`tower::load::Load`]; the bound is meant for requests in flight
/// ([`InFlight`](crate::load::InFlight)), where the `+ 1` below is the
/// request being placed.
///
/// # The bound
///
/// Let `L` be the total load of the endpoints allowed for this request and
/// `W` the sum of their weights. Endpoint `i` (weight `wᵢ`, load `lᵢ`) takes
/// the request only if `lᵢ + 1 ≤ ⌈factor × (L + 1) × wᵢ / W⌉`. Up to 16
/// endpoints `L` and `W` are exact; beyond, see *Cost*. With equal
/// weights that is the paper's `⌈c × mean⌉` after placing the request; since
/// the capacities add up to more than `L + 1`, some endpoint always
/// qualifies. If the walk meets none (loads moved under it, or 256 points
/// passed), the least loaded allowed endpoint for its weight is taken. A
/// load that is not a finite number counts as infinitely busy and is left
/// out of `L` and `W`; a negative load counts as 0.
///
/// # Cost
///
/// * **pick**: O(1) beyond 16 endpoints, O(n) up to 16: the ring is
///   searched as by [`ConsistentHash`] and walked, usually over a point or
///   two, after the load per unit of weight `L ÷ W` is known. Up to 16
///   endpoints every allowed endpoint's load is read for it. Beyond, every
///   fourth pick reads the next 4 endpoints of a cursor that sweeps the set
///   and folds their load per weight into a running mean shared by all
///   picks (each window weighs 1/32), so the bound uses a mean over about
///   the last 128 endpoints read, some hundred picks old: an approximation
///   of `L ÷ W` whose error shrinks as loads grow, and which follows the
///   set's total load within a few hundred picks. The fallback "least loaded
///   endpoint" is then the least loaded of the window (if read) and the
///   endpoints walked.
/// * **prepare**: the same ring as [`ConsistentHash`].
///
/// # Weights, no endpoints, missing key, exclusions
///
/// Points on the ring and capacities both follow weights; weight 0 is never
/// picked. With no allowed endpoint, `pick` returns `None`. A request
/// without a key takes the round-robin endpoint if it is within its bound,
/// else the least loaded one. Excluded endpoints are passed over by the
/// walk and count neither in `L` nor in `W`.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use tower_lb::pick::{ConsistentHash, Candidates, EndpointInfo, Pick, Prepare};
///
/// // A stand-in for an endpoint service that counts its requests in flight.
/// struct Counted(Arc<AtomicU32>);
/// impl tower::load::Load for Counted {
///     type Metric = u32;
///     fn load(&self) -> u32 {
///         self.0.load(Ordering::Relaxed)
///     }
/// }
///
/// let picker = ConsistentHash::new(|user: &u64| Some(*user)).bounded_load(1.25)?;
/// let metas = [EndpointInfo::new(1, 1), EndpointInfo::new(2, 1), EndpointInfo::new(3, 1)];
/// let counts: Vec<_> = (0..3).map(|_| Arc::new(AtomicU32::new(0))).collect();
/// let services: Vec<_> = counts.iter().map(|c| Counted(c.clone())).collect();
/// let ring = picker.prepare(&metas);
/// let endpoints = Candidates::new(&metas, &services);
///
/// // Thirty requests of one user, none finishing: the user's endpoint takes
/// // its share and the rest spill over.
/// for _ in 0..30 {
///     let i = picker.pick(&ring, &endpoints, &42).unwrap();
///     counts[i].fetch_add(1, Ordering::Relaxed);
/// }
/// for count in &counts {
///     assert!(count.load(Ordering::Relaxed) <= 13); // ⌈1.25 × 30 / 3⌉
/// }
/// assert!(ConsistentHash::new(|user: &u64| Some(*user)).bounded_load(1.0).is_err());
/// # Ok::<(), tower_lb::pick::InvalidBound>(())
/// ```
pub struct BoundedConsistentHash<E> {
    ring: ConsistentHash<E>,
    factor: f64,
    /// Where the next census window starts, in member positions.
    cursor: AtomicUsize,
    /// The running mean load per unit of weight (`f64` bits); `NO_MEAN`
    /// before the first window.
    mean: AtomicU64,
}

/// Up to this many members, the census is exact.
const EXACT: usize = 16;
/// WeightedIndices read by every [`EVERY`]-th pick beyond [`EXACT`].
const WINDOW: usize = 4;
/// Beyond [`EXACT`], one pick in this many reads a window.
const EVERY: usize = 4;
/// The weight of one window in the running mean.
const SMOOTHING: f64 = 1.0 / 32.0;
/// No mean yet: the first window sets it outright.
const NO_MEAN: u64 = u64::MAX;

impl<E> fmt::Debug for BoundedConsistentHash<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedConsistentHash")
            .field("key", &std::any::type_name::<E>())
            .field("virtual_nodes", &self.ring.virtual_nodes)
            .field("factor", &self.factor)
            .finish()
    }
}

impl<E> BoundedConsistentHash<E> {
    pub(super) fn new(ring: ConsistentHash<E>, factor: f64) -> Result<Self, InvalidBound> {
        if factor.is_finite() && factor > 1.0 {
            Ok(Self {
                ring,
                factor,
                cursor: AtomicUsize::new(0),
                mean: AtomicU64::new(NO_MEAN),
            })
        } else {
            Err(InvalidBound { factor })
        }
    }

    /// How far above its fair share an endpoint's load may go.
    pub fn factor(&self) -> f64 {
        self.factor
    }

    /// The key extractor.
    pub fn key(&self) -> &E {
        &self.ring.key
    }

    /// The points on the ring per unit of weight.
    pub fn points_per_weight(&self) -> u32 {
        self.ring.virtual_nodes
    }
}

impl<E: Send + Sync + 'static> Prepare for BoundedConsistentHash<E> {
    type Table = HashRing;

    fn prepare(&self, endpoints: &[EndpointInfo]) -> HashRing {
        self.ring.prepare(endpoints)
    }
}

impl<Req, S, E> Pick<Req, S> for BoundedConsistentHash<E>
where
    E: HashKey<Req>,
    S: Load,
    S::Metric: Into<f64>,
{
    fn pick(&self, ring: &HashRing, endpoints: &Candidates<'_, S>, req: &Req) -> Option<usize> {
        if ring.is_empty() {
            return None;
        }
        let members = ring.members();
        let census = if members.len() <= EXACT {
            Census::take(members.iter(), endpoints)
        } else {
            self.sampled_census(members, endpoints)
        };
        // With no allowed endpoint in an exact census there is none at all;
        // a window may have missed them, so the walk still runs.
        let mut least = census.least.map(|i| (i, census.least_ratio));
        if least.is_none() && members.len() <= EXACT {
            return None;
        }
        let fits = |i: usize, load: f64| {
            let weight = f64::from(endpoints.metas()[i].weight());
            let capacity = (self.factor * (census.load + 1.0) * weight / census.weight).ceil();
            load.is_finite() && load + 1.0 <= capacity
        };
        let Some(hash) = self.ring.key.hash_key(req) else {
            let turn = members.round_robin(&self.ring.next, endpoints)?;
            let load = load_of(endpoints, turn);
            return Some(match least {
                Some((i, _)) if !fits(turn, load) => i,
                _ => turn,
            });
        };
        let mut at = ring.successor(mix64(hash));
        let mut last = usize::MAX;
        for _ in 0..ring.len().min(WALK) {
            let i = ring.owner(at);
            // Consecutive points of one endpoint need not be read twice.
            if i != last && endpoints.is_allowed(i) {
                let load = load_of(endpoints, i);
                if fits(i, load) {
                    return Some(i);
                }
                let ratio = load / f64::from(endpoints.metas()[i].weight());
                if least.is_none_or(|(_, low)| ratio < low) {
                    least = Some((i, ratio));
                }
            }
            last = i;
            at = ring.next(at);
        }
        match least {
            Some((i, _)) => Some(i),
            None => members.first_allowed_after(0, endpoints),
        }
    }
}

impl<E> BoundedConsistentHash<E> {
    /// The next window of members, folded into the running mean; its `L`
    /// and `W` are that mean per unit of weight, scaled to the whole set.
    fn sampled_census<S>(&self, members: &WeightedIndices, endpoints: &Candidates<'_, S>) -> Census
    where
        S: Load,
        S::Metric: Into<f64>,
    {
        let turn = self.cursor.fetch_add(1, Ordering::Relaxed);
        let previous = self.mean.load(Ordering::Relaxed);
        let mut mean = f64::from_bits(previous);
        // The bound needs only `L ÷ W`; `W` (here the member count) matters
        // only in the `+ 1` of the request being placed, a share of one
        // request spread over the whole set.
        let weight = members.len() as f64;
        if !turn.is_multiple_of(EVERY) && previous != NO_MEAN {
            return Census {
                load: mean * weight,
                weight,
                least: None,
                least_ratio: f64::INFINITY,
            };
        }
        let window = members.window(turn / EVERY * WINDOW, WINDOW);
        let sample = Census::take(window, endpoints);
        if sample.weight > 0.0 {
            let observed = sample.load / sample.weight;
            mean = if previous == NO_MEAN {
                observed
            } else {
                mean + (observed - mean) * SMOOTHING
            };
            // A racing pick may overwrite this update: the mean loses one
            // window's share, which is harmless.
            self.mean.store(mean.to_bits(), Ordering::Relaxed);
        }
        if previous == NO_MEAN && sample.weight == 0.0 {
            mean = 0.0;
        }
        Census {
            load: mean * weight,
            weight,
            least: sample.least,
            least_ratio: sample.least_ratio,
        }
    }
}

/// One pass over the allowed endpoints: their total load and weight, and
/// the least loaded for its weight.
struct Census {
    load: f64,
    weight: f64,
    least: Option<usize>,
    least_ratio: f64,
}

impl Census {
    fn take<S>(members: impl Iterator<Item = usize>, endpoints: &Candidates<'_, S>) -> Self
    where
        S: Load,
        S::Metric: Into<f64>,
    {
        let mut census = Census {
            load: 0.0,
            weight: 0.0,
            least: None,
            least_ratio: f64::INFINITY,
        };
        for i in members {
            if !endpoints.is_allowed(i) {
                continue;
            }
            let load = load_of(endpoints, i);
            let weight = f64::from(endpoints.metas()[i].weight());
            if load.is_finite() {
                census.load += load;
                census.weight += weight;
            }
            let ratio = load / weight;
            if census.least.is_none() || ratio < census.least_ratio {
                census.least = Some(i);
                census.least_ratio = ratio;
            }
        }
        census
    }
}

/// Endpoint `i`'s load; infinite if it is not a number or `i` has no
/// service, never negative.
fn load_of<S>(endpoints: &Candidates<'_, S>, i: usize) -> f64
where
    S: Load,
    S::Metric: Into<f64>,
{
    match endpoints.services().get(i) {
        Some(service) => {
            let load: f64 = service.load().into();
            if load.is_nan() {
                f64::INFINITY
            } else {
                load.max(0.0)
            }
        }
        None => f64::INFINITY,
    }
}

/// A bounded-load factor that is not a finite number above 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InvalidBound {
    factor: f64,
}

impl InvalidBound {
    /// The factor that was refused.
    pub fn factor(&self) -> f64 {
        self.factor
    }
}

impl fmt::Display for InvalidBound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid load bound {}: the factor must be a finite number above 1",
            self.factor
        )
    }
}

impl Error for InvalidBound {}

#[cfg(test)]
mod tests;
