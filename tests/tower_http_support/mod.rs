//! Local axum backends and a hyper client endpoint for the tower-http
//! composition tests.
//!
//! Every backend answers:
//!
//! * `GET /`: its id in the body, with `x-server: <id>` and
//!   `x-seen-client: <the request's x-client header>` in the response; a
//!   [`Mode::Failing`] backend answers 503 instead;
//! * `GET /fail`: 500, on every backend;
//! * `GET /slow`: never; it signals the shared [`Notify`] when the request
//!   arrives, so a test knows it reached a backend.

#![allow(dead_code)] // each test uses its own part of the support

mod fleet;
#[path = "../support/fleet.rs"]
mod fleet_start;
mod retry;

pub use self::fleet::{Failures, Fleet, HEALTHY};
pub use self::retry::RetryOnFailure;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower_lb::http::SetAuthority;

/// How a backend answers `GET /`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Healthy,
    /// 503 Service Unavailable.
    Failing,
}

/// One running backend.
#[derive(Debug)]
pub struct Backend {
    pub id: &'static str,
    pub addr: SocketAddr,
    calls: Arc<AtomicUsize>,
}

impl Backend {
    /// Requests this backend has received, on any route.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct Shared {
    id: &'static str,
    mode: Mode,
    calls: Arc<AtomicUsize>,
    slow: Arc<Notify>,
}

/// Starts a backend on an ephemeral loopback port; it runs until the test's
/// runtime shuts down. `slow` is signalled by every `GET /slow`.
pub async fn start(id: &'static str, mode: Mode, slow: Arc<Notify>) -> Backend {
    let calls = Arc::new(AtomicUsize::new(0));
    let shared = Shared {
        id,
        mode,
        calls: Arc::clone(&calls),
        slow,
    };
    let app = Router::new()
        .route("/", get(whoami))
        .route("/fail", get(fail))
        .route("/slow", get(slow_route))
        .with_state(shared);
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("a bound address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    Backend { id, addr, calls }
}

async fn whoami(State(shared): State<Shared>, headers: HeaderMap) -> impl IntoResponse {
    shared.calls.fetch_add(1, Ordering::SeqCst);
    let seen = headers
        .get("x-client")
        .cloned()
        .unwrap_or_else(|| http::HeaderValue::from_static("-"));
    let status = match shared.mode {
        Mode::Healthy => StatusCode::OK,
        Mode::Failing => StatusCode::SERVICE_UNAVAILABLE,
    };
    (
        status,
        [
            ("x-server", http::HeaderValue::from_static(shared.id)),
            ("x-seen-client", seen),
        ],
        shared.id,
    )
}

async fn fail(State(shared): State<Shared>) -> impl IntoResponse {
    shared.calls.fetch_add(1, Ordering::SeqCst);
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [("x-server", shared.id)],
        "failed",
    )
}

async fn slow_route(State(shared): State<Shared>) -> &'static str {
    shared.calls.fetch_add(1, Ordering::SeqCst);
    shared.slow.notify_one();
    std::future::pending().await
}

/// A hyper client pinned to one backend by the crate's [`SetAuthority`]: it
/// fills in the scheme and authority, so requests through the balancer carry
/// only a path.
pub type HttpEndpoint = SetAuthority<Client<HttpConnector, Full<Bytes>>>;

/// An endpoint for the backend at `addr`, sharing `client`'s pool.
pub fn http_endpoint(
    client: &Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
) -> HttpEndpoint {
    SetAuthority::from_addr(client.clone(), addr)
}

/// One client (one connection pool) for all endpoints.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}
