//! Consistent hashing with bounded loads.

use std::error::Error;
use std::fmt;

use tower::load::Load;

use super::ring::{HashRing, WALK};
use super::ConsistentHash;
use crate::pick::members::Members;
use crate::pick::{Endpoints, HashKey, Meta, Pick, Prepare};
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
/// the request only if `lᵢ + 1 ≤ ⌈factor × (L + 1) × wᵢ / W⌉`. With equal
/// weights that is the paper's `⌈c × mean⌉` after placing the request; since
/// the capacities add up to more than `L + 1`, some endpoint always
/// qualifies. If the walk meets none (loads moved under it, or 256 points
/// passed), the least loaded allowed endpoint for its weight is taken. A
/// load that is not a finite number counts as infinitely busy and is left
/// out of `L` and `W`; a negative load counts as 0.
///
/// # Cost
///
/// * **pick**: O(n): every allowed endpoint's load is read once to get `L`,
///   then the ring is searched as by [`ConsistentHash`] and walked, usually
///   over a point or two. The sum dominates: each `load()` call is typically
///   a cache miss on the endpoint's counter, so with thousands of endpoints
///   a pick costs microseconds rather than the tens of nanoseconds of the
///   plain ring. For large sets, weigh that against the skew the bound
///   prevents; plain [`ConsistentHash`] and [`Maglev`](crate::pick::Maglev)
///   stay O(1).
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
/// use tower_lb::pick::{ConsistentHash, Endpoints, Meta, Pick, Prepare};
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
/// let metas = [Meta::new(1, 1), Meta::new(2, 1), Meta::new(3, 1)];
/// let counts: Vec<_> = (0..3).map(|_| Arc::new(AtomicU32::new(0))).collect();
/// let services: Vec<_> = counts.iter().map(|c| Counted(c.clone())).collect();
/// let ring = picker.prepare(&metas);
/// let endpoints = Endpoints::new(&metas, &services);
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
}

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
            Ok(Self { ring, factor })
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

    fn prepare(&self, endpoints: &[Meta]) -> HashRing {
        self.ring.prepare(endpoints)
    }
}

impl<Req, S, E> Pick<Req, S> for BoundedConsistentHash<E>
where
    E: HashKey<Req>,
    S: Load,
    S::Metric: Into<f64>,
{
    fn pick(&self, ring: &HashRing, endpoints: &Endpoints<'_, S>, req: &Req) -> Option<usize> {
        if ring.is_empty() {
            return None;
        }
        let census = Census::take(ring.members(), endpoints);
        let least = census.least?;
        let fits = |i: usize| {
            let load = load_of(endpoints, i);
            let weight = f64::from(endpoints.metas()[i].weight());
            let capacity = (self.factor * (census.load + 1.0) * weight / census.weight).ceil();
            load.is_finite() && load + 1.0 <= capacity
        };
        let Some(hash) = self.ring.key.hash_key(req) else {
            let turn = ring.members().round_robin(&self.ring.next, endpoints)?;
            return Some(if fits(turn) { turn } else { least });
        };
        let mut at = ring.successor(mix64(hash));
        let mut last = usize::MAX;
        for _ in 0..ring.len().min(WALK) {
            let i = ring.owner(at);
            // Consecutive points of one endpoint need not be read twice.
            if i != last && endpoints.is_allowed(i) && fits(i) {
                return Some(i);
            }
            last = i;
            at = ring.next(at);
        }
        Some(least)
    }
}

/// One pass over the allowed endpoints: their total load and weight, and
/// the least loaded for its weight.
struct Census {
    load: f64,
    weight: f64,
    least: Option<usize>,
}

impl Census {
    fn take<S>(members: &Members, endpoints: &Endpoints<'_, S>) -> Self
    where
        S: Load,
        S::Metric: Into<f64>,
    {
        let mut census = Census {
            load: 0.0,
            weight: 0.0,
            least: None,
        };
        let mut least_ratio = f64::INFINITY;
        for i in members.iter() {
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
            if census.least.is_none() || ratio < least_ratio {
                census.least = Some(i);
                least_ratio = ratio;
            }
        }
        census
    }
}

/// Endpoint `i`'s load; infinite if it is not a number or `i` has no
/// service, never negative.
fn load_of<S>(endpoints: &Endpoints<'_, S>, i: usize) -> f64
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
