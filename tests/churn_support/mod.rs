//! Endpoint churn under load, for any discovery source: real backends on
//! 127.0.0.1, 64 tasks sending requests through one balancer, and a
//! driver that adds, drains and removes endpoints through the source.
//!
//! * No request fails.
//! * No request picked after a drain or a removal took effect reaches the
//!   endpoint: requests are stamped from one clock right before their pick,
//!   and a drain or removal takes a stamp once the balancer has published
//!   the set that says so.
//! * Requests in flight on draining and removed endpoints finish (they are
//!   among the requests that must not fail).
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use tower::{Service, ServiceExt};
use tower_lb::endpoint::Weighted;
use tower_lb::pick::RoundRobin;
use tower_lb::{Balance, BoxError};

use crate::support::{self, Backend, ReqBody};

const STAMP: &str = "x-stamp";

/// When an endpoint stopped taking new requests, on the shared clock
/// (`u64::MAX`: it takes them).
#[derive(Debug)]
struct Marks {
    off: AtomicU64,
}

/// A backend's client that checks every request's stamp against its marks.
#[derive(Clone, Debug)]
pub struct Stamped {
    inner: support::Endpoint,
    marks: Arc<Marks>,
    violations: Arc<AtomicUsize>,
    drained: Arc<AtomicUsize>,
}

impl Service<Request<ReqBody>> for Stamped {
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Incoming>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let stamp: u64 = req
            .headers()
            .get(STAMP)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(0);
        if stamp > self.marks.off.load(Ordering::SeqCst) {
            self.violations.fetch_add(1, Ordering::SeqCst);
        }
        let answer = self.inner.call(req);
        let (marks, drained) = (Arc::clone(&self.marks), Arc::clone(&self.drained));
        Box::pin(async move {
            let answer = answer.await;
            // Picked before the endpoint drained or went, answered after.
            if answer.is_ok() && marks.off.load(Ordering::SeqCst) != u64::MAX {
                drained.fetch_add(1, Ordering::SeqCst);
            }
            answer
        })
    }
}

/// The balancer every churn test drives.
pub type ChurnBalance = Balance<SocketAddr, Weighted<Stamped>, RoundRobin>;

/// Backends, the clock and the services made for them.
#[derive(Clone)]
pub struct Harness {
    pub backends: Arc<Vec<Backend>>,
    clock: Arc<AtomicU64>,
    current: Arc<Mutex<HashMap<SocketAddr, Arc<Marks>>>>,
    violations: Arc<AtomicUsize>,
    drained: Arc<AtomicUsize>,
}

/// What the driver asks of the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Backend `i` is ready.
    Add(usize),
    /// Backend `i` drains: no new requests, those in flight finish.
    Drain(usize),
    /// Backend `i` is gone.
    Remove(usize),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Absent,
    Ready,
    Draining,
}

/// Where the churn ended up.
#[derive(Debug)]
pub struct Report {
    pub changes: usize,
    pub requests: usize,
    pub failed: usize,
    pub to_removed: usize,
    /// Requests answered by an endpoint after it drained or went (picked
    /// before): they finished rather than failed.
    pub finished_while_draining: usize,
    pub elapsed: Duration,
}

impl Harness {
    pub async fn start(n: usize) -> Self {
        let ids: Vec<String> = (0..n).map(|i| format!("b{i}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        Self {
            backends: Arc::new(support::backends(&ids).await),
            clock: Arc::new(AtomicU64::new(1)),
            current: Arc::default(),
            violations: Arc::default(),
            drained: Arc::default(),
        }
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        self.backends[i].addr()
    }

    /// The `make` of a source: a checked client for a backend's address.
    pub fn make(&self) -> impl FnMut(SocketAddr) -> Stamped + Send + Unpin + 'static {
        let current = Arc::clone(&self.current);
        let violations = Arc::clone(&self.violations);
        let drained = Arc::clone(&self.drained);
        move |addr| {
            let marks = Arc::new(Marks {
                off: AtomicU64::new(u64::MAX),
            });
            current.lock().unwrap().insert(addr, Arc::clone(&marks));
            Stamped {
                inner: support::Endpoint::new(addr),
                marks,
                violations: Arc::clone(&violations),
                drained: Arc::clone(&drained),
            }
        }
    }

