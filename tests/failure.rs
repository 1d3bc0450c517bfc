//! Failure under load: 10 000 requests from 64 tasks through retry, a
//! per-try timeout and the balancer over health checks, while of six
//! backends one is killed, one hangs (reads requests, never answers) and
//! one answers 500.
//!
//! * No request fails: each failed attempt is retried on another endpoint.
//! * Each bad backend leaves rotation (active probes and outlier
//!   detection), and after that no attempt picked reaches it.
//! * Until then, the attempts it gets are bounded: by the failures outlier
//!   detection counts plus the requests in flight for the backends that
//!   fail fast, and by the requests that can be caught by the per-try
//!   timeout during the probes' detection time for the one that hangs.
//!   The numbers are printed.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::StatusCode;
use tokio::sync::watch;
use tower_lb::health::{ActiveChecks, HealthConfig, HealthRegistry, HttpProbe, OutlierDetection};
use tower_lb::pick::RoundRobin;
use tower_lb::retry::RetryPolicy;

use support::stress::*;
use support::Backend;

const REQUESTS: usize = 10_000;
const TASKS: usize = 64;
/// The backends go bad once this many requests have finished.
const BAD_AT: usize = 2_000;
const PER_TRY: Duration = Duration::from_millis(250);
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
const PROBE_TIMEOUT: Duration = Duration::from_millis(100);
const FALL: u32 = 2;
const CONSECUTIVE_FAILURES: u32 = 3;

/// Waits until `addr` is out of rotation; returns the tick taken then and
/// how long it took from `since`.
async fn out_of_rotation(
    registry: &HealthRegistry<SocketAddr>,
    clock: &Clock,
    addr: SocketAddr,
    since: Instant,
) -> (u64, Duration) {
    let out =
        |r: &HealthRegistry<SocketAddr>| r.get(&addr).is_some_and(|e| !e.state().in_rotation());
    support::within("leaving rotation", registry.wait_for(out)).await;
    (clock.tick(), since.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_backends_under_load_fail_no_request() {
    let good = support::backends(&["g0", "g1", "g2"]).await;
    let killed = Backend::start("killed").await;
    let hanging = Backend::start("hanging").await;
    let failing = Backend::start("failing").await;
    let bad = [
        ("killed", killed.addr()),
        ("hanging", hanging.addr()),
        ("failing", failing.addr()),
    ];

    let health = HealthConfig::new()
        .active(
            ActiveChecks::new(HttpProbe::get("/"))
                .interval(PROBE_INTERVAL)
                .timeout(PROBE_TIMEOUT)
                .fall(FALL)
                .seed(1),
        )
        .passive(
            OutlierDetection::new()
                .consecutive_failures(CONSECUTIVE_FAILURES)
                .base_ejection(Duration::from_secs(120))
                .max_ejection(Duration::from_secs(120)),
        );
    // Up to three bad endpoints in a row, then a good one: four attempts.
    // The budget is not what is tested here: it allows every retry.
    let policy = RetryPolicy::new()
        .max_attempts(4)
        .retry_statuses([
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::BAD_GATEWAY,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::GATEWAY_TIMEOUT,
        ])
        .budget_ratio(1000.0)
        .budget_floor(10_000)
        .backoff(Duration::from_millis(2), Duration::from_millis(20))
        .seed(2);
    // Round robin ignores load, so health and retries do all the work.
    let stack = Stack::new(RoundRobin::new(), health, policy, PER_TRY);
    let addrs: Vec<SocketAddr> = good
        .iter()
        .map(Backend::addr)
        .chain(bad.iter().map(|&(_, addr)| addr))
        .collect();
    for &addr in &addrs {
        stack.insert(addr, 1).await;
    }

    let started = Instant::now();
    let (done, mut finished) = watch::channel(0usize);
    let load = tokio::spawn(load(stack.client.clone(), REQUESTS, TASKS, done));
    support::within("the first requests", finished.wait_for(|&n| n >= BAD_AT))
        .await
        .unwrap();

    // Everything goes bad at once; the tick marks the moment.
    let bad_since = stack.clock.tick();
    let went_bad = Instant::now();
    let arrived_before = [0, hanging.requests(), failing.requests()];
    hanging.set_hang(true);
    failing.set_status(StatusCode::INTERNAL_SERVER_ERROR);
    killed.stop().await;

    // Each leaves rotation; its tick marks the moment that took effect.
    let (registry, clock) = (&stack.registry, &stack.clock);
    let (k, h, f) = tokio::join!(
        out_of_rotation(registry, clock, bad[0].1, went_bad),
        out_of_rotation(registry, clock, bad[1].1, went_bad),
        out_of_rotation(registry, clock, bad[2].1, went_bad),
    );
    let left: Vec<_> = bad
        .iter()
        .zip([k, h, f])
        .map(|(&(name, addr), (tick, detected))| (name, addr, tick, detected))
        .collect();
    let arrived_out = [0, hanging.requests(), failing.requests()];

    let outcome = support::within("the load", load)
        .await
        .expect("the load ran");
    let elapsed = started.elapsed();
    outcome.assert_all_answered(REQUESTS);

    for (i, &(name, addr, out_tick, detected)) in left.iter().enumerate() {
        let before_out = stack.log.count(addr, bad_since, out_tick);
        let after_out = stack.log.count(addr, out_tick, u64::MAX);
        let arrived = arrived_out[i] - arrived_before[i];
        println!(
            "failure: {name} left rotation {detected:?} after going bad; \
             {before_out} attempts picked meanwhile ({arrived} requests arrived, probes included), \
             {after_out} after"
        );
        assert_eq!(after_out, 0, "{name}: attempts after it left rotation");
        // Attempts picked while it was bad but in rotation.
        let bound = if name == "hanging" {
            // Each task can be caught once per per-try timeout while the
            // probes take their time; the rest of its attempts were
            // already on their way.
            let rounds = detected.as_millis() / PER_TRY.as_millis() + 2;
            TASKS * rounds as usize
        } else {
            // Failures in a row eject it; meanwhile at most every task
            // had an attempt on the way, and as many that came back as
            // successes from before it went bad.
            CONSECUTIVE_FAILURES as usize + 2 * TASKS
        };
        assert!(
            before_out <= bound,
            "{name}: {before_out} attempts, bound {bound}"
        );
    }
    // Detection itself is bounded by the probe settings: two failed
    // probes a tenth of a second apart, on a loaded machine.
    for &(name, _, _, detected) in &left {
        assert!(
            detected < Duration::from_secs(5),
            "{name} left rotation after {detected:?}"
        );
    }
    let retries = outcome.attempts - outcome.sent;
    println!(
        "failure: {REQUESTS} requests, {retries} retries in {elapsed:.1?}; served by the good backends {:?}",
        good.iter().map(Backend::requests).collect::<Vec<_>>(),
    );
}
