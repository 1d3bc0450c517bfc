//! Helpers shared by the integration tests: real backends on 127.0.0.1, an
//! HTTP client endpoint per backend, and ways to drive a balancer.
//!
//! Every test file includes it with `mod support;` and uses a part of it.
#![allow(dead_code, unused_imports, unreachable_pub)]

mod client;
mod counted;
mod discover;
mod keyed;
mod server;

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
    counters, fetch, in_flight, merge_tallies, read_body, spawn_fetch_tally, start, work_route,
    Counted, HasCounter,
};
pub use self::discover::{scripted, Probe, Script, Scripted, Seen};
pub use self::keyed::{answers, item_route, picked};
pub use self::server::{Backend, Gate, BACKEND_HEADER};

/// The endpoint service as discovery sources wrap it.
pub type Ep = Weighted<Endpoint>;

/// A balancer over HTTP endpoints keyed by name.
pub type HttpBalance<P> = tower_lb::Balance<&'static str, Ep, P>;

/// How long any single step of a test may take before the test fails
/// instead of hanging; far above what a step needs.
pub const STEP: Duration = Duration::from_secs(20);

/// Runs `fut`, failing the test if it takes longer than [`STEP`].
///
/// On a paused clock the bound still turns a hang into a failure, but the
/// clock jumps ahead whenever every task waits, so use it there only for
/// steps that wait on nothing but timers and other tasks, never on a
/// socket (or `tokio::time::resume` first).
pub async fn bounded<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(STEP, fut).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: no answer within {STEP:?}"),
    }
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
