//! Helpers for the health tests: axum backends on 127.0.0.1 that can be
//! killed and restarted on the same port, an endpoint service that counts
//! the requests routed to it, and a frozen clock.
#![allow(dead_code)]

#[path = "../support/serve_app.rs"]
mod serve_app;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower::{Service, ServiceExt};
use tower_lb::http::SetAuthority;
use tower_lb::BoxError;

use self::serve_app::serve_app;

pub type Request = http::Request<Empty<Bytes>>;
pub type Response = http::Response<Incoming>;

/// What a backend answers; shared with its server task.
#[derive(Debug)]
struct Answers {
    status: AtomicU16,
    health: AtomicU16,
    hits: AtomicUsize,
    health_hits: AtomicUsize,
}

/// An axum server on 127.0.0.1: `/` answers `status` (200 unless set),
/// `/health` answers `health` (200 unless set).
#[derive(Debug)]
pub struct Backend {
    pub addr: SocketAddr,
    answers: Arc<Answers>,
    server: Option<JoinHandle<()>>,
}

impl Backend {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let answers = Arc::new(Answers {
            status: AtomicU16::new(200),
            health: AtomicU16::new(200),
            hits: AtomicUsize::new(0),
            health_hits: AtomicUsize::new(0),
        });
        let server = Some(tokio::spawn(serve(listener, Arc::clone(&answers))));
        Self {
            addr,
            answers,
            server,
        }
    }

    /// Closes the listener and every open connection; returns once they are
    /// closed.
    pub async fn kill(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) {
        self.kill().await;
        let listener = TcpListener::bind(self.addr).await.expect("rebind");
        self.server = Some(tokio::spawn(serve(listener, Arc::clone(&self.answers))));
    }

    pub fn set_status(&self, status: u16) {
        self.answers.status.store(status, Ordering::SeqCst);
    }

    pub fn set_health(&self, status: u16) {
        self.answers.health.store(status, Ordering::SeqCst);
    }

    /// Requests `/` has answered.
    pub fn hits(&self) -> usize {
        self.answers.hits.load(Ordering::SeqCst)
    }

    /// Probes `/health` has answered.
    pub fn health_hits(&self) -> usize {
        self.answers.health_hits.load(Ordering::SeqCst)
    }
}

async fn serve(listener: TcpListener, answers: Arc<Answers>) {
    let app = Router::new()
        .route(
            "/",
            get(|State(answers): State<Arc<Answers>>| async move {
                answers.hits.fetch_add(1, Ordering::SeqCst);
                StatusCode::from_u16(answers.status.load(Ordering::SeqCst)).unwrap()
            }),
        )
        .route(
            "/health",
            get(|State(answers): State<Arc<Answers>>| async move {
                answers.health_hits.fetch_add(1, Ordering::SeqCst);
                StatusCode::from_u16(answers.health.load(Ordering::SeqCst)).unwrap()
            }),
        )
        .with_state(answers);
    serve_app(listener, app).await;
}

/// An endpoint as the balancer sees it: a hyper client bound to one
/// backend address, counting the requests routed to it.
#[derive(Clone, Debug)]
pub struct Endpoint {
    inner: SetAuthority<Client<HttpConnector, Empty<Bytes>>>,
    calls: Arc<AtomicUsize>,
}

impl Endpoint {
    pub fn new(addr: SocketAddr) -> Self {
        // No pooling: every request opens its own connection, so a killed
        // backend fails the very next request.
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build_http();
        Self {
            inner: SetAuthority::from_addr(client, addr),
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Requests the balancer has routed here.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Service<Request> for Endpoint {
    type Response = Response;
    type Error = BoxError;
    type Future = tower_lb::http::ResponseFuture<hyper_util::client::legacy::ResponseFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.call(request)
    }
}

pub fn get_root() -> Request {
    http::Request::get("/").body(Empty::new()).unwrap()
}

/// Sends one `GET /` through `service` and reads the whole answer.
pub async fn send<S>(service: &mut S) -> Result<StatusCode, BoxError>
where
    S: Service<Request, Response = Response, Error = BoxError>,
{
    let response = service.ready().await?.call(get_root()).await?;
    let status = response.status();
    response.into_body().collect().await?;
    Ok(status)
}

/// Keeps tokio's paused clock from advancing by itself while real I/O is
/// awaited: a blocking task inhibits auto-advance for as long as it runs
/// (documented under `tokio::time::pause`). Time then moves only with
/// `tokio::time::advance`. Drop to release.
pub struct FrozenClock {
    _release: std::sync::mpsc::Sender<()>,
}

pub fn freeze_clock() -> FrozenClock {
    let (release, released) = std::sync::mpsc::channel::<()>();
    tokio::task::spawn_blocking(move || {
        let _ = released.recv();
    });
    FrozenClock { _release: release }
}

/// Runs `future` to completion, failing the test if it makes no progress
/// within 20 s of real time (the frozen clock cannot time it out).
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    let (done, finished) = std::sync::mpsc::channel::<()>();
    // Ends early, and harmlessly, when `done` is dropped.
    let watchdog = tokio::task::spawn_blocking(move || {
        let _ = finished.recv_timeout(Duration::from_secs(20));
    });
    tokio::select! {
        output = future => {
            drop(done);
            output
        }
        _ = watchdog => panic!("{what}: nothing happened within 20 s of real time"),
    }
}
