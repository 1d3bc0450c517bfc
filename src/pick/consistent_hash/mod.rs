//! Consistent hashing on a ring of virtual nodes, with an optional bound on
//! each endpoint's load.

mod bounded;
mod ring;

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

#[cfg(test)]
mod tests {
    use super::ring::MAX_POINTS;
    use super::*;
    use crate::pick::key::hash_value;
    use crate::pick::testing::{
        addr_metas as metas, assert_heavy_exclusion_falls_back, assert_order_free,
        assert_stale_table_is_safe, key_hashes, owners, picks_per_endpoint, random_keys, ById,
        BY_ID,
    };

    fn by_id() -> ConsistentHash<ById> {
        ConsistentHash::new(BY_ID)
    }

    fn keys(count: usize) -> Vec<u64> {
        random_keys(99, count)
    }

    #[test]
    fn removing_an_endpoint_moves_only_its_keys_and_adding_it_back_restores_them() {
        let picker = by_id();
        let all = metas(&[1; 10]);
        let keys = keys(10_000);
        let before = owners(&picker, &all, &keys);
        let gone = all[3].key_hash();
        let mut without = all.clone();
        without.remove(3);
        let after = owners(&picker, &without, &keys);

        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            if b == a {
                continue;
            }
            assert_eq!(*b, gone, "a key moved that was not on the removed endpoint");
            moved += 1;
        }
        assert!(moved > 0 && moved <= 1200, "{moved} keys moved");
        assert_eq!(owners(&picker, &all, &keys), before);
    }

    #[test]
    fn inserting_an_endpoint_moves_keys_only_to_it() {
        let picker = by_id();
        let old = metas(&[1; 10]);
        let keys = keys(10_000);
        let before = owners(&picker, &old, &keys);
        let mut new = old.clone();
        let newcomer = EndpointInfo::new(hash_value("10.0.1.1:8080"), 1);
        // In the middle, so that the indices after it shift.
        new.insert(4, newcomer);
        let after = owners(&picker, &new, &keys);
        let mut gained = 0;
        for (b, a) in before.iter().zip(&after) {
            if b != a {
                assert_eq!(*a, newcomer.key_hash());
                gained += 1;
            }
        }
        assert!((500..=1400).contains(&gained), "{gained} keys moved");
    }

    #[test]
    fn the_ring_ignores_the_order_endpoints_were_learnt_in() {
        assert_order_free(&by_id(), &[1, 2, 3, 1, 1], &keys(2000));
    }

    #[test]
    fn shares_follow_weights() {
        let picker = by_id();
        let metas = metas(&[1, 3]);
        let light = metas[0].key_hash();
        let owners = owners(&picker, &metas, &keys(10_000));
        let on_light = owners.iter().filter(|&&k| k == light).count() as f64;
        let ratio = (10_000.0 - on_light) / on_light;
        assert!((2.5..=3.5).contains(&ratio), "ratio {ratio}");
    }

    #[test]
    fn weak_keys_spread() {
        let c = picks_per_endpoint(&by_id(), &metas(&[1; 4]), 0..4000);
        assert!(c.iter().all(|&k| (700..=1300).contains(&k)), "{c:?}");
    }

    #[test]
    fn zero_weight_is_never_picked() {
        let picker = by_id();
        let metas = metas(&[1, 0, 2, 0]);
        let ring = picker.prepare(&metas);
        assert_eq!(ring.len(), 3 * 160);
        let services = [(); 4];
        let excluded = key_hashes(&metas, &[0]);
        for endpoints in [
            Candidates::new(&metas, &services),
            Candidates::new(&metas, &services).excluding(&excluded),
        ] {
            for key in keys(1000) {
                let i = picker.pick(&ring, &endpoints, &key).unwrap();
                assert!(i == 0 || i == 2);
                assert!(endpoints.is_allowed(i));
            }
        }
    }

    #[test]
    fn a_retry_walks_to_the_next_distinct_endpoint_on_the_ring() {
        let picker = by_id();
        let metas = metas(&[1; 6]);
        let ring = picker.prepare(&metas);
        let services = [(); 6];
        let plain = Candidates::new(&metas, &services);
        for key in keys(500) {
            let first = picker.pick(&ring, &plain, &key).unwrap();
            // The owners clockwise from the key, in order, without repeats.
            let mut order = Vec::new();
            let mut at = ring.successor(mix64(key));
            while order.len() < 3 {
                let i = ring.owner(at);
                if !order.contains(&i) {
                    order.push(i);
                }
                at = ring.next(at);
            }
            assert_eq!(first, order[0]);
            let tried = key_hashes(&metas, &[first]);
            let retry = Candidates::new(&metas, &services).excluding(&tried);
            let second = picker.pick(&ring, &retry, &key).unwrap();
            assert_eq!(second, order[1]);
            assert_eq!(picker.pick(&ring, &retry, &key), Some(second));
            let tried = key_hashes(&metas, &[first, second]);
            let again = Candidates::new(&metas, &services).excluding(&tried);
            assert_eq!(picker.pick(&ring, &again, &key), Some(order[2]));
        }
        let all = key_hashes(&metas, &[0, 1, 2, 3, 4, 5]);
        let none = Candidates::new(&metas, &services).excluding(&all);
        assert_eq!(picker.pick(&ring, &none, &7), None);
    }

    #[test]
    fn long_excluded_runs_fall_back_to_a_scan() {
        let picker = by_id();
        // The heavy endpoint owns all but one point of a capped ring.
        let ring = picker.prepare(&metas(&[u32::MAX, 1]));
        assert!(ring.len() as u64 <= MAX_POINTS + 2);
        assert_heavy_exclusion_falls_back(&picker, &keys(200));
    }

    #[test]
    fn a_missing_key_goes_round_robin() {
        let picker = ConsistentHash::new(|key: &Option<u64>| *key);
        let metas = metas(&[1, 0, 5, 1]);
        let ring = picker.prepare(&metas);
        let services = [(); 4];
        let endpoints = Candidates::new(&metas, &services);
        let picks: Vec<_> = (0..6)
            .map(|_| picker.pick(&ring, &endpoints, &None).unwrap())
            .collect();
        assert_eq!(picks, [0, 2, 3, 0, 2, 3]);
        let excluded = key_hashes(&metas, &[2]);
        let retry = Candidates::new(&metas, &services).excluding(&excluded);
        for _ in 0..6 {
            let i = picker.pick(&ring, &retry, &None).unwrap();
            assert!(i == 0 || i == 3);
        }
    }

    #[test]
    fn no_endpoints_give_none() {
        let picker = by_id();
        let ring = picker.prepare(&[]);
        assert_eq!(
            picker.pick(&ring, &Candidates::<()>::new(&[], &[]), &1),
            None
        );
        let metas = metas(&[0, 0]);
        let ring = picker.prepare(&metas);
        let endpoints = Candidates::new(&metas, &[(); 2]);
        assert_eq!(picker.pick(&ring, &endpoints, &1), None);
        let keyless = ConsistentHash::new(|_: &u64| None);
        assert_eq!(keyless.pick(&ring, &endpoints, &1), None);
    }

    #[test]
    fn huge_weights_do_not_blow_up_the_ring() {
        let picker = by_id().virtual_nodes(u32::MAX);
        let metas = metas(&[u32::MAX; 8]);
        let ring = picker.prepare(&metas);
        assert!(ring.len() as u64 <= MAX_POINTS + 8, "{} points", ring.len());
        let endpoints = Candidates::new(&metas, &[(); 8]);
        let mut c = [0; 8];
        for key in keys(8000) {
            c[picker.pick(&ring, &endpoints, &key).unwrap()] += 1;
        }
        assert!(c.iter().all(|&k| (800..=1200).contains(&k)), "{c:?}");
    }

    #[test]
    fn virtual_nodes_set_the_ring_size() {
        let metas = metas(&[1, 2, 0]);
        assert_eq!(by_id().virtual_nodes(10).prepare(&metas).len(), 30);
        // 0 is taken as 1 rather than leaving every endpoint out.
        let one = by_id().virtual_nodes(0);
        assert_eq!(one.points_per_weight(), 1);
        assert_eq!(one.prepare(&metas).len(), 3);
    }

    #[test]
    fn stale_tables_never_return_a_missing_endpoint() {
        assert_stale_table_is_safe(&by_id(), &keys(100));
    }
}
