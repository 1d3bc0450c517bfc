//! Prefix affinity: send a prompt where its prefix was sent before, so the
//! server finds it in its KV cache and skips that part of the prefill.
//!
//! [`PrefixAffinity`] is a [`Scorer`] and a [`ScoreHook`] for the
//! [`Scored`](crate::pick::llm::Scored) picker. It keeps, for each endpoint, a
//! bounded index of the prompt blocks ([`PromptBlocks`]) recently sent
//! there, fed by [`ScoreHook::before_send`] with the endpoint picked. An
//! endpoint scores the share of the request's leading blocks its index
//! holds: 1 when the whole prompt was sent there before, 0 when not even
//! the first block was.
//!
//! **Imbalance gate.** Affinity alone piles a popular prefix onto one
//! endpoint. When, among the endpoints eligible for a pick, the busiest has
//! more than [`PrefixConfig::balance_abs`] requests in flight beyond the
//! idlest *and* more than [`PrefixConfig::balance_rel`] times as many, every
//! endpoint scores 0 for that pick, so the picker's load scorers alone
//! choose: the least loaded endpoint gets the request, and its index learns
//! the prefix. The hot prefix spreads. The counts are the client's own
//! requests in flight ([`Candidate::fleet_in_flight`]), which the
//! endpoints' [`InFlight`](crate::load::InFlight) wrappers hold until each
//! answer ends, whatever ends it.
//!
//! For prefix affinity and load weighed in one unit, time, see
//! [`Scored::ttft`](crate::pick::llm::Scored::ttft) instead.
//!
//! # Cost
//!
//! * **score**: one hash-map lookup for the endpoint, then `O(log b)`
//!   lookups in its index for a prompt of `b` blocks (bisection over the
//!   chained hashes), each touching one cache line. Without a lock or an
//!   allocation. A whole pick with a 4,000-token prompt (250 blocks), the
//!   queue and KV scorers and the hook: about 0.9 µs at 8 endpoints and
//!   5 µs at 64 (`benches/prefix.rs`, numbers in `docs/benchmarks.md`).
//! * **before_send**: inserts the prompt's blocks (at most
//!   [`BlockConfig::max_blocks`]) in the picked endpoint's index: `O(b)`.
//! * **memory**: fixed per endpoint: [`PrefixConfig::index_blocks`] × 16
//!   bytes ([`PrefixAffinity::bytes_per_block`]), 500 kB by default,
//!   allocated when the endpoint joins the set and freed when it leaves.
//!
//! # Weights
//!
//! Endpoint weights play no part in the score.
//!
//! # No endpoints, missing prompt
//!
//! With no endpoints there is nothing to score. A request without
//! [`PromptBlocks`] (not an OpenAI-style body, or a prompt shorter than one
//! block) scores 0 everywhere and leaves the indexes as they are.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use tower_lb::endpoint::Weighted;
//! use tower_lb::load::InFlight;
//! use tower_lb::pick::llm::{BlockConfig, PrefixAffinity, PromptBlocks, Scored, Weights};
//! use tower_lb::pick::{Candidates, EndpointInfo, Pick, Prepare};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! type Req = http::Request<()>;
//! let prefix = Arc::new(PrefixAffinity::new());
//! let scored: Scored<Req, Weighted<InFlight<()>>> =
//!     prefix.install(Scored::with_seed(1).weights(Weights { kv_cache: 0.0, ..Weights::default() }), 3.0);
//!
//! let metas = [EndpointInfo::new(1, 1), EndpointInfo::new(2, 1), EndpointInfo::new(3, 1)];
//! let services: Vec<_> = (0..3).map(|_| Weighted::new(InFlight::new(()), 1)).collect();
//! let table = scored.prepare(&metas);
//! let endpoints = Candidates::new(&metas, &services);
//!
//! let system_prompt = "You are a careful assistant. ".repeat(20);
//! let request = |question: &str| {
//!     let blocks = PromptBlocks::hash(BlockConfig::default(), "llama", [&system_prompt, question]);
//!     let mut request = http::Request::new(());
//!     request.extensions_mut().insert(blocks);
//!     request
//! };
//! let first = scored.pick(&table, &endpoints, &request("What is a monad?")).unwrap();
//! // The same system prompt goes where it went before.
//! assert_eq!(scored.pick(&table, &endpoints, &request("And a functor?")), Some(first));
//! # }
//! ```

