//! The tests' one backend: a real server on an ephemeral port of
//! 127.0.0.1, configured by a small builder.
//!
//! ```ignore
//! let a = Backend::start("a").await;                        // 200, its id
//! let sick = Backend::builder("b").status(StatusCode::SERVICE_UNAVAILABLE).start().await;
//! let slow = Backend::builder("c").delay(Duration::from_millis(50)).start().await;
//! let grpc = Backend::builder("d").grpc(tonic::Code::Ok).start().await;
//! ```
//!
//! An HTTP backend (axum through hyper, HTTP/1) answers:
//!
//! * any path not below (`/`, `/work`, `/items/7`...), any method: its id,
//!   with its current [`status`](Backend::set_status) (200 unless set),
//!   after its [`delay`](Builder::delay) of tokio time; or never, while it
//!   [hangs](Backend::set_hang); with the builder's
//!   [headers](Builder::header). Each body is kept when the builder asks
//!   to [`record_bodies`](Builder::record_bodies).
//! * `/health`: `ok`, with its current [`health`](Backend::set_health)
//!   status (200 unless set); counted apart, in
//!   [`health_checks`](Backend::health_checks).
//! * `/echo` (any method): the request body, streamed back as it arrives.
//! * `/slow`: its id, once the [`slow`](Backend::slow) gate lets the
//!   request through.
//! * `/stream/{frames}`: `frames` frames `"{id}:{i}\n"`, each sent only when
//!   the [`frames`](Backend::frames) gate lets it through.
//! * `/status/{code}`: that status, with its id as body.
//! * `/delay/{ms}`: its id after `ms` milliseconds of tokio time.
//!
//! Every HTTP response names the backend in the [`BACKEND_HEADER`] header,
//! and reports each request header `name` back as `x-seen-{name}` (its
//! values joined with `, `), so a test sees what reached the backend.
//!
//! A gRPC backend serves `who.Who` (see [`grpc`](super::grpc)) with tonic,
//! answering with its id, or with the chosen status code.
//!
//! Both count the requests (gRPC: the calls) they receive, on arrival.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
use axum::routing::{any, get};
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt;

use super::grpc::Asked;
use super::Endpoint;

/// The header every HTTP backend sets on its responses to name itself.
pub const BACKEND_HEADER: &str = "x-backend";

/// A gate that requests wait at until the test lets them through.
///
/// Permits are handed out one per waiting request; opening the gate lets
/// every current and future request through.
#[derive(Clone, Debug)]
pub struct Gate(Arc<Semaphore>);

impl Gate {
    fn new() -> Self {
        Self(Arc::new(Semaphore::new(0)))
    }

    /// Lets `n` more waiters through.
    pub fn release(&self, n: usize) {
        self.0.add_permits(n);
    }

    /// Lets everyone through from now on.
    pub fn open(&self) {
        self.0.close();
    }

    async fn pass(&self) {
        // A closed gate is an open door.
        if let Ok(permit) = self.0.acquire().await {
            permit.forget();
        }
    }
}

/// How a [`Backend`] is set up; from [`Backend::builder`].
#[derive(Debug)]
#[must_use]
pub struct Builder {
    id: String,
    status: StatusCode,
    delay: Duration,
    record_bodies: bool,
    grpc: Option<tonic::Code>,
    at: Option<SocketAddr>,
    headers: HeaderMap,
}

impl Builder {
    /// The status of its answers (200 by default); for a gRPC backend, see
    /// [`grpc`](Self::grpc).
    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Adds this header to each answer with its id (`retry-after`, say).
    pub fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.append(name, HeaderValue::from_static(value));
        self
    }

    /// Waits this long, in tokio time, before each answer (none by
    /// default): the same request is fast on some backends and slow on
    /// others.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Keeps each request's body, for [`Backend::bodies`].
    pub fn record_bodies(mut self) -> Self {
        self.record_bodies = true;
        self
    }

    /// Serves gRPC instead of HTTP: `who.Who`, answering with its id when
    /// `code` is `Ok`, else with that status.
    pub fn grpc(mut self, code: tonic::Code) -> Self {
        self.grpc = Some(code);
        self
    }

    /// Listens on this loopback address instead of an ephemeral port (to
    /// bring a stopped backend back on its old port).
    pub fn at(mut self, addr: SocketAddr) -> Self {
        assert!(addr.ip().is_loopback(), "tests only listen on loopback");
        self.at = Some(addr);
        self
    }

    /// Starts the backend; it serves until stopped or dropped.
    pub async fn start(self) -> Backend {
        let addr = self
            .at
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let shared = Arc::new(Shared {
            id: Arc::from(self.id.as_str()),
            status: AtomicU16::new(self.status.as_u16()),
            health: AtomicU16::new(200),
            hang: AtomicBool::new(false),
            delay: self.delay,
            headers: self.headers,
            requests: watch::Sender::new(0),
            health_checks: AtomicUsize::new(0),
            bodies: self.record_bodies.then(Mutex::default),
            asks: Mutex::default(),
            grpc: self.grpc,
            slow: Gate::new(),
            frames: Gate::new(),
            held: watch::Sender::new(0),
        });
        let listener = TcpListener::bind(addr)
            .await
            .expect("bind a port on 127.0.0.1");
        let addr = listener.local_addr().expect("a bound address");
        let server = serve(listener, Arc::clone(&shared));
        Backend {
            addr,
            shared,
            server: Mutex::new(Some(server)),
        }
    }
}

