//! Accepting client connections within limits: a cap on connections held
//! at once, the time limits of [`guard`](super::guard), and the drain.
//!
//! At the cap, a listener that evicts ([`Limits::evict_idle`]) accepts the
//! next client anyway and closes the connection that has been idle the
//! longest (between requests, nothing cut) to make room; with none idle,
//! the client waits for a place as it would without eviction. Idle
//! keep-alive connections then cannot lock others out, however long the
//! idle timeout.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
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
    /// At the cap, close the longest-idle connection for a new client
    /// rather than leave the client waiting.
    pub evict_idle: bool,
}

/// The connections of one listener: counted, and awaited on drain.
#[derive(Clone, Debug)]
pub struct Connections {
    open: Arc<Semaphore>,
    max: u32,
    /// The most open at once since [`Connections::reset_peak`].
    peak: Arc<AtomicUsize>,
    /// Every open connection's state and its eviction signal.
    open_states: Arc<Mutex<Vec<Open>>>,
    next_id: Arc<AtomicU64>,
}

/// One open connection, as eviction sees it.
#[derive(Debug)]
struct Open {
    id: u64,
    state: Arc<ConnState>,
    evict: Arc<Notify>,
}

/// An open connection's place in [`Connections`]: leaves the list when
/// dropped.
struct Registered {
    id: u64,
    list: Arc<Mutex<Vec<Open>>>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|open| open.id != self.id);
    }
}

impl Connections {
    pub fn new(max: usize) -> Self {
        let max = u32::try_from(max.clamp(1, Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
        Self {
            open: Arc::new(Semaphore::new(max as usize)),
            max,
            peak: Arc::default(),
            open_states: Arc::default(),
            next_id: Arc::default(),
        }
    }

    fn register(&self, state: &Arc<ConnState>) -> (Registered, Arc<Notify>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let evict = Arc::new(Notify::new());
        let mut list = self.open_states.lock().unwrap_or_else(|e| e.into_inner());
        list.push(Open {
            id,
            state: Arc::clone(state),
            evict: Arc::clone(&evict),
        });
        let place = Registered {
            id,
            list: Arc::clone(&self.open_states),
        };
        (place, evict)
    }

    /// Asks the connection idle the longest to close; false when none is
    /// idle.
    fn evict_one(&self) -> bool {
        let list = self.open_states.lock().unwrap_or_else(|e| e.into_inner());
        let longest = list
            .iter()
            .filter_map(|open| {
                let since = open.state.idle_since()?;
                Some((open.state.opened() + Duration::from_millis(since), open))
            })
            .min_by_key(|(since, _)| *since);
        match longest {
            Some((_, open)) => {
                open.evict.notify_one();
                true
            }
            None => false,
        }
    }

    /// A place for one more connection: at once when there is one; when
    /// full and `evict`, by closing idle connections (checked again every
    /// 50 ms while none is idle); otherwise when a connection closes.
    async fn place(&self, evict: bool) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = Arc::clone(&self.open).try_acquire_owned() {
            return Some(permit);
        }
        if !evict {
            return Arc::clone(&self.open).acquire_owned().await.ok();
        }
        let mut asked = false;
        loop {
            if !asked {
                asked = self.evict_one();
            }
            tokio::select! {
                permit = Arc::clone(&self.open).acquire_owned() => return permit.ok(),
                () = tokio::time::sleep(Duration::from_millis(50)), if !asked => {}
            }
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
        // With eviction, the client is accepted first and room made for it;
        // without, a place is waited for first, and clients wait in the
        // listen queue.
        let mut permit = None;
        if !limits.evict_idle {
            permit = tokio::select! {
                biased;
                () = drain.started() => return,
                permit = connections.place(false) => match permit {
                    Some(permit) => Some(permit),
                    None => return,
                },
            };
        }
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
        let permit = match permit {
            Some(permit) => permit,
            None => tokio::select! {
                biased;
                () = drain.started() => return,
                permit = connections.place(true) => match permit {
                    Some(permit) => permit,
                    None => return,
                },
            },
        };
        let _ = stream.set_nodelay(true);
        connections
            .peak
            .fetch_max(connections.open(), Ordering::Relaxed);
        let state = ConnState::new();
        let (place, evicted) = connections.register(&state);
        let io = Guarded::new(stream, Arc::clone(&state), limits.timeouts);
        let service = Watched::new(make(peer), state);
        let connection = http
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        let mut drain = drain.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _place = place;
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
                    () = evicted.notified(), if !draining => {
                        tracing::debug!(%peer, "idle connection closed to make room");
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
