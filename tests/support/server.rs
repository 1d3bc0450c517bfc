//! Real HTTP backends on 127.0.0.1, served by axum through hyper.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::Path;
use axum::http::{HeaderValue, Request, StatusCode};
use axum::routing::{any, get};
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt;

use super::Endpoint;

/// The header every backend sets on its responses to name itself.
pub const BACKEND_HEADER: &str = "x-backend";

/// A gate that requests wait at until the test lets them through.
///
/// Permits are handed out one per waiting request; closing the gate lets
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

/// One backend server: a listener on an ephemeral port of 127.0.0.1 and the
/// connections it accepted.
///
/// Routes:
/// * `/` (any method): answers the backend's id.
/// * `/echo` (any method): answers the request body.
/// * `/slow`: waits at the [`slow`](Backend::slow) gate, then answers the id.
/// * `/stream/{frames}`: answers `frames` frames `"{id}:{i}\n"`, each sent
///   only when the [`frames`](Backend::frames) gate lets it through.
/// * `/status/{code}`: answers that status with the id as body.
/// * `/delay/{ms}`: answers the id after `ms` milliseconds of tokio time
///   (for latency on a paused clock; gates are for holding requests).
///
/// Every response carries the [`BACKEND_HEADER`] header.
#[derive(Debug)]
pub struct Backend {
    id: String,
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    slow: Gate,
    frames: Gate,
    held: watch::Sender<usize>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Backend {
    /// Starts a backend named `id` with the standard routes.
    pub async fn start(id: &str) -> Self {
        Self::start_with(id, Router::new()).await
    }

    /// Starts a backend named `id` with the standard routes and `extra`.
    pub async fn start_with(id: &str, extra: Router) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind an ephemeral port on 127.0.0.1");
        Self::serve(id, listener, extra)
    }

    /// Starts a backend on a given loopback address (to bring a stopped
    /// backend back on its old port).
    pub async fn start_at(id: &str, addr: SocketAddr, extra: Router) -> Self {
        assert!(addr.ip().is_loopback(), "tests only listen on loopback");
        let listener = TcpListener::bind(addr).await.expect("bind the address");
        Self::serve(id, listener, extra)
    }

    fn serve(id: &str, listener: TcpListener, extra: Router) -> Self {
        let addr = listener.local_addr().expect("listener address");
        let requests = Arc::new(AtomicUsize::new(0));
        let slow = Gate::new();
        let frames = Gate::new();
        let held = watch::Sender::new(0);
        let router = routes(id, &slow, &frames, &held).merge(extra);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(
            listener,
            router,
            id.to_owned(),
            Arc::clone(&requests),
            stopped,
        ));
        Self {
            id: id.to_owned(),
            addr,
            requests,
            slow,
            frames,
            held,
            stop: Mutex::new(Some(stop)),
            task: Mutex::new(Some(task)),
        }
    }

    /// The backend's name, which `/` answers.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many requests it has received (counted on arrival).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// The request counter itself.
    pub fn counter(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.requests)
    }

    /// The gate `/slow` waits at.
    pub fn slow(&self) -> &Gate {
        &self.slow
    }

    /// The gate each `/stream` frame waits at.
    pub fn frames(&self) -> &Gate {
        &self.frames
    }

    /// Waits until `n` requests are held at the `/slow` gate.
    pub async fn wait_held(&self, n: usize) {
        self.held
            .subscribe()
            .wait_for(|&held| held >= n)
            .await
            .expect("the backend keeps its sender");
    }

    /// How many requests are held at the `/slow` gate now.
    pub fn held(&self) -> usize {
        *self.held.borrow()
    }

    /// An HTTP client endpoint for this backend.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::new(self.addr)
    }

    /// Closes the listener and aborts every connection; returns once both
    /// are gone, so a connect afterwards is refused.
    pub async fn stop(&self) {
        if let Some(stop) = self.stop.lock().unwrap().take() {
            let _ = stop.send(());
        }
        let task = self.task.lock().unwrap().take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().unwrap().take() {
            task.abort();
        }
    }
}

fn routes(id: &str, slow: &Gate, frames: &Gate, held: &watch::Sender<usize>) -> Router {
    let id: Arc<str> = Arc::from(id);
    let root = {
        let id = Arc::clone(&id);
        any(move || async move { id.to_string() })
    };
    let slow_route = {
        let (id, gate, held) = (Arc::clone(&id), slow.clone(), held.clone());
        get(move || async move {
            held.send_modify(|n| *n += 1);
            gate.pass().await;
            held.send_modify(|n| *n -= 1);
            id.to_string()
        })
    };
    let stream = {
        let (id, gate) = (Arc::clone(&id), frames.clone());
        get(move |Path(count): Path<usize>| async move {
            let frames = futures_util::stream::unfold(0, move |i| {
                let (id, gate) = (Arc::clone(&id), gate.clone());
                async move {
                    if i == count {
                        return None;
                    }
                    gate.pass().await;
                    let frame = Bytes::from(format!("{id}:{i}\n"));
                    Some((Ok::<_, Infallible>(frame), i + 1))
                }
            });
            Body::from_stream(frames)
        })
    };
    let status = {
        let id = Arc::clone(&id);
        get(move |Path(code): Path<u16>| async move {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
            (status, id.to_string())
        })
    };
    let delay = {
        let id = Arc::clone(&id);
        get(move |Path(ms): Path<u64>| async move {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            id.to_string()
        })
    };
    Router::new()
        .route("/", root)
        .route("/delay/{ms}", delay)
        .route("/echo", any(|body: Bytes| async move { body }))
        .route("/slow", slow_route)
        .route("/stream/{frames}", stream)
        .route("/status/{code}", status)
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    id: String,
    requests: Arc<AtomicUsize>,
    mut stopped: oneshot::Receiver<()>,
) {
    let header = HeaderValue::from_str(&id).expect("backend ids are header-safe");
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            // A send or a dropped `Backend` both stop the server.
            _ = &mut stopped => break,
            accepted = listener.accept() => {
                if let Ok((stream, _peer)) = accepted {
                    connections.spawn(connection(
                        stream,
                        router.clone(),
                        header.clone(),
                        Arc::clone(&requests),
                    ));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn connection(
    stream: TcpStream,
    router: Router,
    header: HeaderValue,
    requests: Arc<AtomicUsize>,
) {
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        requests.fetch_add(1, Ordering::SeqCst);
        let (router, header) = (router.clone(), header.clone());
        async move {
            let mut response = router.oneshot(req.map(Body::new)).await?;
            response.headers_mut().insert(BACKEND_HEADER, header);
            Ok::<_, Infallible>(response)
        }
    });
    // Errors are the client's doing (a reset, a half-sent request); the
    // test sees them on its side.
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}
