//! Hedging through a real `Balance`: the copy goes to another endpoint, the
//! loser is cancelled and its in-flight count released, the budget and the
//! attempt cap hold, non-idempotent requests go once. Paused time: a timer
//! fires when every task waits, so no test sleeps.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tower::retry::budget::Budget;
use tower::util::BoxCloneService;
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_lb::balance::TriedEndpoints;
use tower_lb::discover::StaticList;
use tower_lb::hedge::{HedgeDelay, HedgeLayer, Idempotent};
use tower_lb::load::{CompleteOnResponse, Counter, InFlight};
use tower_lb::pick::RoundRobin;
use tower_lb::{Balance, BoxError};

const MS: Duration = Duration::from_millis(1);

/// What the test endpoints saw.
#[derive(Default)]
struct Log {
    calls: Vec<AtomicUsize>,
    /// Requests dropped before they answered, per endpoint.
    cancelled: Vec<AtomicUsize>,
}

/// Sets its flag when dropped: a request future that never finished.
struct Cancelled(Arc<Log>, usize, bool);

impl Drop for Cancelled {
    fn drop(&mut self) {
        if !self.2 {
            self.0.cancelled[self.1].fetch_add(1, Ordering::SeqCst);
        }
    }
}

type Answer = Pin<Box<dyn Future<Output = Result<usize, Infallible>> + Send>>;

/// `latencies[i]`: how long endpoint `i` takes (`None`: it never answers).
/// Each endpoint counts its requests in flight until the answer.
async fn fleet(latencies: &[Option<Duration>]) -> (Fleet, Arc<Log>, Vec<Counter>) {
    let n = latencies.len();
    let log = Arc::new(Log {
        calls: (0..n).map(|_| AtomicUsize::new(0)).collect(),
        cancelled: (0..n).map(|_| AtomicUsize::new(0)).collect(),
    });
    let mut counters = Vec::new();
    let services: Vec<_> = latencies
        .iter()
        .enumerate()
        .map(|(i, &latency)| {
            let log = Arc::clone(&log);
            let svc = service_fn(move |_req: u64| -> Answer {
                log.calls[i].fetch_add(1, Ordering::SeqCst);
                let guard = Cancelled(Arc::clone(&log), i, false);
                Box::pin(async move {
                    // The whole guard moves in, not just its flag.
                    let mut guard = guard;
                    match latency {
                        Some(latency) => tokio::time::sleep(latency).await,
                        None => std::future::pending::<()>().await,
                    }
                    guard.2 = true;
                    Ok(i)
                })
            });
            let svc = InFlight::with_completion(svc, CompleteOnResponse::default());
            counters.push(svc.counter());
            (i, svc)
        })
        .collect();
    let balance = Balance::new(StaticList::new(services), RoundRobin::new());
    balance.wait_for(|keys| keys.len() == n).await;
    (BoxCloneService::new(balance), log, counters)
}

type Fleet = BoxCloneService<u64, usize, BoxError>;

fn copy(req: &u64) -> Option<u64> {
    Some(*req)
}

fn calls(log: &Log) -> Vec<usize> {
    log.calls.iter().map(|c| c.load(Ordering::SeqCst)).collect()
}

