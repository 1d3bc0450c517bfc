//! The HTTP preset against real backends on 127.0.0.1: one named type, the
//! picker, retries past a dead backend, and an attempt timeout that health
//! sees.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use tower::ServiceExt;
use tower_lb::health::{HealthState, OutlierDetection};
use tower_lb::http::{Balancer, BuildError, Builder};
use tower_lb::pick::RoundRobin;

use support::*;

/// Sends `n` GETs of `path` one after another; tallies the answering ids.
async fn tally_preset(pool: &Balancer, n: usize, path: &str) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let response = bounded("a request", pool.clone().oneshot(get(path)))
            .await
            .expect("answered");
        assert_eq!(response.status(), 200);
        let id = bounded("a body", read_body(response))
            .await
            .expect("a body");
        *seen.entry(id).or_default() += 1;
    }
    seen
}

/// Waits until the pool's balancer knows `n` backends.
async fn known(pool: &Balancer, n: usize) {
    bounded("discovery", pool.get_ref().wait_for(|keys| keys.len() == n)).await;
}

#[tokio::test]
async fn the_preset_balances_with_the_picker_it_is_given() {
    let fleet = backends(&["a", "b", "c"]).await;
    let pool: Balancer = Builder::new()
        .backends(fleet.iter().map(Backend::addr))
        .picker(RoundRobin::new())
        .build()
        .expect("a valid preset");
    known(&pool, 3).await;
    assert_eq!(
        tally_preset(&pool, 300, "/").await,
        counts(&[("a", 100), ("b", 100), ("c", 100)])
    );
}

#[tokio::test]
async fn a_dead_backend_costs_no_request() {
    let fleet = backends(&["a", "b", "c"]).await;
    let pool: Balancer = Builder::new()
        .backends(fleet.iter().map(Backend::addr))
        .build()
        .expect("a valid preset");
    known(&pool, 3).await;
    fleet[1].stop().await;
    let seen = tally_preset(&pool, 200, "/").await;
    assert_eq!(seen.values().sum::<usize>(), 200);
    assert!(!seen.contains_key("b"), "{seen:?}");
}

#[tokio::test]
async fn attempts_that_time_out_eject_a_hanging_backend() {
    // `b` holds every `/slow` request at its gate, which is never opened.
    let fleet = backends(&["a", "b"]).await;
    fleet[0].slow().open();
    let pool: Balancer = Builder::new()
        .backends(fleet.iter().map(Backend::addr))
        .picker(RoundRobin::new())
        .attempt_timeout(Duration::from_millis(100))
        .outlier_detection(OutlierDetection::new().consecutive_failures(2))
        .build()
        .expect("a valid preset");
    known(&pool, 2).await;
    // Every GET is answered: a timed-out attempt is retried on `a`.
    let seen = tally_preset(&pool, 6, "/slow").await;
    assert_eq!(seen, counts(&[("a", 6)]));
    let hanging = fleet[1].addr();
    let state = pool.get_ref().read_endpoints(|keys, services| {
        let i = keys.iter().position(|key| *key == hanging).expect("known");
        services[i].health(hanging).state()
    });
    assert_eq!(state, HealthState::Ejected, "timeouts count as failures");
    // Ejected: the next requests go to `a` at once, with no timeout to wait.
    assert_eq!(tally_preset(&pool, 4, "/slow").await, counts(&[("a", 4)]));
    assert!(fleet[1].held() <= 3, "held: {}", fleet[1].held());
}

#[tokio::test]
async fn a_preset_without_backends_is_a_typed_error() {
    let error = Builder::<http_body_util::Full<bytes::Bytes>>::new()
        .build()
        .map(|_| ())
        .expect_err("no backends");
    assert!(matches!(error, BuildError::NoBackends), "{error}");
    let error = Builder::<http_body_util::Full<bytes::Bytes>>::new()
        .backend("127.0.0.1:1".parse().unwrap())
        .attempt_timeout(Duration::ZERO)
        .build()
        .map(|_| ())
        .expect_err("a zero timeout");
    assert!(matches!(error, BuildError::Invalid(_)), "{error}");
    let error = Builder::<http_body_util::Full<bytes::Bytes>>::new()
        .backend("127.0.0.1:1".parse().unwrap())
        .health_path("no-slash")
        .build()
        .map(|_| ())
        .expect_err("a bad path");
    assert!(matches!(error, BuildError::Health(_)), "{error}");
}
