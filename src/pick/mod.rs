//! Pickers: which endpoint gets the next request.
//!
//! A picker is split in two halves so that the request path stays cheap:
//!
//! * [`Prepare::prepare`] runs on the discovery worker whenever the endpoint
//!   set changes. It sees each endpoint's [`EndpointInfo`] (its weight and the hash of
//!   its key) and builds whatever table the picker needs: a smooth weighted
//!   schedule, a hash ring, a Maglev lookup table.
//! * [`Pick::pick`] runs on the caller's task for every request. It sees the
//!   request, the table and the current [`Candidates`], and returns an index.
//!   It must not block, lock or allocate.
//!
//! The pickers come in three groups, each found together:
//!
//! **Classic algorithms**, at the root of this module, as nginx, HAProxy
//! and Envoy name them:
//!
//! | picker | cost per pick | weights | key |
//! |---|---|---|---|
//! | [`RoundRobin`] | O(1) | ignored (weight 0 skipped) | none |
//! | [`WeightedRoundRobin`] | O(1) | smooth interleaving | none |
//! | [`IpHash`] | O(1) | ∝ weight | client address |
//! | [`ConsistentHash`] | O(1) expected | virtual nodes ∝ weight | any [`HashKey`](key::HashKey) |
//! | [`BoundedConsistentHash`] | O(n) to 16 endpoints, then O(1): a running mean over windows of 8 | virtual nodes and load bound ∝ weight | any [`HashKey`](key::HashKey) |
//! | [`Maglev`] | O(1) | table share ∝ weight | any [`HashKey`](key::HashKey) |
//!
//! **Load-aware pickers**, also at the root: they read each endpoint's load
//! (`tower::load::Load`, or the load the endpoint reports of itself).
//!
//! | picker | cost per pick | weights | key |
//! |---|---|---|---|
//! | [`LeastConnections`] | O(n) to 16 endpoints, then O(1): a window of 16 and the last winner | load ÷ weight | none |
//! | [`P2c`] | O(1): two samples and the last two winners | sampling ∝ weight | none |
//! | [`ReportWeighted`] | O(1) expected | from load reports (gRFC A58) | none |
//!
//! **Inference pickers**, in [`llm`]: the scoring picker and prompt
//! affinity for model servers.
//!
//! | picker | cost per pick | weights | key |
//! |---|---|---|---|
//! | [`Scored`](llm::Scored) | O(n) | weight 0 skipped; scores from reported load | model, adapter, priority |
//!
//! Around any of them, [`ZonePreference`] keeps requests in the caller's
//! zone. Hash keys live in [`key`]; the tables pickers build, in [`table`].
//!
//! An endpoint with weight 0 receives no new requests from any picker: it is
//! how an endpoint is drained without removing it.
//!
//! # Writing a picker
//!
//! ```
//! use tower_lb::pick::{Candidates, EndpointInfo, Pick, Prepare};
//!
//! /// Always the first endpoint that may be used.
//! #[derive(Debug)]
//! struct First;
//!
//! impl Prepare for First {
//!     type Table = ();
//!     fn prepare(&self, _endpoints: &[EndpointInfo]) {}
//! }
//!
//! impl<Req, S> Pick<Req, S> for First {
//!     fn pick(&self, _table: &(), endpoints: &Candidates<'_, S>, _req: &Req) -> Option<usize> {
//!         (0..endpoints.len()).find(|&i| endpoints.is_allowed(i))
//!     }
//! }
//! ```

use std::fmt;

mod boxed;
mod consistent_hash;
mod fallback;
mod hash;
mod http_key;
mod ip_hash;
mod least_connections;
mod maglev;
mod p2c;
mod prefix;
mod report_weighted;
mod round_robin;
mod scored;
#[cfg(test)]
pub(crate) mod testing;
mod weighted_round_robin;
mod zone;

