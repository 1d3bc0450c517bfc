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
