//! What the integration tests share: the one backend server (HTTP or
//! gRPC, on 127.0.0.1), the one bounded wait ([`within`]), the one
//! counting allocator ([`alloc`]), an HTTP client endpoint per backend,
//! and ways to drive a balancer.
//!
//! Every single-file test includes it with `mod support;` and uses a part
//! of it; `tests/dns` and `tests/proxy` include it with `#[path]`. Parts
//! for one family of tests live in submodules named after it: [`grpc`],
//! [`health`], [`model_server`], [`prop`], [`retry`], [`stress`],
//! [`tower_http`].
#![allow(dead_code, unused_imports, unreachable_pub)]

pub mod alloc;
pub mod answer;
mod client;
mod counted;
mod discover;
pub mod examples;
mod fleet;
pub mod grpc;
pub mod health;
mod keyed;
pub mod model_server;
pub mod prop;
pub mod retry;
mod server;
pub mod stress;
pub mod tower_http;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tower::{Service, ServiceExt};
use tower_lb::endpoint::Weighted;
use tower_lb::BoxError;

pub use self::client::{Endpoint, ReqBody};
pub use self::counted::{
    counters, fetch, in_flight, merge_tallies, read_body, spawn_fetch_tally, start, Counted,
    HasCounter,
};
pub use self::discover::{scripted, Probe, Script, Scripted, Seen};
pub use self::keyed::{answers, picked};
pub use self::server::{Backend, Builder, Gate, BACKEND_HEADER};

/// The endpoint service as discovery sources wrap it.
pub type Ep = Weighted<Endpoint>;

/// A balancer over HTTP endpoints keyed by name.
pub type HttpBalance<P> = tower_lb::Balance<&'static str, Ep, P>;

/// How long any single step of a test may take, in real time, before the
/// test fails instead of hanging; far above what a step needs.
pub const STEP: Duration = Duration::from_secs(20);

/// Runs `fut`, failing the test with `what` if it has not finished within
/// [`STEP`] of real time.
///
/// The bound is kept by one watchdog thread for the whole test binary, not
/// by a tokio timer, so it holds the same on a real clock, on a paused one
/// (which it does not stop from advancing by itself) and on a frozen one
/// (which never advances by itself). It bounds a wait for an event; it is
/// never a test's assertion about how long something takes.
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    let (expired, expiry) = tokio::sync::oneshot::channel::<()>();
    watchdog()
        .send((std::time::Instant::now() + STEP, expired))
        .expect("the watchdog runs as long as the process");
    tokio::select! {
        biased;
        output = fut => output,
        Ok(()) = expiry => panic!("{what}: not done within {STEP:?}"),
    }
}

/// A deadline and whom to tell when it passes.
type Deadline = (std::time::Instant, tokio::sync::oneshot::Sender<()>);

/// The one thread that keeps every [`within`] bound: it fires each
/// deadline that passes and forgets those whose wait has ended (the
/// receiver is gone), each time it wakes.
fn watchdog() -> std::sync::mpsc::Sender<Deadline> {
    static WATCHDOG: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<Deadline>>> =
        std::sync::OnceLock::new();
    let sender = WATCHDOG.get_or_init(|| {
        let (sender, deadlines) = std::sync::mpsc::channel::<Deadline>();
        std::thread::spawn(move || {
            let mut pending: Vec<Deadline> = Vec::new();
            loop {
                let now = std::time::Instant::now();
                pending.retain(|(_, waiter)| !waiter.is_closed());
                let (due, later): (Vec<_>, Vec<_>) =
                    pending.drain(..).partition(|(at, _)| *at <= now);
                pending = later;
                for (_, waiter) in due {
                    let _ = waiter.send(());
                }
                let next = pending.iter().map(|(at, _)| *at).min();
                let received = match next {
                    Some(at) => deadlines.recv_timeout(at.saturating_duration_since(now)),
                    None => deadlines
                        .recv()
                        .map_err(|_| std::sync::mpsc::RecvTimeoutError::Disconnected),
                };
                match received {
                    Ok(deadline) => pending.push(deadline),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
        });
        std::sync::Mutex::new(sender)
    });
    sender.lock().unwrap().clone()
}

/// An address on 127.0.0.1 where nothing listens (bound, then released):
/// connections to it are refused.
pub fn refusing_addr() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("a bound address")
}

/// Starts one backend per id.
pub async fn backends(ids: &[&str]) -> Vec<Backend> {
    let mut started = Vec::with_capacity(ids.len());
    for id in ids {
        started.push(Backend::start(id).await);
    }
    started
}

/// A GET of `path` with an empty body.
pub fn get(path: &str) -> Request<ReqBody> {
    Request::get(path)
        .body(Full::new(Bytes::new()))
        .expect("a valid request")
}

/// Reads a whole response body as UTF-8.
pub async fn body_string(response: Response<Incoming>) -> Result<String, BoxError> {
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8(bytes.to_vec())?)
}