mod blocks;
mod session;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::llm::{Candidate, ScoreHook, Scored, Scorer};
use super::EndpointInfo;
use crate::endpoint::prefill::BlockIndex;

#[cfg(feature = "llm")]
pub(crate) use self::blocks::PromptHasher;
pub use self::blocks::{BlockConfig, PromptBlocks};
pub use self::session::{SessionAffinity, SessionKey};

/// A request whose prompt blocks the prefix scorer can read.
///
/// Implemented for `http::Request<B>` (a [`PromptBlocks`] in its
/// extensions) and for [`PromptBlocks`] itself.
pub trait PromptRequest {
    /// The prompt's blocks, if known.
    fn prompt_blocks(&self) -> Option<&PromptBlocks>;
}

impl<B> PromptRequest for http::Request<B> {
    fn prompt_blocks(&self) -> Option<&PromptBlocks> {
        self.extensions().get::<PromptBlocks>()
    }
}

impl PromptRequest for PromptBlocks {
    fn prompt_blocks(&self) -> Option<&PromptBlocks> {
        Some(self)
    }
}

/// Settings of [`PrefixAffinity`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PrefixConfig {
    /// Blocks each endpoint's index holds (default 31,250: 2,000,000 bytes
    /// of prompt at 64 bytes a block, in 500 kB of index).
    pub index_blocks: usize,
    /// The gate trips only when the busiest endpoint has more than this many
    /// requests in flight beyond the idlest (default 8: on eight model
    /// servers with batches of 8, 4 tripped so often that affinity was
    /// lost, see `docs/benchmarks.md`; SGLang's default, 64, never trips on a
    /// small fleet).
    pub balance_abs: usize,
    /// ...and more than this many times as many (default 1.5).
    pub balance_rel: f64,
}

impl Default for PrefixConfig {
    fn default() -> Self {
        Self {
            index_blocks: 31_250,
            balance_abs: 8,
            balance_rel: 1.5,
        }
    }
}

/// What [`PrefixAffinity`] knows of one endpoint.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PrefixStats {
    /// The endpoint's [`EndpointInfo::key_hash`].
    pub key_hash: u64,
    /// Blocks in its index.
    pub indexed_blocks: usize,
    /// Blocks its index can hold.
    pub capacity_blocks: usize,
    /// Share of the prompt blocks sent to it that its index held already:
    /// the cache hit rate the router expects there.
    pub hit_rate: f64,
}

struct EndpointPrefix {
    index: BlockIndex,
    sent_blocks: AtomicU64,
    matched_blocks: AtomicU64,
}

/// Prefix-affinity scorer and its hook: see the module docs of `pick`
/// (prefix affinity).
pub struct PrefixAffinity {
    config: PrefixConfig,
    endpoints: ArcSwap<HashMap<u64, Arc<EndpointPrefix>>>,
    /// Whether the imbalance gate was tripped at the last pick.
    tripped: AtomicBool,
}

impl Default for PrefixAffinity {
    fn default() -> Self {
        Self::new()
    }
}

impl PrefixAffinity {
    /// Default [`PrefixConfig`].
    #[must_use]
    pub fn new() -> Self {
        Self::with_config(PrefixConfig::default())
    }

    /// With `config`.
    #[must_use]
    pub fn with_config(config: PrefixConfig) -> Self {
        Self {
            config,
            endpoints: ArcSwap::from_pointee(HashMap::new()),
            tripped: AtomicBool::new(false),
        }
    }

    /// Bytes of memory one indexed block takes.
    pub const fn bytes_per_block() -> usize {
        BlockIndex::bytes_per_block()
    }