/// What a backend shares with the tasks that serve it.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) id: Arc<str>,
    pub(super) status: AtomicU16,
    health: AtomicU16,
    hang: AtomicBool,
    delay: Duration,
    headers: HeaderMap,
    requests: watch::Sender<usize>,
    health_checks: AtomicUsize,
    bodies: Option<Mutex<Vec<Bytes>>>,
    pub(super) asks: Mutex<Vec<Asked>>,
    pub(super) grpc: Option<tonic::Code>,
    slow: Gate,
    frames: Gate,
    held: watch::Sender<usize>,
}

impl Shared {
    /// Counts a request on its arrival.
    pub(super) fn arrived(&self) {
        self.requests.send_modify(|n| *n += 1);
    }
}

/// The task serving a backend, and the signal that stops it.
#[derive(Debug)]
struct Server {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// One running backend: see the [module docs](self) for what it answers.
#[derive(Debug)]
pub struct Backend {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Mutex<Option<Server>>,
}

impl Backend {
    /// A backend named `id`, answering 200 at once; see [`Builder`].
    pub fn builder(id: &str) -> Builder {
        Builder {
            id: id.to_owned(),
            status: StatusCode::OK,
            delay: Duration::ZERO,
            record_bodies: false,
            grpc: None,
            at: None,
            headers: HeaderMap::new(),
        }
    }

    /// Starts a backend named `id` that answers 200 at once.
    pub async fn start(id: &str) -> Self {
        Self::builder(id).start().await
    }

    /// The backend's name, which it answers.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many requests (gRPC: calls) it has received, counted on
    /// arrival, answered or not; health checks (`/health`) apart.
    pub fn requests(&self) -> usize {
        *self.shared.requests.borrow()
    }

    /// Waits until it has received `n` requests in all.
    pub async fn wait_requests(&self, n: usize) {
        self.shared
            .requests
            .subscribe()
            .wait_for(|&seen| seen >= n)
            .await
            .expect("the backend keeps its sender");
    }

    /// How many health checks (`GET /health`) it has answered.
    pub fn health_checks(&self) -> usize {
        self.shared.health_checks.load(Ordering::SeqCst)
    }

    /// The bodies of the requests it answered with its id, in order
    /// (empty unless built with [`record_bodies`](Builder::record_bodies)).
    pub fn bodies(&self) -> Vec<Bytes> {
        self.shared
            .bodies
            .as_ref()
            .map(|bodies| bodies.lock().unwrap().clone())
            .unwrap_or_default()
    }

    /// Answers with `status` from now on.
    pub fn set_status(&self, status: StatusCode) {
        self.shared.status.store(status.as_u16(), Ordering::SeqCst);
    }

    /// Answers health checks with `status` from now on.
    pub fn set_health(&self, status: StatusCode) {
        self.shared.health.store(status.as_u16(), Ordering::SeqCst);
    }

    /// While `hang` holds, reads each request and never answers it (until
    /// the backend stops).
    pub fn set_hang(&self, hang: bool) {
        self.shared.hang.store(hang, Ordering::SeqCst);
    }

    /// The gate `/slow` waits at.
    pub fn slow(&self) -> &Gate {
        &self.shared.slow
    }

    /// The gate each `/stream` frame waits at.
    pub fn frames(&self) -> &Gate {
        &self.shared.frames
    }

    /// Waits until `n` requests have arrived at the `/slow` gate and not
    /// passed it.
    pub async fn wait_held(&self, n: usize) {
        self.shared
            .held
            .subscribe()
            .wait_for(|&held| held >= n)
            .await
            .expect("the backend keeps its sender");
    }

    /// How many requests are held at the `/slow` gate now.
    pub fn held(&self) -> usize {
        *self.shared.held.borrow()
    }

    /// The `Ask` calls a gRPC backend has decoded, in order: each one's
    /// `x-user` metadata and request message.
    pub fn asks(&self) -> Vec<Asked> {
        self.shared.asks.lock().unwrap().clone()
    }

    /// An HTTP client endpoint for this backend.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::new(self.addr)
    }