/// Sends `req` through `svc` and reads the answer.
pub async fn send<S>(svc: &mut S, req: Request<ReqBody>) -> Result<(StatusCode, String), BoxError>
where
    S: Service<Request<ReqBody>, Response = Response<Incoming>, Error = BoxError>,
{
    let response = svc.ready().await?.call(req).await?;
    let status = response.status();
    Ok((status, body_string(response).await?))
}

/// Sends `GET path` through `svc` and expects a 200: returns the body.
pub async fn get_ok<S>(svc: &mut S, path: &str) -> String
where
    S: Service<Request<ReqBody>, Response = Response<Incoming>, Error = BoxError>,
{
    let (status, body) = send(svc, get(path))
        .await
        .unwrap_or_else(|e| panic!("GET {path} failed: {e}"));
    assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    body
}

/// Sends `n` requests one after another, built by `request(i)`, each
/// expected to succeed with 200; counts the answers by body.
pub async fn tally<S, F>(svc: &mut S, n: usize, mut request: F) -> BTreeMap<String, usize>
where
    S: Service<Request<ReqBody>, Response = Response<Incoming>, Error = BoxError>,
    F: FnMut(usize) -> Request<ReqBody>,
{
    let mut counts = BTreeMap::new();
    for i in 0..n {
        let (status, body) = send(svc, request(i))
            .await
            .unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        assert_eq!(status, StatusCode::OK, "request {i}: {body}");
        *counts.entry(body).or_insert(0) += 1;
    }
    counts
}

/// `[(id, count)]` as the map [`tally`] returns, for assertions.
pub fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|&(id, n)| (id.to_owned(), n)).collect()
}

/// Each backend's request counter, in order.
pub fn served(backends: &[Backend]) -> Vec<usize> {
    backends.iter().map(Backend::requests).collect()
}

/// The error's chain, outermost first, for failure messages.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Logs to the test's output when `RUST_LOG` is set; call it first in a
/// test being debugged.
pub fn trace() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A small seeded generator (xorshift64*), so tests that need many
/// "random" inputs get the same ones on every run.
#[derive(Clone, Debug)]
pub struct Seeded(u64);

impl Seeded {
    /// A generator from a fixed, non-zero `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A public-looking IPv4 client address (never sent to: it is only a
    /// hash key).
    pub fn ipv4(&mut self) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::from(self.next_u64() as u32)
    }
}

/// The [`NoEndpoints`](tower_lb::NoEndpoints) inside a balancer's error;
/// fails the test with the error's chain if it is something else.
pub fn no_endpoints(error: &BoxError) -> &tower_lb::NoEndpoints {
    error
        .downcast_ref::<tower_lb::NoEndpoints>()
        .unwrap_or_else(|| panic!("expected NoEndpoints, got: {}", chain(&**error)))
}

/// Sends `req` through `svc` on a task of its own, and reads the answer
/// there.
///
/// Spawning `send` directly on a balancer keyed by `&'static str` trips a
/// known rustc limitation with `Send` checks of generic async code ("not
/// general enough"); proving `Send` here, on a type parameter, avoids it.
pub fn spawn_send<S>(
    mut svc: S,
    req: Request<ReqBody>,
) -> tokio::task::JoinHandle<Result<(StatusCode, String), BoxError>>
where
    S: Service<Request<ReqBody>, Response = Response<Incoming>, Error = BoxError> + Send + 'static,
    S::Future: Send,
{
    tokio::spawn(async move { send(&mut svc, req).await })
}

/// [`tally`] on a task of its own (see [`spawn_send`] for why it is a
/// helper).
pub fn spawn_tally<S, F>(
    mut svc: S,
    n: usize,
    request: F,
) -> tokio::task::JoinHandle<BTreeMap<String, usize>>
where
    S: Service<Request<ReqBody>, Response = Response<Incoming>, Error = BoxError> + Send + 'static,
    S::Future: Send,
    F: FnMut(usize) -> Request<ReqBody> + Send + 'static,
{
    tokio::spawn(async move { tally(&mut svc, n, request).await })
}
