//! Retry decisions from tower-http's `classify`, against real axum servers
//! on 127.0.0.1: a classifier replaces the status set, and a non-idempotent
//! request is still resent only when it opts in.

mod support;

use http::StatusCode;
use tower::{Layer, ServiceExt};
use tower_http::classify::ServerErrorsAsFailures;
use tower_lb::pick::RoundRobin;
use tower_lb::retry::{RetryLayer, RetryNonIdempotent, RetryPolicy};

use support::retry::*;

/// Sends `n` requests one at a time; returns the statuses that came back
/// and how many attempts the servers saw.
async fn run(
    policy: RetryPolicy,
    method: &str,
    opt_in: bool,
    n: usize,
) -> (Vec<StatusCode>, usize) {
    let broken = answering(StatusCode::INTERNAL_SERVER_ERROR).await;
    let (a, b) = (
        answering(StatusCode::OK).await,
        answering(StatusCode::OK).await,
    );
    let balance = balance(RoundRobin::new(), &[broken.addr(), a.addr(), b.addr()]).await;
    let svc = RetryLayer::new(policy.budget_ratio(1.0)).layer(balance);
    let mut statuses = Vec::new();
    for _ in 0..n {
        let (mut req, _tried) = request(method, full("payload"));
        if opt_in {
            req.extensions_mut().insert(RetryNonIdempotent);
        }
        statuses.push(svc.clone().oneshot(req).await.unwrap().status());
    }
    (statuses, broken.requests() + a.requests() + b.requests())
}

fn count(statuses: &[StatusCode], status: StatusCode) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[tokio::test]
async fn a_500_is_retried_only_with_a_classifier() {
    // The default status set (502, 503, 504) lets a 500 through.
    let (statuses, attempts) = run(RetryPolicy::new(), "GET", false, 30).await;
    assert_eq!(count(&statuses, StatusCode::INTERNAL_SERVER_ERROR), 10);
    assert_eq!(attempts, 30);

    // tower-http's `ServerErrorsAsFailures` calls it a failure.
    let classified = RetryPolicy::new().classify(ServerErrorsAsFailures::new());
    let (statuses, attempts) = run(classified, "GET", false, 30).await;
    assert_eq!(count(&statuses, StatusCode::OK), 30);
    assert!(attempts > 30, "nothing was retried");
}

#[tokio::test]
async fn a_classified_post_is_resent_only_when_opted_in() {
    let classified = || RetryPolicy::new().classify(ServerErrorsAsFailures::new());
    let (statuses, attempts) = run(classified(), "POST", false, 30).await;
    assert_eq!(count(&statuses, StatusCode::INTERNAL_SERVER_ERROR), 10);
    assert_eq!(attempts, 30, "a POST was resent");

    let (statuses, attempts) = run(classified(), "POST", true, 30).await;
    assert_eq!(count(&statuses, StatusCode::OK), 30);
    assert!(attempts > 30);

    let every_classified = classified().retry_classified_non_idempotent(true);
    let (statuses, _) = run(every_classified, "POST", false, 30).await;
    assert_eq!(count(&statuses, StatusCode::OK), 30);
}