pub use self::boxed::BoxPick;
pub use self::consistent_hash::{BoundedConsistentHash, ConsistentHash, InvalidBound};
pub use self::ip_hash::IpHash;
pub use self::least_connections::LeastConnections;
pub use self::maglev::{InvalidTableSize, Maglev};
pub use self::p2c::P2c;
pub use self::report_weighted::{ReportWeighted, ReportWeights};
pub use self::round_robin::RoundRobin;
pub use self::weighted_round_robin::WeightedRoundRobin;
pub use self::zone::ZonePreference;

/// Where hashing pickers find a request's key, and the stable hashes they
/// use: the client's address, a header, the path, or your own [`HashKey`](key::HashKey).
pub mod key {
    pub use super::hash::HashKey;
    pub use super::http_key::{ClientAddr, ClientIp, Header, Path};
    pub use crate::util::{hash_bytes, hash_value};

    /// The stable hash of a zone name, as
    /// [`EndpointInfo::zone_hash`](super::EndpointInfo::zone_hash) holds it;
    /// never 0.
    pub fn zone_hash(zone: &str) -> u64 {
        hash_bytes(zone.as_bytes()).max(1)
    }
}

/// The tables pickers build when the endpoint set changes
/// ([`Prepare::Table`]): named here for code that stores or inspects them,
/// never needed to use a picker.
pub mod table {
    pub use super::consistent_hash::HashRing;
    pub use super::least_connections::LeastConnectionsTable;
    pub use super::maglev::MaglevTable;
    pub use super::p2c::P2cTable;
    pub use super::report_weighted::ReportTable;
    pub use super::zone::ZoneTable;
}

/// Pickers for inference servers: the scoring picker ([`Scored`](llm::Scored)),
/// what it reads of a request ([`RequestInfo`](llm::RequestInfo)), and
/// prefix and session affinity for prompts.
pub mod llm {
    #[cfg(feature = "llm")]
    pub(crate) use super::prefix::PromptHasher;
    pub use super::prefix::{
        BlockConfig, PrefixAffinity, PrefixConfig, PrefixStats, PromptBlocks, PromptRequest,
        SessionAffinity, SessionKey,
    };
    pub use super::scored::{
        Candidate, Choice, RequestInfo, RequestInfoRef, Saturation, ScoreHook, Scored,
        ScoredRequest, Scorer, Weights, ADAPTER_HEADER, MODEL_HEADER, PRIORITY_HEADER,
    };
}

/// What a picker knows of an endpoint when it builds its table.
///
/// Every field is fixed when the endpoint is inserted: the hash of its
/// discovery key (stable across processes, so that hash rings agree between
/// clients), its weight, and the hash of its zone if it has one
/// ([`Endpoint::zone`](crate::endpoint::Endpoint::zone)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointInfo {
    key_hash: u64,
    weight: u32,
    /// 0 when the zone is unknown; [`key::zone_hash`] never returns 0.
    zone: u64,
}

impl EndpointInfo {
    /// Describes an endpoint by the hash of its key and its weight, in no
    /// known zone.
    pub const fn new(key_hash: u64, weight: u32) -> Self {
        Self {
            key_hash,
            weight,
            zone: 0,
        }
    }

    /// The same endpoint in `zone`.
    #[must_use]
    pub fn with_zone(mut self, zone: &str) -> Self {
        self.zone = key::zone_hash(zone);
        self
    }

    /// The hash of the endpoint's zone ([`zone_hash`](key::zone_hash)), if it has one.
    pub const fn zone_hash(&self) -> Option<u64> {
        if self.zone == 0 {
            None
        } else {
            Some(self.zone)
        }
    }

    /// The stable hash of the endpoint's discovery key.
    pub const fn key_hash(&self) -> u64 {
        self.key_hash
    }

    /// The endpoint's weight; 0 means it takes no new requests.
    pub const fn weight(&self) -> u32 {
        self.weight
    }
}