#[tokio::test(start_paused = true)]
async fn the_copy_goes_to_another_endpoint_and_the_loser_is_cancelled() {
    // Round robin sends the first attempt to endpoint 0, which never
    // answers; the copy must skip it.
    let (balance, log, counters) = fleet(&[None, Some(5 * MS)]).await;
    let mut hedged = HedgeLayer::new(copy)
        .delay(HedgeDelay::Fixed(20 * MS))
        .layer(balance);
    let start = tokio::time::Instant::now();
    let answer = hedged.ready().await.unwrap().call(1).await.unwrap();
    assert_eq!(answer, 1, "the copy answered, from the other endpoint");
    assert_eq!(start.elapsed(), 25 * MS, "the copy left after the delay");
    assert_eq!(calls(&log), [1, 1]);
    assert_eq!(
        log.cancelled[0].load(Ordering::SeqCst),
        1,
        "the loser was dropped"
    );
    assert_eq!(
        counters[0].in_flight(),
        0,
        "and its in-flight count released"
    );
    assert_eq!(counters[1].in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_fast_answer_sends_no_copy() {
    let (balance, log, _) = fleet(&[Some(5 * MS), Some(5 * MS)]).await;
    let mut hedged = HedgeLayer::new(copy)
        .delay(HedgeDelay::Fixed(20 * MS))
        .layer(balance);
    for _ in 0..10 {
        hedged.ready().await.unwrap().call(1).await.unwrap();
    }
    assert_eq!(calls(&log), [5, 5]);
}

#[tokio::test(start_paused = true)]
async fn the_first_answer_wins_even_from_the_first_attempt() {
    // Endpoint 0 answers at 30 ms, the copy (sent at 20 ms to endpoint 1)
    // would at 120 ms: the original wins and the copy is cancelled.
    let (balance, log, counters) = fleet(&[Some(30 * MS), Some(100 * MS)]).await;
    let mut hedged = HedgeLayer::new(copy)
        .delay(HedgeDelay::Fixed(20 * MS))
        .layer(balance);
    assert_eq!(hedged.ready().await.unwrap().call(1).await.unwrap(), 0);
    assert_eq!(calls(&log), [1, 1]);
    assert_eq!(log.cancelled[1].load(Ordering::SeqCst), 1);
    assert_eq!(counters[1].in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn at_most_five_attempts_each_to_its_own_endpoint() {
    let (balance, log, counters) = fleet(&[None; 8]).await;
    let mut hedged = HedgeLayer::new(copy)
        .delay(HedgeDelay::Fixed(10 * MS))
        .max_attempts(9)
        .layer(balance);
    let call = hedged.ready().await.unwrap().call(1);
    let outcome = tokio::time::timeout(Duration::from_secs(1), call).await;
    assert!(outcome.is_err(), "no endpoint answers");
    // Five attempts (the cap of gRFC A6, whatever was asked), each to an
    // endpoint of its own; dropping the request cancelled all five.
    assert_eq!(calls(&log), [1, 1, 1, 1, 1, 0, 0, 0]);
    let cancelled: usize = log.cancelled.iter().map(|c| c.load(Ordering::SeqCst)).sum();
    assert_eq!(cancelled, 5);
    assert!(counters.iter().all(|c| c.in_flight() == 0));
}

/// A budget that allows `left` withdrawals and counts deposits.
#[derive(Default)]
struct Counted {
    left: AtomicUsize,
    deposits: AtomicUsize,
}

#[derive(Clone)]
struct SharedBudget(Arc<Counted>);

impl Budget for SharedBudget {
    fn deposit(&self) {
        self.0.deposits.fetch_add(1, Ordering::SeqCst);
    }

    fn withdraw(&self) -> bool {
        self.0
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

#[tokio::test(start_paused = true)]
async fn copies_draw_on_the_budget() {
    let (balance, log, _) = fleet(&[Some(50 * MS); 4]).await;
    let budget = Arc::new(Counted {
        left: AtomicUsize::new(3),
        ..Counted::default()
    });
    let mut hedged = HedgeLayer::new(copy)
        .delay(HedgeDelay::Fixed(10 * MS))
        .max_attempts(2)
        .budget(SharedBudget(Arc::clone(&budget)))
        .layer(balance);
    for _ in 0..10 {
        hedged.ready().await.unwrap().call(1).await.unwrap();
    }
    // Ten requests, every one slow enough to hedge; the budget allowed 3.
    let total: usize = calls(&log).iter().sum();
    assert_eq!(total, 13);
    assert_eq!(budget.deposits.load(Ordering::SeqCst), 10);
    assert_eq!(budget.left.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn the_default_budget_bounds_a_slow_fleet() {
    // Every request is slow; tower's budget (10 % plus 10 a second) keeps the
    // copies to a fraction however many requests there are.
    let (balance, log, _) = fleet(&[Some(50 * MS); 4]).await;
    let mut hedged = HedgeLayer::new(copy)
        .delay(HedgeDelay::Fixed(10 * MS))
        .layer(balance);
    for _ in 0..500 {
        hedged.ready().await.unwrap().call(1).await.unwrap();
    }
    let total: usize = calls(&log).iter().sum();
    assert!(total > 500 && total <= 500 + 50 + 10 * 30, "{total}");
}

#[tokio::test(start_paused = true)]
async fn a_percentile_delay_waits_for_answers_then_follows_them() {
    let (balance, log, _) = fleet(&[Some(10 * MS), Some(10 * MS)]).await;
    let mut hedged = HedgeLayer::new(copy)
        .delay(HedgeDelay::Percentile {
            percentile: 95.0,
            min_samples: 20,
        })
        .layer(balance);
    assert_eq!(hedged.current_delay(), None);
    for _ in 0..20 {
        hedged.ready().await.unwrap().call(1).await.unwrap();
    }
    let delay = hedged.current_delay().expect("20 answers are known");
    assert!(delay >= 9 * MS && delay <= 12 * MS, "{delay:?}");
    assert_eq!(calls(&log).iter().sum::<usize>(), 20, "no copy before");
}

#[tokio::test(start_paused = true)]
async fn errors_leave_the_other_attempts_running() {
    // Endpoint 0 fails after 30 ms, once the copy to endpoint 1 is out: the
    // copy's answer is the request's.
    let log = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&log);
    let services = (0..2usize).map(move |i| {
        let seen = Arc::clone(&seen);
        let svc = service_fn(move |_req: u64| {
            seen.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(if i == 0 { 30 * MS } else { 40 * MS }).await;
                if i == 0 {
                    Err::<usize, BoxError>("refused".into())
                } else {
                    Ok(i)
                }
            }
        });
        (i, svc)
    });
    let balance = Balance::new(StaticList::new(services), RoundRobin::new());
    balance.wait_for(|keys| keys.len() == 2).await;
    let mut hedged = HedgeLayer::new(copy)
        .delay(HedgeDelay::Fixed(20 * MS))
        .max_attempts(2)
        .layer(balance);
    assert_eq!(hedged.ready().await.unwrap().call(1).await.unwrap(), 1);
    assert_eq!(log.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn non_idempotent_requests_go_once_unless_opted_in() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let services = (0..2usize).map(move |i| {
        let counted = Arc::clone(&counted);
        let svc = service_fn(move |_req: http::Request<String>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(50 * MS).await;
                Ok::<_, Infallible>(i)
            }
        });
        (i, svc)
    });
    let balance = Balance::new(StaticList::new(services), RoundRobin::new());
    balance.wait_for(|keys| keys.len() == 2).await;
    let post = || {
        http::Request::post("/orders")
            .body(String::from("{}"))
            .unwrap()
    };
    let fixed = HedgeDelay::Fixed(10 * MS);

    let mut once = HedgeLayer::new(Idempotent::new())
        .delay(fixed)
        .max_attempts(2)
        .layer(balance.clone());
    once.ready().await.unwrap().call(post()).await.unwrap();
    assert_eq!(calls.swap(0, Ordering::SeqCst), 1);

    let get = http::Request::get("/orders").body(String::new()).unwrap();
    once.ready().await.unwrap().call(get).await.unwrap();
    assert_eq!(calls.swap(0, Ordering::SeqCst), 2);

    let mut opted = HedgeLayer::new(Idempotent::new().non_idempotent(true))
        .delay(fixed)
        .max_attempts(2)
        .layer(balance);
    opted.ready().await.unwrap().call(post()).await.unwrap();
    assert_eq!(calls.swap(0, Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_retry_layers_attempt_set_is_shared() {
    // A layer above made its attempt set current, having tried endpoint 1
    // (the only one that answers): the hedge's attempts are recorded in that
    // set, and neither goes to endpoint 1.
    let (balance, log, _) = fleet(&[None, Some(MS), None]).await;
    let tried = TriedEndpoints::new();
    let key_of_1 = {
        // The balancer records the key hash of what it picks: learn it.
        let probe = TriedEndpoints::new();
        let mut b = balance.clone();
        drop(probe.scope(|| b.call(0)));
        drop(probe.scope(|| b.call(0)));
        probe.last().unwrap()
    };
    tried.record(key_of_1);
    let mut hedged = HedgeLayer::new(copy)
        .delay(HedgeDelay::Fixed(10 * MS))
        .max_attempts(2)
        .layer(balance);
    let call = tried.scope(|| hedged.call(1));
    let outcome = tokio::time::timeout(Duration::from_secs(1), call).await;
    assert!(outcome.is_err(), "endpoints 0 and 2 never answer");
    // The probe's picks never called an endpoint (its futures were
    // dropped unpolled).
    assert_eq!(calls(&log), [1, 0, 1]);
    assert_eq!(tried.picks(), 3);
}
