//! Consistent hashing on a ring of virtual nodes, with an optional bound on
//! each endpoint's load.

mod bounded;
mod ring;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::atomic::AtomicUsize;

use super::{key::HashKey, Candidates, EndpointInfo, Pick, Prepare};
use crate::util::mix64;

pub use self::bounded::{BoundedConsistentHash, InvalidBound};
pub use self::ring::HashRing;

/// Points on the ring per unit of weight, unless set otherwise.
const DEFAULT_VIRTUAL_NODES: u32 = 160;

/// Consistent hashing: each endpoint owns many points on a ring of 64-bit
/// hashes, and a request goes to the owner of the first point clockwise from
/// its key's hash.
///
/// When an endpoint leaves, only the keys it owned move (to the next points
/// along the ring); when it comes back they return to it, and every other
/// key stays put. That is what caches and sticky sessions need from a
/// changing set. The points come from each endpoint's stable key hash
/// ([`EndpointInfo::key_hash`]), so every process that sees the same endpoints builds
/// the same ring and sends a key to the same endpoint, whatever order it
/// learnt them in.
///
/// The key comes from a [`HashKey`] extractor: a closure
/// `Fn(&Req) -> Option<u64>`, [`Header`](super::key::Header),
/// [`Path`](super::key::Path) or [`ClientIp`](super::key::ClientIp). It is mixed once
/// more before use, so weak keys (small integers) still spread.
///
/// For a cap on how busy a popular key can make its endpoint, see
/// [`bounded_load`](ConsistentHash::bounded_load).
///
/// # Cost
///
/// * **pick**: O(1) expected: the key extractor, one mix, one read of a
///   bucket index over the top bits of the hash (a bucket for every 16 to
///   32 points) and a binary search of that bucket's 32-bit fractions.
///   No allocation, no lock.
/// * **prepare**: O(P log P) for P points: they are generated and sorted.
///   About 6.3 bytes a point, 1 000 bytes an endpoint at the default 160
///   points (see [`HashRing`] for what is stored); 4096 endpoints of weight
///   1 make a ring of 655 360 points, about 4 MiB.
///
/// # Weights
///
/// An endpoint gets [`virtual_nodes`](ConsistentHash::virtual_nodes) points
/// (160 by default) for each unit of weight, so its share of distinct keys
/// follows its weight. Weight 0 gives no points: never picked.
///
/// The ring holds at most 2²⁰ points (about 6.5 MiB), plus one for each endpoint so
/// that none is left out. When weights × virtual nodes add up to more (huge
/// weights, or tens of thousands of endpoints), every count is scaled down
/// in proportion, rounding down but keeping at least one point. Below the cap
/// an endpoint's points depend only on its own key and weight; above it they
/// depend on the total too, so a change can then move a few extra keys.
///
/// # No endpoints, missing key, exclusions
///
/// With no endpoint of non-zero weight, `pick` returns `None`. A request
/// without a key is not rejected: it goes plain round robin over the
/// endpoints of non-zero weight (weights otherwise ignored). When the key's
/// endpoint is excluded (a retry), the pick walks clockwise to the next
/// allowed endpoint along the ring, so a retry of the same key always lands
/// on the same second choice, a different endpoint. The walk is bounded (256
/// points); after it the first allowed endpoint in index order after the
/// key's owner is taken.
///
/// # Example
///
/// ```
/// use tower_lb::pick::{ConsistentHash, Candidates, EndpointInfo, Pick, Prepare, key::Header};
///
/// let by_user = ConsistentHash::new(Header::new(http::HeaderName::from_static("x-user")));
/// let metas = [EndpointInfo::new(11, 1), EndpointInfo::new(22, 1), EndpointInfo::new(33, 2)];
/// let ring = by_user.prepare(&metas);
/// let endpoints = Candidates::new(&metas, &[(), (), ()]);
///
/// let req = http::Request::builder().header("x-user", "ada").body(()).unwrap();
/// let first = by_user.pick(&ring, &endpoints, &req).unwrap();
/// assert_eq!(by_user.pick(&ring, &endpoints, &req), Some(first));
///
/// // A retry that must avoid the first endpoint gets the next one on the ring.
/// let tried = [metas[first].key_hash()];
/// let retry = by_user.pick(&ring, &endpoints.excluding(&tried), &req).unwrap();
/// assert_ne!(retry, first);
/// ```
pub struct ConsistentHash<E> {
    key: E,
    virtual_nodes: u32,
    /// The round-robin cursor for requests without a key.
    next: AtomicUsize,
}

impl<E> ConsistentHash<E> {
    /// Hashes whatever `key` extracts from the request, with 160 points on
    /// the ring per unit of weight.
    #[must_use]
    pub const fn new(key: E) -> Self {
        Self {
            key,
            virtual_nodes: DEFAULT_VIRTUAL_NODES,
            next: AtomicUsize::new(0),
        }
    }

    /// Sets the points on the ring per unit of weight (160 by default; 0 is
    /// taken as 1).
    ///
    /// More points spread keys more evenly: with `v` points an endpoint's
    /// share of keys deviates from its fair share by about `1/√v` (8 % at
    /// 160), at the cost of a larger ring. The pick stays O(1) expected
    /// either way.
    #[must_use]
    pub fn virtual_nodes(mut self, per_weight: u32) -> Self {
        self.virtual_nodes = per_weight.max(1);
        self
    }

    /// Bounds each endpoint's load to `factor` × its fair share, as in
    /// Mirrokni, Thorup and Zadimoghaddam, "Consistent Hashing with Bounded
    /// Loads" (2017). See [`BoundedConsistentHash`].
    ///
    /// # Errors
    ///
    /// [`InvalidBound`] unless `factor` is a finite number above 1 (a bound
    /// of 1 or less cannot be met by every endpoint at once).
    pub fn bounded_load(self, factor: f64) -> Result<BoundedConsistentHash<E>, InvalidBound> {
        BoundedConsistentHash::new(self, factor)
    }

    /// The key extractor.
    pub fn key(&self) -> &E {
        &self.key
    }

    /// The points on the ring per unit of weight.
    pub fn points_per_weight(&self) -> u32 {
        self.virtual_nodes
    }
}

/// Shows the key extractor by its type name, so that pickers keyed by a
/// closure are `Debug` too.
impl<E> fmt::Debug for ConsistentHash<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsistentHash")
            .field("key", &std::any::type_name::<E>())
            .field("virtual_nodes", &self.virtual_nodes)
            .finish()
    }
}

impl<E: Send + Sync + 'static> Prepare for ConsistentHash<E> {
    type Table = HashRing;

    fn prepare(&self, endpoints: &[EndpointInfo]) -> HashRing {
        HashRing::build(endpoints, self.virtual_nodes)
    }
}

impl<Req, S, E> Pick<Req, S> for ConsistentHash<E>
where
    E: HashKey<Req>,
{
    fn pick(&self, ring: &HashRing, endpoints: &Candidates<'_, S>, req: &Req) -> Option<usize> {
        if ring.is_empty() {
            return None;
        }
        match self.key.hash_key(req) {
            Some(hash) => ring.first_allowed(ring.successor(mix64(hash)), endpoints),
            None => ring.members().round_robin(&self.next, endpoints),
        }
    }
}
