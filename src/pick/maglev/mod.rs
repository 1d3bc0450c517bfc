//! Maglev hashing: consistent hashing through a prime-sized lookup table.

mod size;
mod table;
#[cfg(test)]
mod tests;

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
