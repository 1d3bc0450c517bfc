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
mod tests {
    use std::collections::VecDeque;
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::pick::testing::{addr_metas as metas, idle, key_hashes, Counted, Fixed};
    use crate::util::Rng;

    fn plain() -> ConsistentHash<impl Fn(&u64) -> Option<u64>> {
        ConsistentHash::new(|key: &u64| Some(*key))
    }

    fn bounded(factor: f64) -> BoundedConsistentHash<impl Fn(&u64) -> Option<u64>> {
        plain().bounded_load(factor).unwrap()
    }

    /// 80 % of requests on one key, the rest spread over a thousand.
    fn skewed(rng: &Rng) -> u64 {
        if rng.below(10) < 8 {
            7
        } else {
            1000 + rng.below(1000) as u64
        }
    }

    fn capacity(factor: f64, total: u32, weight: u32, total_weight: u32) -> u32 {
        (factor * f64::from(total) * f64::from(weight) / f64::from(total_weight)).ceil() as u32
    }

    #[test]
    fn no_endpoint_exceeds_the_bound_while_load_builds_up() {
        let factor = 1.25;
        let picker = bounded(factor);
        let metas = metas(&[1; 10]);
        let services = idle(10);
        let ring = picker.prepare(&metas);
        let endpoints = Candidates::new(&metas, &services);
        let rng = Rng::from_seed(21);
        let hot = plain().pick(&ring, &endpoints, &7).unwrap();
        for total in 1..=2000u32 {
            let i = picker.pick(&ring, &endpoints, &skewed(&rng)).unwrap();
            services[i].0.fetch_add(1, Ordering::Relaxed);
            let cap = capacity(factor, total, 1, 10);
            for service in &services {
                assert!(service.get() <= cap, "{} > {cap} at {total}", service.get());
            }
        }
        // The bound was what held the hot key's endpoint back.
        assert_eq!(services[hot].get(), capacity(factor, 2000, 1, 10));
    }

