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
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};

    use http::Request;

    use super::*;
    use crate::pick::key::ClientAddr;
    use crate::pick::testing::{metas, picks_per_endpoint};

    fn from(ip: Ipv4Addr) -> Request<()> {
        let mut req = Request::new(());
        req.extensions_mut()
            .insert(ClientAddr(SocketAddr::from((ip, 1234))));
        req
    }

    fn spread(i: u32) -> Ipv4Addr {
        Ipv4Addr::from(0x0a00_0000 + i * 7919)
    }

    #[test]
    fn same_key_same_endpoint() {
        let ip_hash = IpHash::new();
        let metas = metas(&[1, 1, 1, 1]);
        let table = ip_hash.prepare(&metas);
        let endpoints = Candidates::new(&metas, &[(); 4]);
        for i in 0..100 {
            let req = from(spread(i));
            let first = ip_hash.pick(&table, &endpoints, &req).unwrap();
            for _ in 0..5 {
                assert_eq!(ip_hash.pick(&table, &endpoints, &req), Some(first));
            }
        }
    }

    #[test]
    fn distinct_clients_spread_evenly() {
        let ip_hash = IpHash::new();
        let metas = metas(&[1, 1, 1, 1]);
        let table = ip_hash.prepare(&metas);
        let endpoints = Candidates::new(&metas, &[(); 4]);
        let mut c = [0; 4];
        for i in 0..1000 {
            // Consecutive addresses: the worst case for a weak hash.
            let req = from(Ipv4Addr::from(0xc0a8_0000 + i));
            c[ip_hash.pick(&table, &endpoints, &req).unwrap()] += 1;
        }
        assert!(c.iter().all(|&k| (200..=300).contains(&k)), "{c:?}");
    }

    #[test]
    fn shares_follow_weights() {
        let ip_hash = IpHash::new();
        let metas = metas(&[1, 3, 0]);
        let table = ip_hash.prepare(&metas);
        let endpoints = Candidates::new(&metas, &[(); 3]);
        let mut c = [0; 3];
        for i in 0..4000 {
            c[ip_hash.pick(&table, &endpoints, &from(spread(i))).unwrap()] += 1;
        }
        assert_eq!(c[2], 0);
        assert!((800..1200).contains(&c[0]), "{c:?}");
    }

    #[test]
    fn missing_key_goes_round_robin() {
        let ip_hash = IpHash::new();
        let metas = metas(&[1, 1, 1]);
        let table = ip_hash.prepare(&metas);
        let endpoints = Candidates::new(&metas, &[(); 3]);
        let keyless = Request::new(());
        let picks: Vec<usize> = (0..6)
            .map(|_| ip_hash.pick(&table, &endpoints, &keyless).unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn exclusion_walks_to_a_stable_second_choice() {
        let ip_hash = IpHash::new();
        let metas = metas(&[1, 1, 1, 1]);
        let table = ip_hash.prepare(&metas);
        let services = [(); 4];
        let plain = Candidates::new(&metas, &services);
        for i in 0..200 {
            let req = from(spread(i));
            let first = ip_hash.pick(&table, &plain, &req).unwrap();
            let excluded = [metas[first].key_hash()];
            let retry = Candidates::new(&metas, &services).excluding(&excluded);
            let second = ip_hash.pick(&table, &retry, &req).unwrap();
            assert_ne!(second, first);
            assert_eq!(ip_hash.pick(&table, &retry, &req), Some(second));
        }
        let all = [0, 1, 2, 3];
        let none = Candidates::new(&metas, &services).excluding(&all);
        assert_eq!(ip_hash.pick(&table, &none, &from(spread(1))), None);
    }

    #[test]
    fn no_endpoints() {
        let ip_hash = IpHash::new();
        let req = from(spread(3));
        let table = ip_hash.prepare(&[]);
        assert_eq!(
            ip_hash.pick(&table, &Candidates::<()>::new(&[], &[]), &req),
            None
        );
        let metas = metas(&[0, 0]);
        let table = ip_hash.prepare(&metas);
        assert_eq!(
            ip_hash.pick(&table, &Candidates::new(&metas, &[(); 2]), &req),
            None
        );
    }

    #[test]
    fn custom_keys_spread_even_when_weak() {
        let by_id = IpHash::with_key(|req: &u64| Some(*req));
        let c = picks_per_endpoint(&by_id, &metas(&[1, 1, 1, 1]), 0..1000);
        assert!(c.iter().all(|&k| (200..=300).contains(&k)), "{c:?}");
    }

    #[test]
    fn trusted_hops_reads_forwarded_headers() {
        let ip_hash = IpHash::trusted_hops(1);
        let metas = metas(&[1; 16]);
        let table = ip_hash.prepare(&metas);
        let endpoints = Candidates::new(&metas, &[(); 16]);
        let via = |client: &str, proxy: &str| {
            let mut req = Request::builder()
                .header("x-forwarded-for", client)
                .body(())
                .unwrap();
            req.extensions_mut()
                .insert(ClientAddr(proxy.parse().unwrap()));
            req
        };
        let a = ip_hash.pick(&table, &endpoints, &via("203.0.113.5", "10.0.0.1:1"));
        let b = ip_hash.pick(&table, &endpoints, &via("203.0.113.5", "10.0.0.2:1"));
        assert_eq!(a, b);
        assert_eq!(ip_hash.key().trusted_hops(), 1);
    }
}
