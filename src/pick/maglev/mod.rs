//! Maglev hashing: consistent hashing through a prime-sized lookup table.

mod size;
mod table;

use std::fmt;
use std::sync::atomic::AtomicUsize;

use super::{key::HashKey, Candidates, EndpointInfo, Pick, Prepare};
use crate::util::{mix64, reduce};

pub use self::size::InvalidTableSize;
pub use self::table::MaglevTable;

/// Maglev hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software
/// Network Load Balancer", NSDI 2016): a request's key indexes a lookup
/// table in which every endpoint holds its weight's share of the slots.
///
/// Each endpoint walks its own permutation of the slots, `(offset + i ×
/// skip) mod M`, with offset and skip drawn from its stable key hash
/// ([`EndpointInfo::key_hash`]); the endpoints take turns claiming the next empty
/// slot of their permutation until the table is full. Every process that
/// sees the same endpoints builds the same table, whatever order it learnt
/// them in. Compared with [`ConsistentHash`](super::ConsistentHash), the
/// lookup is a single table read and shares are exact, at the price of a
/// little more key movement when the set changes.
///
/// The key comes from a [`HashKey`] extractor: a closure
/// `Fn(&Req) -> Option<u64>`, [`Header`](super::key::Header),
/// [`Path`](super::key::Path) or [`ClientIp`](super::key::ClientIp). It is mixed once
/// more before use, so weak keys (small integers) still spread.
///
/// # Cost
///
/// * **pick**: O(1): the key extractor, one mix, one multiply-shift and one
///   read of the table. No allocation, no lock.
/// * **prepare**: about `M × ln M` steps for a table of `M` slots (a few
///   milliseconds for the default), plus O(n log n) for the shares. The
///   table takes 2 bytes a slot while there are at most 65 536 endpoints (the
///   default table: 128 KiB), 4 bytes a slot beyond.
///
/// # Table size
///
/// `M` is a prime: 65 537 unless set with
/// [`with_table_size`](Maglev::with_table_size) (97 to 16 777 213). The
/// table holds at least 100 slots an endpoint: with more than `M / 100`
/// endpoints of non-zero weight it grows to the first prime above 100 × n,
/// and at 167 773 endpoints and beyond it stays at 16 777 213 slots. Growing
/// changes every permutation and so remaps most keys: if the set may grow
/// that large, configure a size of at least 100 × its largest expected count.
///
/// # Weights
///
/// Each endpoint holds its exact share of the slots, `M × w / W`, rounded up
/// or down: within one slot. That is within 1 % (relative) of its weight's
/// share whenever that share is at least 100 slots, which the 100 slots an
/// endpoint guarantee for equal weights. An endpoint whose share is under
/// one slot (a weight of 1 beside a weight of `u32::MAX`) still gets one,
/// taken from the largest shares. Weight 0 gets none: never picked.
///
/// # No endpoints, missing key, exclusions
///
/// With no endpoint of non-zero weight, `pick` returns `None`. A request
/// without a key is not rejected: it goes plain round robin over the
/// endpoints of non-zero weight (weights otherwise ignored). When the key's
/// endpoint is excluded (a retry), the pick walks forward along the table to
/// the next slot held by an allowed endpoint, so a retry of the same key
/// always lands on the same second choice; after 64 slots it takes the first
/// allowed endpoint in index order after the key's own.
///
/// # Example
///
/// ```
/// use tower_lb::pick::{Candidates, Maglev, EndpointInfo, Pick, Prepare, key::Path};
///
/// let maglev = Maglev::new(Path);
/// let metas = [EndpointInfo::new(11, 1), EndpointInfo::new(22, 1), EndpointInfo::new(33, 2)];
/// let table = maglev.prepare(&metas);
/// assert_eq!(table.len(), 65_537);
/// let endpoints = Candidates::new(&metas, &[(), (), ()]);
///
/// let req = http::Request::get("/models/llama").body(()).unwrap();
/// let first = maglev.pick(&table, &endpoints, &req).unwrap();
/// assert_eq!(maglev.pick(&table, &endpoints, &req), Some(first));
///
/// // A smaller table; sizes must be prime.
/// let small = Maglev::new(Path).with_table_size(5_003)?;
/// assert!(Maglev::new(Path).with_table_size(5_000).is_err());
/// # let _ = small;
/// # Ok::<(), tower_lb::pick::InvalidTableSize>(())
/// ```
pub struct Maglev<E> {
    key: E,
    table_size: usize,
    /// The round-robin cursor for requests without a key.
    next: AtomicUsize,
}

