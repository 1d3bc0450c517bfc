use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use tower::{service_fn, ServiceExt};

use super::*;
use crate::endpoint::{Endpoint, Weighted};
use crate::load::test_body::{channel_body, ChannelBody, Gated};
use crate::load::CompleteOnResponse;

const MS: Duration = Duration::from_millis(1);

/// An endpoint that takes the requested time to answer, with an empty body.
fn slow(
    default_rtt: Duration,
    decay: Duration,
) -> Latency<
    impl Service<Duration, Response = http::Response<Empty<Bytes>>, Error = Infallible> + Clone,
> {
    let svc = service_fn(|delay: Duration| async move {
        tokio::time::sleep(delay).await;
        Ok::<_, Infallible>(http::Response::new(Empty::new()))
    });
    Latency::new(svc, default_rtt, decay)
}

fn close(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() <= expected * 1e-3 + 1.0
}

#[tokio::test(start_paused = true)]
async fn default_rtt_applies_before_any_sample() {
    let svc = slow(DEFAULT_RTT, DEFAULT_DECAY);
    assert_eq!(svc.rtt_estimate(), DEFAULT_RTT);
    assert!(close(svc.load().get(), 30e6));
}

#[tokio::test(start_paused = true)]
async fn requests_in_flight_multiply_the_cost() {
    let mut svc = slow(100 * MS, DEFAULT_DECAY);
    let first = svc.call(Duration::from_secs(60));
    let second = svc.call(Duration::from_secs(60));
    assert_eq!(svc.in_flight(), 2);
    assert!(close(svc.load().get(), 3.0 * 100e6), "{:?}", svc.load());
    drop((first, second));
    assert_eq!(svc.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_slow_response_raises_the_cost_and_decay_lowers_it() {
    let mut svc = slow(10 * MS, Duration::from_secs(1));
    svc.ready().await.unwrap().call(500 * MS).await.unwrap();
    assert_eq!(svc.in_flight(), 0);
    assert_eq!(svc.rtt_estimate(), 500 * MS, "a peak replaces the estimate");
    let peak = svc.load();
    assert!(close(peak.get(), 500e6));

    tokio::time::advance(Duration::from_secs(1)).await;
    // A load read takes the time of the last request on this thread.
    assert_eq!(svc.load(), peak);
    let mut other = slow(10 * MS, Duration::from_secs(1));
    let _sent = other.call(Duration::from_secs(60));
    let decayed = svc.load();
    assert!(decayed < peak);
    assert!(
        close(decayed.get(), 500e6 / std::f64::consts::E),
        "{decayed:?}"
    );

    tokio::time::advance(Duration::from_secs(60)).await;
    // Reading the estimate reads the clock.
    assert!(svc.rtt_estimate() < MS);
    // Fully decayed, the cost still ranks by requests in flight.
    let _pending = svc.call(Duration::from_secs(60));
    assert_eq!(svc.load(), LatencyCost::of(2.0));
}

#[tokio::test(start_paused = true)]
async fn fast_responses_pull_the_estimate_down() {
    let mut svc = slow(10 * MS, Duration::from_secs(1));
    svc.call(500 * MS).await.unwrap();
    let after_peak = svc.rtt_estimate();
    for _ in 0..20 {
        tokio::time::advance(100 * MS).await;
        svc.call(MS).await.unwrap();
    }
    let after_fast = svc.rtt_estimate();
    assert!(after_fast < 20 * MS, "{after_peak:?} -> {after_fast:?}");
}

#[tokio::test(start_paused = true)]
async fn latency_ends_at_the_end_of_the_body() {
    let mut svc = Latency::new(
        service_fn(
            |body: ChannelBody| async move { Ok::<_, Infallible>(http::Response::new(body)) },
        ),
        MS,
        Duration::from_secs(10),
    );
    let (tx, body) = channel_body();
    let mut body = svc.call(body).await.unwrap().into_body();
    assert_eq!(svc.in_flight(), 1);
    tx.send(Ok(Bytes::from_static(b"first token"))).unwrap();
    body.frame().await.unwrap().unwrap();
    tokio::time::advance(Duration::from_secs(2)).await;
    drop(tx);
    assert!(body.frame().await.is_none());
    assert_eq!(svc.in_flight(), 0);
    assert_eq!(svc.rtt_estimate(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn a_failed_call_ends_its_round_trip() {
    let mut svc = Latency::with_completion(
        service_fn(|()| async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Err::<(), _>("refused")
        }),
        MS,
        Duration::from_secs(10),
        CompleteOnResponse::default(),
    );
    assert_eq!(svc.call(()).await.unwrap_err(), "refused");
    assert_eq!(svc.in_flight(), 0);
    // A failure ends the round trip too, and adds the failure penalty.
    assert_eq!(
        svc.rtt_estimate(),
        Duration::from_secs(3) + crate::load::DEFAULT_FAILURE_PENALTY
    );
}

#[tokio::test(start_paused = true)]
async fn clones_share_one_estimate_and_count() {
    let mut a = slow(10 * MS, Duration::from_secs(10));
    let b = a.clone();
    a.call(200 * MS).await.unwrap();
    assert_eq!(b.rtt_estimate(), 200 * MS);
    assert_eq!(b.requests(), 1);
    assert!(a.counter().same_as(&b.counter()));
}

#[tokio::test(start_paused = true)]
async fn zero_and_huge_durations_do_not_panic() {
    for (rtt, decay) in [
        (Duration::ZERO, Duration::ZERO),
        (Duration::MAX, Duration::MAX),
        (Duration::ZERO, Duration::MAX),
        (Duration::MAX, Duration::ZERO),
    ] {
        let mut svc = slow(rtt, decay);
        let before = svc.load().get();
        assert!(
            before.is_finite() && before >= 1.0,
            "{rtt:?} {decay:?}: {before}"
        );
        svc.call(5 * MS).await.unwrap();
        tokio::time::advance(Duration::from_secs(3600)).await;
        let after = svc.load().get();
        assert!(
            after.is_finite() && after >= 1.0,
            "{rtt:?} {decay:?}: {after}"
        );
        let _ = svc.rtt_estimate();
    }
    // A zero decay keeps only the latest sample once time has moved.
    let mut svc = slow(Duration::from_secs(1), Duration::ZERO);
    tokio::time::advance(MS).await;
    svc.call(5 * MS).await.unwrap();
    assert_eq!(svc.rtt_estimate(), 5 * MS);
}

#[test]
fn forwards_weight_and_availability() {
    let plain = Latency::new(Weighted::new((), 4), DEFAULT_RTT, DEFAULT_DECAY);
    assert_eq!(plain.weight(), 4);
    assert!(plain.is_available());
    const { assert!(!<Latency<Weighted<()>> as Endpoint>::CHECKS_AVAILABILITY) };

    let down = Latency::new(Gated(3, false), DEFAULT_RTT, DEFAULT_DECAY);
    const { assert!(<Latency<Gated> as Endpoint>::CHECKS_AVAILABILITY) };
    assert_eq!(down.weight(), 3);
    assert!(!down.is_available());
    assert_eq!(down.into_inner().weight(), 3);
}

#[test]
fn cost_converts_and_orders() {
    assert!(LatencyCost::of(1.0) < LatencyCost::of(2.0));
    assert_eq!(f64::from(LatencyCost::of(2.5)), 2.5);
    assert_eq!(LatencyCost::of(4.0).get(), 4.0);
}
