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
        let response = within("a request", pool.clone().oneshot(get(path)))
            .await
            .expect("answered");
        assert_eq!(response.status(), 200);
        let id = within("a body", read_body(response)).await.expect("a body");
        *seen.entry(id).or_default() += 1;
    }
    seen
}

/// Waits until the pool's balancer knows `n` backends.
async fn known(pool: &Balancer, n: usize) {
    within("discovery", pool.get_ref().wait_for(|keys| keys.len() == n)).await;
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

type Chunk = Result<http_body::Frame<bytes::Bytes>, tower_lb::BoxError>;
type Fed = http_body_util::StreamBody<futures_util::stream::BoxStream<'static, Chunk>>;

/// A request body fed by the test; it ends when the sender drops.
fn fed() -> (tokio::sync::mpsc::Sender<Chunk>, Fed) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    (tx, http_body_util::StreamBody::new(Box::pin(stream)))
}

/// Every backend's consecutive failures and ejections, by address.
fn failures(pool: &tower_lb::http::Balancer<Fed>) -> Vec<(u32, u32)> {
    pool.get_ref().read_endpoints(|keys, services| {
        keys.iter()
            .zip(services)
            .map(|(key, service)| {
                let health = service.health(*key);
                (health.consecutive_failures(), health.ejections())
            })
            .collect()
    })
}

#[tokio::test]
async fn a_failing_request_body_blames_no_backend_and_is_not_retried() {
    let fleet = backends(&["a", "b"]).await;
    let pool: tower_lb::http::Balancer<Fed> = Builder::new()
        .backends(fleet.iter().map(Backend::addr))
        .outlier_detection(OutlierDetection::new().consecutive_failures(1))
        .build()
        .expect("a valid preset");
    within("discovery", pool.get_ref().wait_for(|keys| keys.len() == 2)).await;
    for _ in 0..10 {
        // The caller's body fails half way: the caller's fault.
        let (tx, body) = fed();
        let request = http::Request::post("/echo").body(body).unwrap();
        let call = tokio::spawn(pool.clone().oneshot(request));
        tx.send(Ok(http_body::Frame::data(bytes::Bytes::from_static(
            b"half",
        ))))
        .await
        .unwrap();
        tx.send(Err("the client went away".into())).await.unwrap();
        let error = within("the call", call)
            .await
            .unwrap()
            .expect_err("the body failed");
        assert!(tower_lb::classify::is_request_fault(&*error), "{error}");
    }
    assert_eq!(failures(&pool), [(0, 0), (0, 0)], "no backend was blamed");
    let attempts: usize = fleet.iter().map(Backend::requests).sum();
    assert!(
        attempts <= 10,
        "not retried: {attempts} requests reached the backends"
    );
    // Both backends still take requests.
    let (tx, body) = fed();
    drop(tx);
    let response = within(
        "a request",
        pool.clone()
            .oneshot(http::Request::get("/").body(body).unwrap()),
    )
    .await
    .expect("answered");
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_slow_upload_is_not_timed_out_and_retry_after_pauses_a_backend() {
    // `a` answers 429 with a minute's `retry-after` (but for `/echo`).
    let fleet = [
        Backend::builder("a")
            .status(http::StatusCode::TOO_MANY_REQUESTS)
            .header("retry-after", "60")
            .start()
            .await,
        Backend::start("b").await,
    ];
    let pool: tower_lb::http::Balancer<Fed> = Builder::new()
        .backends(fleet.iter().map(Backend::addr))
        .picker(RoundRobin::new())
        .attempt_timeout(Duration::from_millis(300))
        .build()
        .expect("a valid preset");
    within("discovery", pool.get_ref().wait_for(|keys| keys.len() == 2)).await;

    // Uploading takes longer than the attempt timeout; the answer comes.
    // The pauses are the slowness under test (a real server needs real
    // time), not a wait for an event.
    let (tx, body) = fed();
    let request = http::Request::post("/echo").body(body).unwrap();
    let call = tokio::spawn(pool.clone().oneshot(request));
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        tx.send(Ok(http_body::Frame::data(bytes::Bytes::from_static(
            b"abc",
        ))))
        .await
        .unwrap();
    }
    drop(tx);
    let response = within("the upload", call).await.unwrap().expect("answered");
    assert_eq!(response.status(), 200);
    assert_eq!(read_body(response).await.unwrap(), "abcabcabcabc");

    // `a` asks for a minute's pause: round robin then sends everything to `b`.
    let get = |path: &str| {
        let (tx, body) = fed();
        drop(tx);
        http::Request::get(path).body(body).unwrap()
    };
    let mut busy_answers = 0;
    for _ in 0..2 {
        let response = within("a request", pool.clone().oneshot(get("/busy")))
            .await
            .unwrap();
        if response.status() == http::StatusCode::TOO_MANY_REQUESTS {
            busy_answers += 1;
        }
    }
    assert_eq!(
        busy_answers, 1,
        "only the first request met the busy backend"
    );
    let paused = pool.get_ref().read_endpoints(|keys, services| {
        let i = keys.iter().position(|key| *key == fleet[0].addr()).unwrap();
        services[i].health(keys[i]).paused_until()
    });
    assert!(paused.is_some(), "`a` is paused");
    let before = fleet[0].requests();
    for _ in 0..6 {
        let response = within("a request", pool.clone().oneshot(get("/")))
            .await
            .unwrap();
        assert_eq!(read_body(response).await.unwrap(), "b");
    }
    assert_eq!(
        fleet[0].requests(),
        before,
        "nothing reached the paused backend"
    );
}
