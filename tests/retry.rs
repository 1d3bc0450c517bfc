//! The retry layer against real axum servers on 127.0.0.1.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http::{Response, StatusCode};
use hyper::body::Incoming;
use tokio::task::JoinSet;
use tower::util::BoxCloneService;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_lb::balance::TriedEndpoints;
use tower_lb::pick::{key::Header, Candidates, EndpointInfo, IpHash, Pick, RoundRobin};
use tower_lb::retry::{RetryLayer, RetryNonIdempotent, RetryPolicy};
use tower_lb::BoxError;

use support::retry::*;
use support::{refusing_addr, Backend};

/// What one request came back with, and where it went.
struct Outcome {
    status: Result<StatusCode, String>,
    tried: TriedEndpoints,
}

/// Sends `n` requests made by `make`, 50 at a time.
async fn send_all<S, F>(svc: S, n: usize, make: F) -> Vec<Outcome>
where
    S: Service<Req0, Response = Response<Incoming>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
    F: Fn(usize) -> (Req0, TriedEndpoints),
{
    // Boxed, so the spawned future's `Send` does not hinge on a generic bound.
    let svc = BoxCloneService::new(svc);
    let mut outcomes = Vec::with_capacity(n);
    for start in (0..n).step_by(50) {
        let mut batch = JoinSet::new();
        for i in start..n.min(start + 50) {
            let (req, tried) = make(i);
            let svc = svc.clone();
            batch.spawn(async move {
                let status = svc.oneshot(req).await.map(|r| r.status());
                Outcome {
                    status: status.map_err(|e| e.to_string()),
                    tried,
                }
            });
        }
        while let Some(outcome) = batch.join_next().await {
            outcomes.push(outcome.unwrap());
        }
    }
    outcomes
}

fn count(outcomes: &[Outcome], status: StatusCode) -> usize {
    outcomes
        .iter()
        .filter(|o| o.status.as_ref() == Ok(&status))
        .count()
}

