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

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower::Service;
use tower_lb::BoxError;

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

/// A hyper client pinned to one backend: it fills in the scheme and
/// authority, so requests through the balancer carry only a path.
#[derive(Clone, Debug)]
pub struct HttpEndpoint {
    client: Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
}

impl HttpEndpoint {
    pub fn new(client: &Client<HttpConnector, Full<Bytes>>, addr: SocketAddr) -> Self {
        Self {
            client: client.clone(),
            addr,
        }
    }
}

/// One client (one connection pool) for all endpoints.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

impl Service<Request<Full<Bytes>>> for HttpEndpoint {
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Incoming>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Full<Bytes>>) -> Self::Future {
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let uri = Uri::builder()
            .scheme("http")
            .authority(self.addr.to_string())
            .path_and_query(path)
            .build();
        let client = self.client.clone();
        Box::pin(async move {
            *request.uri_mut() = uri?;
            Ok(client.request(request).await?)
        })
    }
}