    /// Adds this scorer with `weight` and its hook to `scored`.
    #[must_use]
    pub fn install<Req, S>(self: &Arc<Self>, scored: Scored<Req, S>, weight: f64) -> Scored<Req, S>
    where
        Req: PromptRequest + 'static,
        S: 'static,
    {
        scored
            .shared_scorer(weight, Arc::clone(self) as Arc<dyn Scorer<Req, S>>)
            .hook(Arc::clone(self) as Arc<dyn ScoreHook<Req>>)
    }

    /// The settings.
    pub fn config(&self) -> PrefixConfig {
        self.config
    }

    /// Whether the imbalance gate is open (affinity off) now.
    pub fn gate_tripped(&self) -> bool {
        self.tripped.load(Relaxed)
    }

    /// Each endpoint's index and counts, in no particular order.
    pub fn stats(&self) -> Vec<PrefixStats> {
        self.endpoints
            .load()
            .iter()
            .map(|(&key_hash, e)| {
                let sent = e.sent_blocks.load(Relaxed);
                PrefixStats {
                    key_hash,
                    indexed_blocks: e.index.len(),
                    capacity_blocks: e.index.capacity(),
                    hit_rate: if sent == 0 {
                        0.0
                    } else {
                        e.matched_blocks.load(Relaxed) as f64 / sent as f64
                    },
                }
            })
            .collect()
    }

    /// The endpoint set is now `endpoints`: indexes of endpoints that left
    /// are dropped, new endpoints get an empty one. Called by the picker's
    /// `prepare`, off the request path.
    pub fn set_endpoints(&self, endpoints: &[EndpointInfo]) {
        let old = self.endpoints.load();
        let next: HashMap<u64, Arc<EndpointPrefix>> = endpoints
            .iter()
            .map(|meta| {
                let key = meta.key_hash();
                let state = old.get(&key).cloned().unwrap_or_else(|| {
                    Arc::new(EndpointPrefix {
                        index: BlockIndex::new(self.config.index_blocks),
                        sent_blocks: AtomicU64::new(0),
                        matched_blocks: AtomicU64::new(0),
                    })
                });
                (key, state)
            })
            .collect();
        self.endpoints.store(Arc::new(next));
    }

    /// Whether a fleet whose endpoints have from `min` to `max` requests in
    /// flight is too unbalanced for affinity.
    fn unbalanced(&self, (min, max): (usize, usize)) -> bool {
        max.saturating_sub(min) > self.config.balance_abs
            && max as f64 > min as f64 * self.config.balance_rel
    }
}

impl fmt::Debug for PrefixAffinity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrefixAffinity")
            .field("config", &self.config)
            .field("endpoints", &self.endpoints.load().len())
            .field("tripped", &self.gate_tripped())
            .finish()
    }
}

impl<Req: PromptRequest, S> Scorer<Req, S> for PrefixAffinity {
    fn score(&self, request: &Req, candidate: &Candidate<'_, S>) -> f64 {
        let tripped = self.unbalanced(candidate.fleet_in_flight);
        if self.tripped.load(Relaxed) != tripped {
            self.tripped.store(tripped, Relaxed);
        }
        if tripped {
            return 0.0;
        }
        let Some(blocks) = request.prompt_blocks().filter(|b| !b.is_empty()) else {
            return 0.0;
        };
        let endpoints = self.endpoints.load();
        let Some(endpoint) = endpoints.get(&candidate.meta.key_hash()) else {
            return 0.0;
        };
        endpoint.index.leading(blocks.hashes()) as f64 / blocks.len() as f64
    }
}

impl<Req: PromptRequest> ScoreHook<Req> for PrefixAffinity {
    fn endpoints_changed(&self, endpoints: &[EndpointInfo]) {
        self.set_endpoints(endpoints);
    }

