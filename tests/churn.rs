//! Endpoint churn under load: 20 000 requests from 64 tasks through retry,
//! a per-try timeout and the balancer over health checks and in-flight
//! counting, to real axum servers on 127.0.0.1, while endpoints are
//! inserted, replaced and removed hundreds of times.
//!
//! * No request fails.
//! * No attempt picked after a removal took effect reaches the removed
//!   endpoint (attempts are stamped right before their pick; a removal
//!   takes a stamp once the balancer has published the set without it).
//! * Afterwards nothing is left behind: the balancer and the health
//!   registry hold as many endpoints as at the start, health tasks match
//!   the endpoints and go to 0 with the balancer, the runtime's task count
//!   and the bytes the process holds come back to where they were.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tower_lb::health::{ActiveChecks, HealthConfig, HttpProbe, OutlierDetection};
use tower_lb::pick::P2c;
use tower_lb::retry::RetryPolicy;

use support::alloc::{allocated, peak, reset_peak};
use support::stress::*;
use support::{Backend, Seeded};

#[global_allocator]
static ALLOCATOR: support::alloc::Counting = support::alloc::Counting;

const REQUESTS: usize = 20_000;
const TASKS: usize = 64;
/// Endpoints in the set at the start and at the end.
const START: usize = 4;
/// Fewest endpoints the churn leaves in the set.
const FLOOR: usize = 2;
/// One change for every this many finished requests: 400 changes.
const PACE: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_under_load_loses_nothing_and_leaves_nothing() {
    let backends = support::backends(&["b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7"]).await;
    let addrs: Vec<SocketAddr> = backends.iter().map(Backend::addr).collect();
    let runtime = tokio::runtime::Handle::current();
    let tasks_before = runtime.metrics().num_alive_tasks();
    let bytes_before = allocated();
    reset_peak();
    let started = Instant::now();

    let health = HealthConfig::new()
        .active(
            ActiveChecks::new(HttpProbe::get("/"))
                .interval(Duration::from_millis(200))
                .timeout(Duration::from_secs(1))
                .seed(3),
        )
        .passive(OutlierDetection::new().consecutive_failures(5));
    let policy = RetryPolicy::new().seed(4);
    let stack = Stack::new(P2c::with_seed(5), health, policy, Duration::from_secs(5));
    let mut members: Vec<SocketAddr> = Vec::new();
    for &addr in &addrs[..START] {
        stack.insert(addr, 1).await;
        members.push(addr);
    }

    let (done, mut finished) = watch::channel(0usize);
    let load = tokio::spawn(load(stack.client.clone(), REQUESTS, TASKS, done));
    let mut rng = Seeded::new(11);
    let mut changes = 0;
    let mut replaced = 0;
    loop {
        let mark = (changes + 1) * PACE;
        let now = *support::within("load", finished.wait_for(|&n| n >= mark.min(REQUESTS)))
            .await
            .unwrap();
        if now >= REQUESTS {
            break;
        }
        let outside: Vec<SocketAddr> = addrs
            .iter()
            .copied()
            .filter(|a| !members.contains(a))
            .collect();
        let roll = rng.next_u64();
        if roll.is_multiple_of(8) {
            // Replace an endpoint: same key, new service, new weight.
            let addr = members[(roll >> 8) as usize % members.len()];
            stack.insert(addr, 1 + (roll >> 16) as u32 % 3).await;
            replaced += 1;
        } else if members.len() > FLOOR && (outside.is_empty() || roll.is_multiple_of(2)) {
            let addr = members.swap_remove((roll >> 8) as usize % members.len());
            stack.remove(addr).await;
        } else {
            let addr = outside[(roll >> 8) as usize % outside.len()];
            stack.insert(addr, 1 + (roll >> 16) as u32 % 3).await;
            members.push(addr);
        }
        changes += 1;
    }
    let outcome = support::within("the load", load)
        .await
        .expect("the load ran");
    let elapsed = started.elapsed();

    // Every request answered, whatever the churn.
    outcome.assert_all_answered(REQUESTS);
    assert!(changes >= 300, "only {changes} changes");

    // No attempt stamped after a removal took effect reached the endpoint.
    let late = stack.log.late();
    assert!(
        late.is_empty(),
        "{} attempts after removal: {:?}",
        late.len(),
        &late[..late.len().min(5)]
    );
    let attempts = stack.log.attempts();
    assert_eq!(
        attempts.len(),
        outcome.attempts,
        "every attempt reached an endpoint"
    );
    assert!(
        attempts.iter().all(|a| a.stamp != u64::MAX),
        "every attempt is stamped"
    );
    let attempted = attempts.len();
    drop((attempts, late));

    // Back to the starting set: as many endpoint records, health tasks and
    // endpoints in rotation as at the start.
    for &addr in &addrs {
        let wanted = addrs[..START].contains(&addr);
        if members.contains(&addr) && !wanted {
            stack.remove(addr).await;
        } else if !members.contains(&addr) && wanted {
            stack.insert(addr, 1).await;
        }
    }
    let registry = stack.registry.clone();
    assert_eq!(stack.balance.len(), START);
    assert_eq!(registry.len(), START);
    support::within("health tasks", registry.wait_for(|r| r.tasks() == START)).await;
    assert_eq!(registry.healthy(), START);

    // With the balancer gone, so are its tasks and its memory.
    let held_during = peak() - bytes_before;
    drop(stack);
    support::within("health tasks stop", registry.wait_for(|r| r.tasks() == 0)).await;
    drop(registry);
    // Nothing notifies when a task ends: yield until they have.
    support::within("runtime tasks", async {
        while runtime.metrics().num_alive_tasks() > tasks_before {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let tasks_after = runtime.metrics().num_alive_tasks();
    let bytes_after = allocated();
    let left = bytes_after.saturating_sub(bytes_before);

    let served: Vec<usize> = backends.iter().map(Backend::requests).collect();
    println!(
        "churn: {REQUESTS} requests, {} attempts, {changes} changes ({replaced} replacements) in {elapsed:.1?}; \
         served {served:?}; tasks {tasks_before} -> {tasks_after}; \
         memory {bytes_before} -> {bytes_after} bytes (peak {held_during} more)",
        attempted,
    );
    // Allocator caches and lazily made statics may keep a little; the run
    // allocated many megabytes, and an endpoint record alone is kilobytes.
    assert!(left < 64 * 1024, "{left} bytes left behind");
}