impl<E> Maglev<E> {
    /// Hashes whatever `key` extracts from the request, into a table of
    /// 65 537 slots.
    #[must_use]
    pub const fn new(key: E) -> Self {
        Self {
            key,
            table_size: size::DEFAULT_TABLE_SIZE,
            next: AtomicUsize::new(0),
        }
    }

    /// Sets the table size `M`: a prime from 97 to 16 777 213. Larger tables
    /// balance finer and cost more memory and build time; the table still
    /// grows to 100 slots an endpoint when the set is larger.
    ///
    /// # Errors
    ///
    /// [`InvalidTableSize`] when `size` is not a prime in that range.
    pub fn with_table_size(mut self, size: usize) -> Result<Self, InvalidTableSize> {
        self.table_size = size::check(size)?;
        Ok(self)
    }

    /// The configured table size (the table may be larger; see
    /// [`MaglevTable::len`]).
    pub fn table_size(&self) -> usize {
        self.table_size
    }

    /// The key extractor.
    pub fn key(&self) -> &E {
        &self.key
    }
}

/// Shows the key extractor by its type name, so that pickers keyed by a
/// closure are `Debug` too.
impl<E> fmt::Debug for Maglev<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Maglev")
            .field("key", &std::any::type_name::<E>())
            .field("table_size", &self.table_size)
            .finish()
    }
}

impl<E: Send + Sync + 'static> Prepare for Maglev<E> {
    type Table = MaglevTable;

    fn prepare(&self, endpoints: &[EndpointInfo]) -> MaglevTable {
        MaglevTable::build(endpoints, self.table_size)
    }
}