    fn before_send(&self, request: &Req, endpoint: EndpointInfo) {
        let endpoints = self.endpoints.load();
        let Some(state) = endpoints.get(&endpoint.key_hash()) else {
            return;
        };
        if let Some(blocks) = request.prompt_blocks().filter(|b| !b.is_empty()) {
            let hashes = blocks.hashes();
            let matched = state.index.leading(hashes);
            state.sent_blocks.fetch_add(hashes.len() as u64, Relaxed);
            state.matched_blocks.fetch_add(matched as u64, Relaxed);
            state.index.insert(hashes);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::endpoint::Weighted;
    use crate::load::{CompleteOnResponse, InFlight};
    use crate::pick::{llm::Weights, Candidates, Pick, Prepare};

    type Req = http::Request<()>;
    type Service = Weighted<InFlight<Never, CompleteOnResponse>>;

    /// A server that never answers: a call holds its in-flight count until the
    /// call's future is dropped.
    #[derive(Clone, Debug)]
    struct Never;

    impl tower::Service<Req> for Never {
        type Response = ();
        type Error = std::convert::Infallible;
        type Future = std::future::Pending<Result<(), Self::Error>>;

        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Req) -> Self::Future {
            std::future::pending()
        }
    }

    /// Sends `request` to endpoint `i` as the balancer would after the pick.
    fn send(services: &[Service], i: usize, request: Req) -> impl Drop {
        use tower::Service as _;
        struct Held<F>(#[allow(dead_code)] F);
        impl<F> Drop for Held<F> {
            fn drop(&mut self) {}
        }
        Held(services[i].clone().call(request))
    }

    fn request(system: &str, question: &str) -> Req {
        let blocks = PromptBlocks::hash(BlockConfig::default(), "m", [system, question]);
        let mut request = http::Request::new(());
        request.extensions_mut().insert(blocks);
        request
    }

    fn fleet(n: u64) -> (Vec<EndpointInfo>, Vec<Service>) {
        let metas = (1..=n).map(|k| EndpointInfo::new(k * 1000, 1)).collect();
        let services = (0..n)
            .map(|_| {
                Weighted::new(
                    InFlight::with_completion(Never, CompleteOnResponse::default()),
                    1,
                )
            })
            .collect();
        (metas, services)
    }

    fn picker(prefix: &Arc<PrefixAffinity>) -> Scored<Req, Service> {
        // Load from the client's own counts only: none of these services is
        // called, so every endpoint looks idle to the load scorers.
        let weights = Weights {
            kv_cache: 0.0,
            ..Weights::default()
        };
        prefix.install(Scored::with_seed(3).weights(weights), 3.0)
    }

    #[test]
    fn the_same_system_prompt_keeps_its_endpoint_while_balanced() {
        let prefix = Arc::new(PrefixAffinity::new());
        let scored = picker(&prefix);
        let (metas, services) = fleet(8);
        scored.prepare(&metas);
        let endpoints = Candidates::new(&metas, &services);
        let system = "You are a terse assistant who answers in French. ".repeat(40);
        let first = scored
            .pick(&(), &endpoints, &request(&system, "q0"))
            .unwrap();
        for k in 1..50 {
            let picked = scored.pick(&(), &endpoints, &request(&system, &format!("q{k}")));
            assert_eq!(picked, Some(first), "request {k}");
            // Each answer ends before the next request: the fleet stays balanced.
            drop(send(&services, first, request(&system, "")));
        }
        assert!(!prefix.gate_tripped());
        let stats = prefix.stats();
        let hot = stats
            .iter()
            .find(|s| s.key_hash == metas[first].key_hash())
            .unwrap();
        assert!(hot.hit_rate > 0.9, "{hot:?}");
    }

    #[test]
    fn a_hot_prefix_spreads_once_the_gate_trips() {
        let prefix = Arc::new(PrefixAffinity::with_config(PrefixConfig {
            balance_abs: 4,
            ..PrefixConfig::default()
        }));
        // Affinity alone, so that only the gate moves the hot prefix.
        let scored: Scored<Req, Service> = prefix.install(
            Scored::with_seed(3).weights(Weights {
                queue: 0.0,
                kv_cache: 0.0,
                in_flight: 0.0,
                ..Weights::default()
            }),
            3.0,
        );
        let (metas, services) = fleet(8);
        scored.prepare(&metas);
        let endpoints = Candidates::new(&metas, &services);
        let system = "A popular system prompt that every tenant uses. ".repeat(40);
        let mut picked = Vec::new();
        let mut held = Vec::new();
        // No answer ends: the first endpoint's count grows until the gate trips.
        for k in 0..40 {
            let req = request(&system, &format!("q{k}"));
            let i = scored.pick(&(), &endpoints, &req).unwrap();
            held.push(send(&services, i, req));
            picked.push(i);
        }
        let first = picked[0];
        assert!(picked[..5].iter().all(|&i| i == first), "{picked:?}");
        let elsewhere = picked.iter().filter(|&&i| i != first).count();
        assert!(
            elsewhere >= 20,
            "the hot prefix stayed on one endpoint: {picked:?}"
        );
        let mut distinct = picked.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() >= 4, "{picked:?}");
    }

    #[test]
    fn removing_an_endpoint_drops_its_index() {
        let prefix = Arc::new(PrefixAffinity::new());
        let scored = picker(&prefix);
        let (metas, services) = fleet(3);
        scored.prepare(&metas);
        let endpoints = Candidates::new(&metas, &services);
        let system = "Context shared by a whole conversation. ".repeat(40);
        let first = scored
            .pick(&(), &endpoints, &request(&system, "q"))
            .unwrap();
        let gone = metas[first].key_hash();
        let indexed = |prefix: &PrefixAffinity, key: u64| {
            prefix
                .stats()
                .iter()
                .find(|s| s.key_hash == key)
                .map(|s| s.indexed_blocks)
        };
        assert!(indexed(&prefix, gone).unwrap() > 20);

        let rest: Vec<EndpointInfo> = metas
            .iter()
            .copied()
            .filter(|m| m.key_hash() != gone)
            .collect();
        scored.prepare(&rest);
        assert_eq!(prefix.stats().len(), 2);
        assert_eq!(indexed(&prefix, gone), None);

        // Back again, it starts empty.
        scored.prepare(&metas);
        assert_eq!(indexed(&prefix, gone), Some(0));
    }

    #[test]
    fn a_request_without_a_prompt_scores_nothing_and_changes_nothing() {
        let prefix = Arc::new(PrefixAffinity::new());
        let scored = picker(&prefix);
        let (metas, services) = fleet(2);
        scored.prepare(&metas);
        let endpoints = Candidates::new(&metas, &services);
        assert!(scored
            .pick(&(), &endpoints, &http::Request::new(()))
            .is_some());
        assert!(prefix.stats().iter().all(|s| s.indexed_blocks == 0));
    }

    #[test]
    fn blocks_are_bounded_and_chained() {
        let config = BlockConfig::default();
        let long = "z".repeat(1 << 20);
        let blocks = PromptBlocks::hash(config, "m", [&long]);
        assert_eq!(blocks.len(), 256);
        let a = PromptBlocks::hash(config, "m", ["a".repeat(64) + &"b".repeat(64)]);
        let b = PromptBlocks::hash(config, "m", ["c".repeat(64) + &"b".repeat(64)]);
        assert_ne!(a.hashes()[1], b.hashes()[1]);
        assert!(PromptBlocks::hash(config, "m", ["short"]).is_empty());
    }

    #[test]
    fn session_affinity_follows_the_cookie() {
        let sessions = Arc::new(SessionAffinity::new(
            SessionKey::Cookie("chat".into()),
            1024,
        ));
        let scored: Scored<Req, Service> = sessions.install(Scored::with_seed(5), 10.0);
        let (metas, services) = fleet(8);
        scored.prepare(&metas);
        let endpoints = Candidates::new(&metas, &services);
        let with_cookie = |value: &str| {
            http::Request::builder()
                .header("cookie", format!("theme=dark; chat={value}"))
                .body(())
                .unwrap()
        };
        let first = scored.pick(&(), &endpoints, &with_cookie("abc")).unwrap();
        for _ in 0..20 {
            assert_eq!(
                scored.pick(&(), &endpoints, &with_cookie("abc")),
                Some(first)
            );
        }
    }
}