    #[test]
    fn each_placement_respects_the_bound_as_requests_come_and_go() {
        let factor = 1.1;
        let picker = bounded(factor);
        let weights = [1, 2, 1, 3, 1, 1, 2, 1];
        let total_weight: u32 = weights.iter().sum();
        let metas = metas(&weights);
        let services = idle(weights.len());
        let ring = picker.prepare(&metas);
        let endpoints = Candidates::new(&metas, &services);
        let rng = Rng::from_seed(5);
        let mut in_flight = VecDeque::new();
        for _ in 0..5000 {
            let i = picker.pick(&ring, &endpoints, &skewed(&rng)).unwrap();
            services[i].0.fetch_add(1, Ordering::Relaxed);
            in_flight.push_back(i);
            let total = in_flight.len() as u32;
            let cap = capacity(factor, total, weights[i], total_weight);
            assert!(services[i].get() <= cap, "{} > {cap}", services[i].get());
            // Requests finish in a random order, keeping about 200 in flight.
            while in_flight.len() > 150 + rng.below(100) {
                let done = in_flight
                    .swap_remove_back(rng.below(in_flight.len()))
                    .unwrap();
                services[done].0.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    #[test]
    fn keys_stay_on_their_endpoint_while_it_has_room() {
        let picker = bounded(1.5);
        let metas = metas(&[1; 5]);
        let services = idle(5);
        let ring = picker.prepare(&metas);
        let endpoints = Candidates::new(&metas, &services);
        for key in 0..500u64 {
            let i = picker.pick(&ring, &endpoints, &key).unwrap();
            assert_eq!(Some(i), plain().pick(&ring, &endpoints, &key));
        }
    }

    #[test]
    fn invalid_factors_are_refused() {
        for factor in [
            1.0,
            0.5,
            0.0,
            -2.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ] {
            let err = ConsistentHash::new(|key: &u64| Some(*key))
                .bounded_load(factor)
                .unwrap_err();
            assert!(err.factor().is_nan() || err.factor() == factor);
            assert!(err.to_string().contains("above 1"), "{err}");
        }
        let ok = ConsistentHash::new(|key: &u64| Some(*key)).bounded_load(1.000_1);
        assert_eq!(ok.unwrap().factor(), 1.000_1);
    }

    #[test]
    fn a_missing_key_goes_round_robin_within_the_bound() {
        let picker = ConsistentHash::new(|key: &Option<u64>| *key)
            .bounded_load(1.5)
            .unwrap();
        let metas = metas(&[1; 3]);
        let services = idle(3);
        let ring = picker.prepare(&metas);
        let endpoints = Candidates::new(&metas, &services);
        let picks: Vec<_> = (0..6)
            .map(|_| picker.pick(&ring, &endpoints, &None).unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        // Endpoint 1 is over its bound (⌈1.5 × 11 / 3⌉ = 6): its turn goes to
        // the least loaded.
        services[1].0.store(10, Ordering::Relaxed);
        services[2].0.store(0, Ordering::Relaxed);
        services[0].0.store(0, Ordering::Relaxed);
        let turns: Vec<_> = (0..3)
            .map(|_| picker.pick(&ring, &endpoints, &None).unwrap())
            .collect();
        assert_eq!(turns, [0, 0, 2]);
    }

    #[test]
    fn exclusions_and_empty_sets() {
        let picker = bounded(1.25);
        let metas = metas(&[1, 0, 1]);
        let services = idle(3);
        let ring = picker.prepare(&metas);
        let excluded = key_hashes(&metas, &[0]);
        let retry = Candidates::new(&metas, &services).excluding(&excluded);
        for key in 0..100u64 {
            assert_eq!(picker.pick(&ring, &retry, &key), Some(2));
        }
        let all = key_hashes(&metas, &[0, 2]);
        let none = Candidates::new(&metas, &services).excluding(&all);
        assert_eq!(picker.pick(&ring, &none, &1), None);
        let empty = picker.prepare(&[]);
        assert_eq!(
            picker.pick(&empty, &Candidates::<Counted>::new(&[], &[]), &1),
            None
        );
    }

    #[test]
    fn loads_that_are_not_numbers_count_as_busy() {
        let picker = bounded(1.25);
        let metas = metas(&[1; 3]);
        let ring = picker.prepare(&metas);
        let services = [Fixed(f64::NAN), Fixed(2.0), Fixed(f64::INFINITY)];
        let endpoints = Candidates::new(&metas, &services);
        for key in 0..100u64 {
            assert_eq!(picker.pick(&ring, &endpoints, &key), Some(1));
        }
        // With nothing finite anywhere, some allowed endpoint is still chosen.
        let services = [Fixed(f64::NAN), Fixed(f64::NAN), Fixed(f64::INFINITY)];
        let endpoints = Candidates::new(&metas, &services);
        assert!(picker.pick(&ring, &endpoints, &3).is_some());
        // A negative load counts as idle.
        let services = [Fixed(-5.0), Fixed(1.0), Fixed(1.0)];
        let endpoints = Candidates::new(&metas, &services);
        let mut c = [0; 3];
        for key in 0..300u64 {
            c[picker.pick(&ring, &endpoints, &key).unwrap()] += 1;
        }
        assert!(c.iter().all(|&k| k > 0), "{c:?}");
    }

    #[test]
    fn a_large_set_keeps_near_the_bound_with_a_sampled_mean() {
        // 256 endpoints: the mean load comes from windows, so the bound is
        // approximate; the hot key's endpoint still stays close to it, and
        // the spill-over spreads.
        let factor = 1.25;
        let picker = bounded(factor);
        let metas = metas(&[1; 256]);
        let services = idle(256);
        let ring = picker.prepare(&metas);
        let endpoints = Candidates::new(&metas, &services);
        let rng = Rng::from_seed(22);
        for _ in 0..256 * 20 {
            let i = picker.pick(&ring, &endpoints, &skewed(&rng)).unwrap();
            services[i].0.fetch_add(1, Ordering::Relaxed);
        }
        let bound = capacity(factor, 256 * 20, 1, 256);
        let highest = services.iter().map(Counted::get).max().unwrap();
        assert!(highest <= bound + 3, "{highest} against a bound of {bound}");

        // Every endpoint but one excluded: that one, whatever the window read.
        let others = key_hashes(&metas, &(1..256).collect::<Vec<_>>());
        let retry = Candidates::new(&metas, &services).excluding(&others);
        for key in 0..50 {
            assert_eq!(picker.pick(&ring, &retry, &key), Some(0));
        }
        let all = key_hashes(&metas, &(0..256).collect::<Vec<_>>());
        let none = Candidates::new(&metas, &services).excluding(&all);
        assert_eq!(picker.pick(&ring, &none, &1), None);
    }
}
