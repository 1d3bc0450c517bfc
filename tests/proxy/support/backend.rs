//! Axum backends on 127.0.0.1 for the proxy to forward to.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::serve_app::serve_app;

/// What a backend shares with its handlers.
struct Shared {
    name: String,
    hits: AtomicUsize,
    hit: Notify,
    /// Lets `/stream` send the rest of its answer.
    release: Notify,
}

/// An axum server on 127.0.0.1:
///
/// * any `GET` path but these answers its name and counts as a hit;
/// * `/health` answers `ok`;
/// * `POST /echo` streams the request body back, with the forwarding headers
///   it received in `x-seen-*` response headers;
/// * `/stream` sends `first;`, then the rest once the test releases it.
pub struct Backend {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    server: Option<JoinHandle<()>>,
}

impl Backend {
    pub async fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            hits: AtomicUsize::new(0),
            hit: Notify::new(),
            release: Notify::new(),
        });
        let server = Some(tokio::spawn(serve(listener, Arc::clone(&shared))));
        Self {
            addr,
            shared,
            server,
        }
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Its address as a `--backend` value.
    pub fn arg(&self) -> String {
        self.addr.to_string()
    }

    pub fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// Waits until the backend has answered `n` hits in all.
    pub async fn wait_for_hits(&self, n: usize, timeout: Duration) {
        let wait = async {
            loop {
                let notified = self.shared.hit.notified();
                let mut notified = std::pin::pin!(notified);
                notified.as_mut().enable();
                if self.hits() >= n {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "backend {} got {} hits, not {n}, within {timeout:?}",
                    self.name(),
                    self.hits()
                )
            });
    }

    /// Lets a `/stream` answer send the rest of its body.
    pub fn release_stream(&self) {
        self.shared.release.notify_one();
    }

    /// Closes the listener and every open connection.
    pub async fn kill(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/echo", post(echo))
        .route("/stream", get(stream))
        .fallback(get(hit))
        .with_state(shared);
    serve_app(listener, app).await;
}

async fn hit(State(shared): State<Arc<Shared>>) -> String {
    shared.hits.fetch_add(1, Ordering::SeqCst);
    shared.hit.notify_waiters();
    shared.name.clone()
}

/// The headers a proxy must add, keep or drop, as the backend saw them.
fn seen(headers: &HeaderMap) -> [(&'static str, HeaderValue); 3] {
    let joined = |name: &str| {
        let values: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        HeaderValue::from_str(&values.join(", ")).expect("a valid header value")
    };
    let hop: Vec<&str> = [
        "connection",
        "keep-alive",
        "proxy-authorization",
        "x-secret",
        "te",
    ]
    .into_iter()
    .filter(|name| headers.contains_key(*name))
    .collect();
    [
        ("x-seen-xff", joined("x-forwarded-for")),
        ("x-seen-host", joined("host")),
        (
            "x-seen-hop",
            HeaderValue::from_str(&hop.join(",")).expect("valid"),
        ),
    ]
}

async fn echo(request: Request) -> Response {
    let seen = seen(request.headers());
    let mut response = Response::new(Body::new(request.into_body()));
    for (name, value) in seen {
        response.headers_mut().insert(name, value);
    }
    response
}

async fn stream(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let frames = futures_util::stream::unfold(0u8, move |n| {
        let shared = Arc::clone(&shared);
        async move {
            let frame = match n {
                0 => "first;",
                1 => {
                    shared.release.notified().await;
                    "second;"
                }
                2 => "third",
                _ => return None,
            };
            Some((
                Ok::<_, Infallible>(Bytes::from_static(frame.as_bytes())),
                n + 1,
            ))
        }
    });
    Body::from_stream(frames)
}