    fn mark_off(&self, addr: SocketAddr) {
        if let Some(marks) = self.current.lock().unwrap().get(&addr) {
            let now = self.clock.fetch_add(1, Ordering::SeqCst);
            let _ = marks
                .off
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |off| Some(off.min(now)));
        }
    }

    /// `changes` changes through `apply` under a 64-task load; `start`
    /// backends are added first (and count as changes).
    pub async fn churn<F, Fut>(
        &self,
        balance: &ChurnBalance,
        changes: usize,
        seed: u64,
        mut apply: F,
    ) -> Report
    where
        F: FnMut(Op) -> Fut,
        Fut: Future<Output = ()>,
    {
        let n = self.backends.len();
        let mut states = vec![State::Absent; n];
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let mut done = 0;
        // Two ready endpoints before the load starts, and always after.
        for (i, state) in states.iter_mut().enumerate().take(2) {
            self.step(balance, &mut apply, Op::Add(i)).await;
            *state = State::Ready;
            done += 1;
        }
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let mut balance = balance.clone();
            let (stop, requests, failed, clock) = (
                Arc::clone(&stop),
                Arc::clone(&requests),
                Arc::clone(&failed),
                Arc::clone(&self.clock),
            );
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let mut req = support::get("/delay/2");
                    let svc = balance.ready().await.expect("the balancer is always ready");
                    let stamp = clock.fetch_add(1, Ordering::SeqCst);
                    req.headers_mut().insert(STAMP, stamp.into());
                    let ok = match svc.call(req).await {
                        Ok(response) => {
                            response.status().is_success()
                                && support::body_string(response).await.is_ok()
                        }
                        Err(_) => false,
                    };
                    requests.fetch_add(1, Ordering::SeqCst);
                    if !ok {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }));
        }
        let mut rng = support::Seeded::new(seed);
        while done < changes {
            let i = (rng.next_u64() % n as u64) as usize;
            let ready = states.iter().filter(|s| **s == State::Ready).count();
            let op = match states[i] {
                State::Absent => Op::Add(i),
                State::Ready if ready <= 2 => continue,
                State::Ready if rng.next_u64().is_multiple_of(3) => Op::Remove(i),
                State::Ready => Op::Drain(i),
                State::Draining => Op::Remove(i),
            };
            self.step(balance, &mut apply, op).await;
            states[i] = match op {
                Op::Add(_) => State::Ready,
                Op::Drain(_) => State::Draining,
                Op::Remove(_) => State::Absent,
            };
            done += 1;
        }
        stop.store(true, Ordering::SeqCst);
        for task in tasks {
            support::within("a load task ends", task).await.unwrap();
        }
        Report {
            changes: done,
            requests: requests.load(Ordering::SeqCst),
            failed: failed.load(Ordering::SeqCst),
            to_removed: self.violations.load(Ordering::SeqCst),
            finished_while_draining: self.drained.load(Ordering::SeqCst),
            elapsed: started.elapsed(),
        }
    }

    /// Applies `op` and waits until the balancer has published it.
    async fn step<F, Fut>(&self, balance: &ChurnBalance, apply: &mut F, op: Op)
    where
        F: FnMut(Op) -> Fut,
        Fut: Future<Output = ()>,
    {
        apply(op).await;
        let (i, want): (usize, Option<u32>) = match op {
            Op::Add(i) => (i, Some(1)),
            Op::Drain(i) => (i, Some(0)),
            Op::Remove(i) => (i, None),
        };
        let addr = self.addr(i);
        support::within(
            &format!("{op:?} takes effect"),
            balance.wait_for(|_| {
                let weight = balance
                    .endpoints()
                    .into_iter()
                    .find(|(key, _)| *key == addr)
                    .map(|(_, weight)| weight);
                match want {
                    Some(0) => weight == Some(0),
                    Some(_) => weight.is_some_and(|w| w > 0),
                    None => weight.is_none(),
                }
            }),
        )
        .await;
        if want != Some(1) {
            self.mark_off(addr);
        }
    }
}

/// Asserts the churn's promises and prints its numbers.
pub fn check(source: &str, report: &Report) {
    println!("{source} churn: {report:?}");
    assert!(report.changes >= 1000, "{report:?}");
    assert!(report.requests > 0, "{report:?}");
    assert_eq!(report.failed, 0, "failed requests: {report:?}");
    assert_eq!(
        report.to_removed, 0,
        "requests to removed or draining endpoints: {report:?}"
    );
}
