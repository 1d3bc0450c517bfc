//! IP hash: the same client to the same endpoint, while the set is stable.

use std::sync::atomic::AtomicUsize;

use super::http_key::ClientIp;
use super::weighted_round_robin::{smooth_schedule, Schedule};
use super::{key::HashKey, Candidates, EndpointInfo, Pick, Prepare};
use crate::util::{mix64, reduce};

/// IP hash, as nginx's `ip_hash`: a request's key (by default the client's
/// IP address) always maps to the same endpoint while the endpoint set does
/// not change.
///
/// The key comes from a [`HashKey`] extractor `E`; this picker knows nothing
/// of HTTP. The default, [`ClientIp`], reads the connection address or, behind
/// trusted proxies, the forwarding headers: see its docs for the rules and
/// why only trusted hops are read. Any other key works too
/// ([`with_key`](IpHash::with_key)).
///
/// # Cost
///
/// * **pick**: O(1): the key extractor's cost (a hash of 4 or 16 bytes for
///   an address), one multiply-shift and one read of the table.
/// * **prepare**: the smooth weighted schedule of
///   [`WeightedRoundRobin`](super::WeightedRoundRobin), with the same cost
///   and size bounds.
///
/// # Weights
///
/// The key's hash selects a slot of the weighted schedule, in which each
/// endpoint holds slots in proportion to its weight, so shares of distinct
/// keys follow weights. Weight 0 is never picked.
///
/// # Changing sets
///
/// Like nginx's `ip_hash`, this is a plain modular mapping: adding, removing
/// or reweighting one endpoint remaps most clients, not just that endpoint's.
/// When clients should stay put through changes (caches, sessions), use
/// [`ConsistentHash`](super::ConsistentHash) or [`Maglev`](super::Maglev),
/// which move only about 1/n of the keys.
///
/// # No endpoints, missing key, exclusions
///
/// With no endpoint of non-zero weight, `pick` returns `None`. A request
/// without a key (no client address) is not rejected: it goes round robin
/// over the same weighted schedule. When the key's endpoint is excluded, the
/// pick walks forward along the schedule to the next allowed endpoint (at
/// most 64 slots, then the endpoints in index order), so a retry of the same
/// client lands on the same second choice.
///
/// # Example
///
/// ```
/// use tower_lb::pick::{Candidates, IpHash, EndpointInfo, Pick, Prepare, key::ClientAddr};
///
/// let ip_hash = IpHash::new();
/// let metas = [EndpointInfo::new(1, 1), EndpointInfo::new(2, 1), EndpointInfo::new(3, 2)];
/// let table = ip_hash.prepare(&metas);
/// let endpoints = Candidates::new(&metas, &[(), (), ()]);
///
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(ClientAddr("198.51.100.23:40000".parse().unwrap()));
/// let first = ip_hash.pick(&table, &endpoints, &req);
/// assert!(first.is_some());
/// assert_eq!(ip_hash.pick(&table, &endpoints, &req), first);
///
/// // Behind one proxy of ours that sets X-Forwarded-For.
/// let behind_proxy = IpHash::trusted_hops(1);
/// # let _ = behind_proxy;
/// ```
#[derive(Debug)]
pub struct IpHash<E = ClientIp> {
    key: E,
    /// The round-robin cursor for requests without a key.
    next: AtomicUsize,
}

impl IpHash {
    /// Hashes the client's connection address ([`ClientIp`] with no trusted
    /// hops).
    #[must_use]
    pub const fn new() -> Self {
        Self::with_key(ClientIp::new(0))
    }

    /// Hashes the client's address as read from `X-Forwarded-For` behind
    /// `hops` trusted proxies (see [`ClientIp`]); for proxies that write
    /// RFC 7239's `Forwarded`, use
    /// `IpHash::with_key(ClientIp::forwarded(hops))`.
    #[must_use]
    pub const fn trusted_hops(hops: usize) -> Self {
        Self::with_key(ClientIp::new(hops))
    }
}

impl Default for IpHash {
    fn default() -> Self {
        Self::new()
    }
}

impl<E> IpHash<E> {
    /// Hashes whatever `key` extracts from the request.
    #[must_use]
    pub const fn with_key(key: E) -> Self {
        Self {
            key,
            next: AtomicUsize::new(0),
        }
    }

    /// The key extractor.
    pub fn key(&self) -> &E {
        &self.key
    }
}

impl<E: Send + Sync + 'static> Prepare for IpHash<E> {
    type Table = Schedule;

    fn prepare(&self, endpoints: &[EndpointInfo]) -> Schedule {
        Schedule::new(smooth_schedule(endpoints))
    }
}

impl<Req, S, E> Pick<Req, S> for IpHash<E>
where
    E: HashKey<Req>,
{
    fn pick(&self, table: &Schedule, endpoints: &Candidates<'_, S>, req: &Req) -> Option<usize> {
        if table.is_empty() {
            return None;
        }
        match self.key.hash_key(req) {
            // Mixed once more so that weak keys (small integers from a
            // closure) still spread over the whole schedule.
            Some(hash) => table.allowed_from(reduce(mix64(hash), table.len()), endpoints),
            None => table.round_robin(&self.next, endpoints),
        }
    }
}

#[cfg(test)]
mod tests;