impl<Req, S, E> Pick<Req, S> for Maglev<E>
where
    E: HashKey<Req>,
{
    fn pick(&self, table: &MaglevTable, endpoints: &Candidates<'_, S>, req: &Req) -> Option<usize> {
        if table.is_empty() {
            return None;
        }
        match self.key.hash_key(req) {
            Some(hash) => table.first_allowed(reduce(mix64(hash), table.len()), endpoints),
            None => table.members().round_robin(&self.next, endpoints),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pick::testing::{
        addr_metas as metas, assert_heavy_exclusion_falls_back, assert_order_free,
        assert_stale_table_is_safe, key_hashes, owners, picks_per_endpoint, random_keys, ById,
        BY_ID,
    };

    fn by_id() -> Maglev<ById> {
        Maglev::new(BY_ID)
    }

    fn keys(count: usize) -> Vec<u64> {
        random_keys(17, count)
    }

    fn slot_counts(table: &MaglevTable, n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for slot in 0..table.len() {
            c[table.entry(slot)] += 1;
        }
        c
    }

    #[test]
    fn table_shares_are_within_one_percent_of_weight_shares() {
        let one_to_ten: Vec<u32> = (1..=10).collect();
        let mixes: [&[u32]; 5] = [
            &[1; 10],
            &one_to_ten,
            &[50, 1, 1, 1, 1, 1],
            &[7, 0, 3, 0, 1],
            &[1; 600],
        ];
        for weights in mixes {
            let metas = metas(weights);
            let table = by_id().prepare(&metas);
            assert_eq!(table.len(), 65_537);
            let total: u32 = weights.iter().sum();
            for (i, count) in slot_counts(&table, weights.len()).into_iter().enumerate() {
                let want = f64::from(weights[i]) / f64::from(total);
                let got = count as f64 / table.len() as f64;
                if want == 0.0 {
                    assert_eq!(count, 0);
                } else {
                    let error = (got - want).abs() / want;
                    assert!(error <= 0.01, "{weights:?}: endpoint {i} off by {error}");
                }
            }
        }
    }

    #[test]
    fn removing_one_of_ten_moves_few_keys_and_adding_it_back_restores_them() {
        let picker = by_id();
        let all = metas(&[1; 10]);
        let keys = keys(10_000);
        let before = owners(&picker, &all, &keys);
        let gone = all[6].key_hash();
        let mut without = all.clone();
        without.remove(6);
        let after = owners(&picker, &without, &keys);
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            assert_ne!(*a, gone);
            if b != a {
                moved += 1;
            }
        }
        let own = before.iter().filter(|&&k| k == gone).count();
        assert!(moved >= own && moved <= 2000, "{moved} moved, {own} had to");
        assert_eq!(owners(&picker, &all, &keys), before);
    }

    #[test]
    fn the_table_ignores_the_order_endpoints_were_learnt_in() {
        assert_order_free(&by_id(), &[1, 2, 3, 1, 1], &keys(2000));
    }

    #[test]
    fn the_table_grows_to_a_hundred_slots_an_endpoint() {
        let picker = by_id().with_table_size(97).unwrap();
        assert_eq!(picker.table_size(), 97);
        assert_eq!(picker.prepare(&metas(&[1])).len(), 101);
        let metas = metas(&[1; 10]);
        let table = picker.prepare(&metas);
        assert_eq!(table.len(), 1009);
        assert!(slot_counts(&table, 10)
            .iter()
            .all(|&c| c == 100 || c == 101));
    }

    #[test]
    fn invalid_table_sizes_are_refused() {
        for bad in [0, 1, 2, 4, 65_536, 65_535, 1 << 24, 16_777_259, usize::MAX] {
            let err = by_id().with_table_size(bad).unwrap_err();
            assert_eq!(err.size(), bad);
        }
    }

    #[test]
    fn huge_weights_keep_every_endpoint_in_the_table() {
        let metas = metas(&[u32::MAX, 1, u32::MAX, 0]);
        let table = by_id().prepare(&metas);
        let c = slot_counts(&table, 4);
        assert_eq!(c[1], 1);
        assert_eq!(c[3], 0);
        assert!(c[0].abs_diff(c[2]) <= 1, "{c:?}");
    }

    #[test]
    fn weak_keys_spread() {
        let c = picks_per_endpoint(&by_id(), &metas(&[1; 4]), 0..4000);
        assert!(c.iter().all(|&k| (850..=1150).contains(&k)), "{c:?}");
    }

    #[test]
    fn a_retry_walks_to_the_next_allowed_slot() {
        let picker = by_id();
        let metas = metas(&[1, 2, 1, 0, 3]);
        let table = picker.prepare(&metas);
        let services = [(); 5];
        let plain = Candidates::new(&metas, &services);
        for key in keys(500) {
            let slot = reduce(mix64(key), table.len());
            let first = picker.pick(&table, &plain, &key).unwrap();
            assert_eq!(first, table.entry(slot));
            let tried = key_hashes(&metas, &[first]);
            let retry = Candidates::new(&metas, &services).excluding(&tried);
            let second = picker.pick(&table, &retry, &key).unwrap();
            assert_ne!(second, first);
            assert_ne!(second, 3);
            let expected = (slot..)
                .map(|s| table.entry(s % table.len()))
                .find(|&i| i != first)
                .unwrap();
            assert_eq!(second, expected);
            assert_eq!(picker.pick(&table, &retry, &key), Some(second));
        }
        let all = key_hashes(&metas, &[0, 1, 2, 4]);
        let none = Candidates::new(&metas, &services).excluding(&all);
        assert_eq!(picker.pick(&table, &none, &1), None);
    }

    #[test]
    fn long_excluded_runs_fall_back_to_a_scan() {
        assert_heavy_exclusion_falls_back(&by_id(), &keys(200));
    }

    #[test]
    fn a_missing_key_goes_round_robin() {
        let picker = Maglev::new(|key: &Option<u64>| *key);
        let metas = metas(&[3, 0, 1, 1]);
        let table = picker.prepare(&metas);
        let endpoints = Candidates::new(&metas, &[(); 4]);
        let picks: Vec<_> = (0..6)
            .map(|_| picker.pick(&table, &endpoints, &None).unwrap())
            .collect();
        assert_eq!(picks, [0, 2, 3, 0, 2, 3]);
    }

    #[test]
    fn no_endpoints_give_none() {
        let picker = by_id();
        let table = picker.prepare(&[]);
        assert!(table.is_empty());
        assert_eq!(
            picker.pick(&table, &Candidates::<()>::new(&[], &[]), &1),
            None
        );
        let metas = metas(&[0, 0]);
        let table = picker.prepare(&metas);
        let endpoints = Candidates::new(&metas, &[(); 2]);
        assert_eq!(picker.pick(&table, &endpoints, &1), None);
    }

    #[test]
    fn stale_tables_never_return_a_missing_endpoint() {
        assert_stale_table_is_safe(&by_id(), &keys(100));
    }
}
