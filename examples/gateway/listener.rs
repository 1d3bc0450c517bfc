//! Accepting client connections within limits: a cap on connections held
//! at once, the time limits of [`guard`](super::guard), and the drain.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_lb::BoxError;

use super::drain::Drain;
use super::guard::{ClientBody, ConnState, Guarded, Timeouts, Watched};

/// The smallest read buffer hyper accepts.
const MIN_HEADER_BUFFER: usize = 8 * 1024;

/// The limits of one listener.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub timeouts: Timeouts,
    /// Connections held at once; further clients wait in the listen queue.
    pub max_connections: usize,
    /// A request head larger than this is answered 431 (hyper's read
    /// buffer, at least 8 KiB); `None`: hyper's default (about 400 KiB).
    pub max_header_bytes: Option<usize>,
}

/// The connections of one listener: counted, and awaited on drain.
#[derive(Clone, Debug)]
pub struct Connections {
    open: Arc<Semaphore>,
    max: u32,
    /// The most open at once since [`Connections::reset_peak`].
    peak: Arc<AtomicUsize>,
}

impl Connections {
    pub fn new(max: usize) -> Self {
        let max = u32::try_from(max.clamp(1, Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
        Self {
            open: Arc::new(Semaphore::new(max as usize)),
            max,
            peak: Arc::default(),
        }
    }

    /// The most connections open at once since the last reset.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Starts a new peak from the connections open now.
    pub fn reset_peak(&self) {
        self.peak.store(self.open(), Ordering::Relaxed);
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        (self.max as usize).saturating_sub(self.open.available_permits())
    }

    /// Resolves when no connection is open.
    pub async fn closed(&self) {
        let _ = self.open.acquire_many(self.max).await;
    }
}

/// Accepts connections on `listener` and serves each with `make(peer)`
/// until the drain starts; connections then finish their requests in
/// their own tasks (see [`Connections::closed`]).
pub async fn serve<F, S, B>(
    listener: TcpListener,
    limits: Limits,
    connections: Connections,
    mut drain: Drain,
    mut make: F,
) where
    F: FnMut(SocketAddr) -> S,
    S: hyper::service::Service<Request<ClientBody>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    // Time limits are `Guarded`'s: hyper's header timer would also close
    // keep-alive connections that are merely idle.
    http.timer(TokioTimer::new()).header_read_timeout(None);
    if let Some(max) = limits.max_header_bytes {
        // hyper answers a head that does not fit 431 and closes.
        http.max_buf_size(max.max(MIN_HEADER_BUFFER));
    }
    loop {
        let permit = tokio::select! {
            biased;
            () = drain.started() => return,
            permit = Arc::clone(&connections.open).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = drain.started() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, mostly: give connections time to close.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        connections
            .peak
            .fetch_max(connections.open(), Ordering::Relaxed);
        let state = ConnState::new();
        let io = Guarded::new(stream, Arc::clone(&state), limits.timeouts);
        let service = Watched::new(make(peer), state);
        let connection = http
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        let mut drain = drain.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut connection = std::pin::pin!(connection);
            let mut draining = false;
            let result = loop {
                tokio::select! {
                    result = connection.as_mut() => break result,
                    () = drain.started(), if !draining => {
                        // Keep-alive off: an idle connection closes now, a
                        // busy one after its answer.
                        connection.as_mut().graceful_shutdown();
                        draining = true;
                    }
                }
            };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "client connection ended with an error");
            }
        });
    }
}