    /// A lazily connecting tonic channel to this backend.
    pub fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Channel::from_shared(format!("http://{}", self.addr))
            .expect("a valid URI")
            .connect_lazy()
    }

    /// Closes the listener and, for HTTP, aborts every connection; returns
    /// once they are gone, so a connect afterwards is refused. (A gRPC
    /// backend's connections live on until the test's runtime ends.)
    pub async fn stop(&self) {
        let server = self.server.lock().unwrap().take();
        if let Some(Server { stop, task }) = server {
            let _ = stop.send(());
            let _ = task.await;
        }
    }

    /// Stops the backend if it runs, then listens again on the same port,
    /// with the same settings and counters.
    pub async fn restart(&self) {
        self.stop().await;
        let listener = TcpListener::bind(self.addr).await.expect("rebind");
        let server = serve(listener, Arc::clone(&self.shared));
        *self.server.lock().unwrap() = Some(server);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(server) = self.server.lock().unwrap().take() {
            server.task.abort();
        }
    }
}

fn serve(listener: TcpListener, shared: Arc<Shared>) -> Server {
    let (stop, stopped) = oneshot::channel();
    let task = match shared.grpc {
        Some(_) => tokio::spawn(super::grpc::serve(listener, shared, stopped)),
        // The router is built here, before the backend is handed over, so
        // the memory it holds is in place before a test starts measuring.
        None => tokio::spawn(accept_loop(listener, routes(&shared), shared, stopped)),
    };
    Server { stop, task }
}

fn routes(shared: &Arc<Shared>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route(
            "/echo",
            any(|request: Request<Body>| async move { Body::new(request.into_body()) }),
        )
        .route("/slow", get(slow))
        .route("/stream/{frames}", get(stream))
        .route("/status/{code}", get(status))
        .route("/delay/{ms}", get(delay))
        .fallback(answer)
        .with_state(Arc::clone(shared))
}

async fn answer(State(shared): State<Arc<Shared>>, body: Bytes) -> (StatusCode, HeaderMap, String) {
    if let Some(bodies) = &shared.bodies {
        bodies.lock().unwrap().push(body);
    }
    if shared.hang.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    if !shared.delay.is_zero() {
        tokio::time::sleep(shared.delay).await;
    }
    let status = StatusCode::from_u16(shared.status.load(Ordering::SeqCst))
        .expect("a status set from a StatusCode");
    (status, shared.headers.clone(), shared.id.to_string())
}

async fn health(State(shared): State<Arc<Shared>>) -> (StatusCode, &'static str) {
    let status = StatusCode::from_u16(shared.health.load(Ordering::SeqCst))
        .expect("a status set from a StatusCode");
    (status, "ok")
}

async fn slow(State(shared): State<Arc<Shared>>) -> String {
    shared.held.send_modify(|n| *n += 1);
    shared.slow.pass().await;
    shared.held.send_modify(|n| *n -= 1);
    shared.id.to_string()
}

async fn stream(State(shared): State<Arc<Shared>>, Path(count): Path<usize>) -> Body {
    let frames = futures_util::stream::unfold(0, move |i| {
        let shared = Arc::clone(&shared);
        async move {
            if i == count {
                return None;
            }
            shared.frames.pass().await;
            let frame = Bytes::from(format!("{}:{i}\n", shared.id));
            Some((Ok::<_, Infallible>(frame), i + 1))
        }
    });
    Body::from_stream(frames)
}

async fn status(State(shared): State<Arc<Shared>>, Path(code): Path<u16>) -> (StatusCode, String) {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
    (status, shared.id.to_string())
}

async fn delay(State(shared): State<Arc<Shared>>, Path(ms): Path<u64>) -> String {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    shared.id.to_string()
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    shared: Arc<Shared>,
    mut stopped: oneshot::Receiver<()>,
) {
    let header = HeaderValue::from_str(&shared.id).expect("backend ids are header-safe");
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            // A send or a dropped sender both stop the server.
            _ = &mut stopped => break,
            accepted = listener.accept() => {
                if let Ok((stream, _peer)) = accepted {
                    connections.spawn(connection(
                        stream,
                        router.clone(),
                        header.clone(),
                        Arc::clone(&shared),
                    ));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn connection(stream: TcpStream, router: Router, header: HeaderValue, shared: Arc<Shared>) {
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        if req.uri().path() == "/health" {
            shared.health_checks.fetch_add(1, Ordering::SeqCst);
        } else {
            shared.arrived();
        }
        let seen = seen(req.headers());
        let (router, header) = (router.clone(), header.clone());
        async move {
            let mut response = router.oneshot(req.map(Body::new)).await?;
            let headers = response.headers_mut();
            headers.insert(BACKEND_HEADER, header);
            headers.extend(seen);
            Ok::<_, Infallible>(response)
        }
    });
    // Errors are the client's doing (a reset, a half-sent request); the
    // test sees them on its side.
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Each request header as `x-seen-{name}`, its values joined with `, `.
fn seen(headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    headers
        .keys()
        .filter_map(|name| {
            let values: Vec<&[u8]> = headers.get_all(name).iter().map(|v| v.as_bytes()).collect();
            let seen = HeaderName::try_from(format!("x-seen-{name}")).ok()?;
            let value = HeaderValue::from_bytes(&values.join(&b", "[..])).ok()?;
            Some((seen, value))
        })
        .collect()
}