/// Builds a picker's table from the endpoint set, off the request path.
///
/// The balancer calls this on its discovery worker after every batch of
/// changes and publishes the table together with the endpoints it was built
/// from, so a table and the endpoints it indexes always match.
pub trait Prepare: Send + Sync + 'static {
    /// The picker's precomputed state for one endpoint set.
    type Table: Send + Sync + 'static;

    /// Builds the table for `endpoints`; index `i` of the slice is the index
    /// [`Pick::pick`] returns for that endpoint.
    fn prepare(&self, endpoints: &[EndpointInfo]) -> Self::Table;
}

/// Chooses the endpoint for one request.
///
/// `pick` runs on the caller's task for every request: it must not block,
/// lock or allocate. It returns the index of an endpoint for which
/// [`Candidates::is_allowed`] holds, or `None` when there is none; the balancer
/// then waits for the set to change and fails with
/// [`NoEndpoints`](crate::error::NoEndpoints) if it does not.
pub trait Pick<Req, S>: Prepare {
    /// Picks an endpoint for `req`.
    fn pick(&self, table: &Self::Table, endpoints: &Candidates<'_, S>, req: &Req) -> Option<usize>;

    /// Picks an endpoint for `req`, or sheds it: `Err` fails the request at
    /// once with [`Saturated`](crate::error::Saturated), without waiting for
    /// the set to change. The balancer calls this method; the default is
    /// [`pick`](Pick::pick), which never sheds. A picker that admits
    /// requests ([`Scored`](llm::Scored)) overrides it.
    fn pick_or_shed(
        &self,
        table: &Self::Table,
        endpoints: &Candidates<'_, S>,
        req: &Req,
    ) -> Result<Option<usize>, crate::error::Saturated> {
        Ok(self.pick(table, endpoints, req))
    }
}

/// The endpoints a picker chooses from: their [`EndpointInfo`] and their services,
/// index for index, and the endpoints this request must not use.
///
/// An endpoint is *allowed* ([`is_allowed`](Candidates::is_allowed)) when its
/// weight is not 0, this request does not exclude it (a retry excludes the
/// endpoints it already tried) and, if an availability check is set, the
/// check passes (health checks set it).
///
/// Exclusions name endpoints by [`EndpointInfo::key_hash`], not by index: indices
/// change from one published set to the next, while a key's hash does not,
/// so a retry that reads a newer set still avoids the endpoints it tried.
pub struct Candidates<'a, S> {
    metas: &'a [EndpointInfo],
    services: &'a [S],
    excluded: &'a [u64],
    available: Option<fn(&S) -> bool>,
}

impl<S> fmt::Debug for Candidates<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Candidates")
            .field("metas", &self.metas)
            .field("excluded", &self.excluded)
            .field("checks_availability", &self.available.is_some())
            .finish()
    }
}

impl<S> Clone for Candidates<'_, S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for Candidates<'_, S> {}

impl<'a, S> Candidates<'a, S> {
    /// A view of `metas` and `services`; if their lengths differ, the longer is
    /// cut to the shorter.
    pub fn new(metas: &'a [EndpointInfo], services: &'a [S]) -> Self {
        let len = metas.len().min(services.len());
        Self {
            metas: &metas[..len],
            services: &services[..len],
            excluded: &[],
            available: None,
        }
    }

    /// The same endpoints, where endpoint `i` is allowed only while
    /// `available(&services[i])` holds. The balancer sets it to
    /// [`Endpoint::is_available`](crate::endpoint::Endpoint::is_available) for
    /// health-checked endpoints; it must be cheap (an atomic load).
    #[must_use]
    pub fn with_availability(mut self, available: fn(&S) -> bool) -> Self {
        self.available = Some(available);
        self
    }

    /// The same endpoints, with those whose [`EndpointInfo::key_hash`] is in
    /// `excluded` ruled out for this request (a retry uses it to avoid the
    /// endpoints it already tried). Checking is a linear scan of `excluded`:
    /// it is meant for the handful of endpoints one request has tried.
    #[must_use]
    pub fn excluding(mut self, excluded: &'a [u64]) -> Self {
        self.excluded = excluded;
        self
    }