/// One endpoint of three refuses connections, and nothing takes it out of
/// the set (no health checks here). Round robin hands it every other first
/// attempt (a retry's turn that falls on it passes to the next endpoint), so
/// half the requests need a retry: the budget is raised to cover them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_retried_elsewhere() {
    let (a, b) = (
        answering(StatusCode::OK).await,
        answering(StatusCode::OK).await,
    );
    let dead = refusing_addr();
    let balance = balance(RoundRobin::new(), &[a.addr(), dead, b.addr()]).await;
    let policy = RetryPolicy::new().budget_ratio(1.0).seed(1);
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .service(balance);

    let outcomes = send_all(svc, 1000, |_| request("GET", empty())).await;

    assert_eq!(count(&outcomes, StatusCode::OK), 1000);
    assert_eq!(
        a.requests() + b.requests(),
        1000,
        "one answered attempt per request"
    );
    let dead = key_hash(dead);
    let mut retried = 0;
    for outcome in &outcomes {
        let hashes = tried_hashes(&outcome.tried);
        assert!(
            !hashes[1..].contains(&dead),
            "a retry went to the dead endpoint"
        );
        if hashes.len() == 2 {
            assert_eq!(
                hashes[0], dead,
                "only the dead endpoint's requests are retried"
            );
            retried += 1;
        }
    }
    assert!((250..=600).contains(&retried), "{retried} retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_answers_are_retried_for_idempotent_requests_only() {
    let sick = answering(StatusCode::SERVICE_UNAVAILABLE).await;
    let (a, b) = (
        answering(StatusCode::OK).await,
        answering(StatusCode::OK).await,
    );
    let addrs = [sick.addr(), a.addr(), b.addr()];
    let policy = || RetryPolicy::new().budget_ratio(1.0).seed(2);
    let stack = |balance, policy| {
        ServiceBuilder::new()
            .layer(RetryLayer::new(policy))
            .service(balance)
    };

    // Idempotent methods: every request ends on a healthy endpoint.
    let svc = stack(balance(RoundRobin::new(), &addrs).await, policy());
    for method in ["GET", "PUT", "DELETE"] {
        let outcomes = send_all(svc.clone(), 150, |_| request(method, empty())).await;
        assert_eq!(count(&outcomes, StatusCode::OK), 150, "{method}");
    }

    // POST, not opted in: a 503 comes back as it is, and nothing is resent.
    let before = sick.requests() + a.requests() + b.requests();
    let svc = stack(balance(RoundRobin::new(), &addrs).await, policy());
    let outcomes = send_all(svc, 150, |_| request("POST", full("order"))).await;
    let unavailable = count(&outcomes, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(unavailable + count(&outcomes, StatusCode::OK), 150);
    assert_eq!(unavailable, 50, "round robin: a third of the requests");
    assert_eq!(
        sick.requests() + a.requests() + b.requests() - before,
        150,
        "no POST resent"
    );

    // POST opted in per request, then per policy: all succeed.
    let svc = stack(balance(RoundRobin::new(), &addrs).await, policy());
    let outcomes = send_all(svc, 150, |_| {
        let (mut req, tried) = request("POST", full("order"));
        req.extensions_mut().insert(RetryNonIdempotent);
        (req, tried)
    })
    .await;
    assert_eq!(count(&outcomes, StatusCode::OK), 150);
    let svc = stack(
        balance(RoundRobin::new(), &addrs).await,
        policy().retry_non_idempotent(true),
    );
    let outcomes = send_all(svc, 150, |_| request("POST", full("order"))).await;
    assert_eq!(count(&outcomes, StatusCode::OK), 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_fleet_sees_no_more_than_the_budget() {
    let backends = [
        answering(StatusCode::SERVICE_UNAVAILABLE).await,
        answering(StatusCode::BAD_GATEWAY).await,
        answering(StatusCode::GATEWAY_TIMEOUT).await,
    ];
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr()).collect();
    let (requests, ratio, floor, window) = (1000, 0.2f32, 1, 60);
    let policy = RetryPolicy::new()
        .max_attempts(10)
        .budget_ratio(ratio)
        .budget_floor(floor)
        .budget_window(Duration::from_secs(u64::from(window)))
        .backoff(Duration::ZERO, Duration::ZERO);
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .service(balance(RoundRobin::new(), &addrs).await);

    let outcomes = send_all(svc, requests, |_| request("GET", empty())).await;

    assert_eq!(count(&outcomes, StatusCode::OK), 0);
    let attempts: usize = backends.iter().map(Backend::requests).sum();
    let bound = requests as f64 * (1.0 + f64::from(ratio)) + (floor * window) as f64;
    assert!(attempts as f64 <= bound, "{attempts} attempts > {bound}");
    // And the budget is used, not just respected by retrying nothing.
    let retries = attempts - requests;
    assert!(
        retries as f64 >= 0.9 * f64::from(ratio) * requests as f64,
        "{retries} retries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_bodies_are_replayed_byte_for_byte() {
    let backends = [
        answering(StatusCode::SERVICE_UNAVAILABLE).await,
        answering(StatusCode::SERVICE_UNAVAILABLE).await,
    ];
    let addrs = [backends[0].addr(), backends[1].addr()];
    let policy = RetryPolicy::new()
        .max_attempts(3)
        .backoff(Duration::ZERO, Duration::ZERO);
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(policy).buffer_unknown_length(true))
        .service(balance(RoundRobin::new(), &addrs).await);

    let data = pattern(10_000);
    for body in [full(data.clone()), streamed(data.clone(), 1000)] {
        let (req, tried) = request("PUT", body);
        let response = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        // Three attempts over two endpoints: both tried, then one again.
        assert_eq!((tried.picks(), tried.len()), (3, 2));
    }
    let seen: Vec<_> = backends.iter().flat_map(|b| b.bodies()).collect();
    assert_eq!(seen.len(), 6);
    assert!(
        seen.iter().all(|body| *body == data),
        "a replayed body differs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_and_streamed_bodies_are_sent_once_whole() {
    let backends = [
        answering(StatusCode::SERVICE_UNAVAILABLE).await,
        answering(StatusCode::SERVICE_UNAVAILABLE).await,
    ];
    let addrs = [backends[0].addr(), backends[1].addr()];
    let big = pattern(1024 * 1024);
    let small = pattern(1000);
    let cases = [
        // Known to be over the cap: not buffered at all.
        (false, full(big.clone()), big.clone()),
        // Unknown length, buffered until it crossed the cap, then spilled.
        (true, streamed(big.clone(), 16 * 1024), big.clone()),
        // Unknown length and not buffered: a stream is sent once.
        (false, streamed(small.clone(), 100), small.clone()),
    ];
    for (buffer_streams, body, expected) in cases {
        let before: Vec<usize> = backends.iter().map(Backend::requests).collect();
        let layer = RetryLayer::new(RetryPolicy::new())
            .body_limit(64 * 1024)
            .buffer_unknown_length(buffer_streams);
        let svc = layer.layer(balance(RoundRobin::new(), &addrs).await);
        let (req, tried) = request("PUT", body);
        let response = svc.oneshot(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let grew: Vec<&Backend> = backends
            .iter()
            .zip(&before)
            .filter(|(b, &n)| b.requests() > n)
            .map(|(b, _)| b)
            .collect();
        assert_eq!(grew.len(), 1, "sent to one endpoint");
        let bodies = grew[0].bodies();
        assert_eq!(bodies.last(), Some(&expected), "the body arrived whole");
        let total: usize = backends.iter().map(Backend::requests).sum();
        assert_eq!(total, before.iter().sum::<usize>() + 1, "sent once");
        assert_eq!(tried.picks(), 1, "one attempt");
    }
}

/// Retries with a hash picker go to the key's next endpoint along the
/// picker's schedule: the same one for every request of that key, and the
/// one the picker itself names when the first is ruled out.
async fn hash_retry_walks_on<P>(picker: P, twin: P)
where
    P: Pick<Req, tower_lb::endpoint::Weighted<Endpoint>> + Pick<http::Request<()>, ()>,
{
    let sick = answering(StatusCode::SERVICE_UNAVAILABLE).await;
    let mut others = Vec::new();
    for _ in 0..4 {
        others.push(answering(StatusCode::OK).await);
    }
    let mut addrs = vec![sick.addr()];
    addrs.extend(others.iter().map(|b| b.addr()));
    let balance = balance(picker, &addrs).await;

    // The same set, as the balancer indexes it, for asking the twin picker.
    let keys: Vec<SocketAddr> = balance.endpoints().into_iter().map(|(k, _)| k).collect();
    let metas: Vec<EndpointInfo> = keys
        .iter()
        .map(|&k| EndpointInfo::new(key_hash(k), 1))
        .collect();
    let table = twin.prepare(&metas);
    let sick_hash = key_hash(sick.addr());
    let services = vec![(); metas.len()];

    let svc = RetryLayer::new(RetryPolicy::new().budget_ratio(1.0)).layer(balance);
    let mut walked = 0;
    for user in 0..200 {
        let make = || {
            let (mut req, tried) = request("GET", empty());
            req.headers_mut()
                .insert("x-user", user.to_string().parse().unwrap());
            (req, tried)
        };
        let (req, tried) = make();
        let response = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let hashes = tried_hashes(&tried);
        if hashes[0] != sick_hash {
            assert_eq!(hashes.len(), 1);
            continue;
        }
        walked += 1;
        assert_eq!(hashes.len(), 2);
        assert_ne!(hashes[1], sick_hash, "retried on the same endpoint");
        let (probe, _) = make();
        let excluded = [sick_hash];
        let rest = Candidates::new(&metas, &services).excluding(&excluded);
        let next = twin.pick(&table, &rest, &probe.map(|_| ()));
        assert_eq!(next.map(|i| metas[i].key_hash()), Some(hashes[1]));
        // Again: the same key retries to the same next endpoint.
        let (req, again) = make();
        svc.clone().oneshot(req).await.unwrap();
        assert_eq!(tried_hashes(&again), hashes);
    }
    assert!(
        walked > 10,
        "only {walked} keys hit the failing endpoint first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_hash_retries_walk_to_the_next_endpoint() {
    let by_user = || IpHash::with_key(Header::new(http::HeaderName::from_static("x-user")));
    hash_retry_walks_on(by_user(), by_user()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_retries_walk_the_ring() {
    use tower_lb::pick::ConsistentHash;
    let by_user = || ConsistentHash::new(Header::new(http::HeaderName::from_static("x-user")));
    hash_retry_walks_on(by_user(), by_user()).await;
}
