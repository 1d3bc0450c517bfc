//! Peak-EWMA does not mistake fast failures for a fast endpoint.

use std::convert::Infallible;
use std::time::Duration;

use tower::{service_fn, Service, ServiceExt};
use tower_lb::load::{Latency, Load, DEFAULT_DECAY};

fn server(
    status: u16,
    takes: Duration,
) -> impl Service<http::Request<()>, Response = http::Response<String>, Error = Infallible> + Clone
{
    service_fn(move |_: http::Request<()>| async move {
        tokio::time::sleep(takes).await;
        let mut answer = http::Response::new(String::new());
        *answer.status_mut() = http::StatusCode::from_u16(status).unwrap();
        Ok::<_, Infallible>(answer)
    })
}

#[tokio::test(start_paused = true)]
async fn fast_503_and_429_answers_do_not_lower_the_cost() {
    let start = Duration::from_millis(50);
    for status in [503, 429, 500] {
        let mut failing = Latency::new(
            server(status, Duration::from_millis(1)),
            start,
            DEFAULT_DECAY,
        );
        let mut healthy = Latency::new(server(200, Duration::from_millis(1)), start, DEFAULT_DECAY);
        for _ in 0..20 {
            drop(
                failing
                    .ready()
                    .await
                    .unwrap()
                    .call(http::Request::new(()))
                    .await
                    .unwrap(),
            );
            drop(
                healthy
                    .ready()
                    .await
                    .unwrap()
                    .call(http::Request::new(()))
                    .await
                    .unwrap(),
            );
        }
        // The healthy endpoint's estimate fell towards 1 ms; the failing
        // one's grew by the penalty (100 ms) at each failure, less decay.
        assert!(
            healthy.rtt_estimate() < start,
            "{:?}",
            healthy.rtt_estimate()
        );
        assert!(
            failing.rtt_estimate() > Duration::from_secs(1),
            "{status}: {:?}",
            failing.rtt_estimate()
        );
        assert!(failing.load() > healthy.load());
    }
}

#[tokio::test(start_paused = true)]
async fn the_penalty_is_a_setting_and_zero_still_never_lowers() {
    let start = Duration::from_millis(50);
    let mut failing = Latency::new(server(503, Duration::from_millis(1)), start, DEFAULT_DECAY)
        .failure_penalty(Duration::ZERO);
    for _ in 0..20 {
        drop(
            failing
                .ready()
                .await
                .unwrap()
                .call(http::Request::new(()))
                .await
                .unwrap(),
        );
    }
    // Only the decay over the 20 ms that passed moves it.
    let estimate = failing.rtt_estimate();
    assert!(
        estimate > Duration::from_millis(49) && estimate <= start,
        "{estimate:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_call_counts_as_a_failure() {
    let start = Duration::from_millis(50);
    let broken = service_fn(|_: ()| async { Err::<(), _>("refused") });
    let mut failing = Latency::with_completion(
        broken,
        start,
        DEFAULT_DECAY,
        tower_lb::load::CompleteOnResponse::default(),
    );
    for _ in 0..3 {
        assert!(failing.ready().await.unwrap().call(()).await.is_err());
    }
    assert!(
        failing.rtt_estimate() >= Duration::from_millis(340),
        "{:?}",
        failing.rtt_estimate()
    );
}