    /// How many endpoints there are, allowed or not.
    pub fn len(&self) -> usize {
        self.metas.len()
    }

    /// Whether there are no endpoints at all.
    pub fn is_empty(&self) -> bool {
        self.metas.is_empty()
    }

    /// Every endpoint's [`EndpointInfo`], by index.
    pub fn metas(&self) -> &'a [EndpointInfo] {
        self.metas
    }

    /// Every endpoint's service, by index.
    pub fn services(&self) -> &'a [S] {
        self.services
    }

    /// Whether an endpoint of non-zero weight may still be ruled out for
    /// this request (by exclusion or by its availability); pickers use it to
    /// skip per-endpoint checks when nothing can be.
    pub fn has_exclusions(&self) -> bool {
        !self.excluded.is_empty() || self.available.is_some()
    }

    /// Whether endpoint `i` may take this request: it exists, its weight is
    /// not 0, it is not excluded and it is available.
    #[inline]
    pub fn is_allowed(&self, i: usize) -> bool {
        match self.metas.get(i) {
            Some(meta) => {
                meta.weight > 0
                    && !self.excluded.contains(&meta.key_hash)
                    && self
                        .available
                        .is_none_or(|available| available(&self.services[i]))
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn availability_rules_endpoints_out() {
        let metas = [
            EndpointInfo::new(1, 1),
            EndpointInfo::new(2, 1),
            EndpointInfo::new(3, 0),
        ];
        let services = [true, false, true];
        let plain = Candidates::new(&metas, &services);
        assert!(!plain.has_exclusions());
        assert!(plain.is_allowed(0) && plain.is_allowed(1));
        assert!(!plain.is_allowed(2), "weight 0 is never allowed");
        assert!(!plain.is_allowed(3), "out of range is never allowed");

        let gated = plain.with_availability(|up: &bool| *up);
        assert!(gated.has_exclusions());
        assert!(gated.is_allowed(0));
        assert!(!gated.is_allowed(1));
        // Exclusions name key hashes, not indices.
        assert!(!gated.excluding(&[1]).is_allowed(0));
        assert!(gated.excluding(&[0]).is_allowed(0));
    }

    #[test]
    fn every_picker_skips_unavailable_endpoints() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;

        #[derive(Clone)]
        struct Up(bool, Arc<AtomicUsize>);
        impl tower::load::Load for Up {
            type Metric = u32;
            fn load(&self) -> u32 {
                self.1.load(Ordering::Relaxed) as u32
            }
        }
        let metas: Vec<EndpointInfo> = (0..5)
            .map(|i| EndpointInfo::new(i * 7919, 1 + i as u32))
            .collect();
        let services: Vec<Up> = (0..5)
            .map(|i| Up(i % 2 == 0, Arc::new(AtomicUsize::new(0))))
            .collect();
        let endpoints = Candidates::new(&metas, &services).with_availability(|s: &Up| s.0);

        fn check<P: Pick<u64, Up>>(
            picker: P,
            endpoints: &Candidates<'_, Up>,
            metas: &[EndpointInfo],
        ) {
            let table = picker.prepare(metas);
            for key in 0..200u64 {
                let i = picker
                    .pick(&table, endpoints, &key)
                    .expect("an endpoint is up");
                assert!(i % 2 == 0, "picked unavailable endpoint {i}");
            }
        }
        check(RoundRobin::new(), &endpoints, &metas);
        check(WeightedRoundRobin::new(), &endpoints, &metas);
        check(LeastConnections::with_seed(1), &endpoints, &metas);
        check(P2c::with_seed(1), &endpoints, &metas);
        check(IpHash::with_key(|k: &u64| Some(*k)), &endpoints, &metas);
    }
}
