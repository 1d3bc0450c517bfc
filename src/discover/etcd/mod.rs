//! Endpoints registered in etcd under a key prefix, and the registration
//! of servers under a lease.
//!
//! Servers register themselves with a [`Registration`]: one key under the
//! prefix (`/services/checkout/10.0.0.7:8080`), attached to a lease that the
//! registration keeps alive. When the server stops (or dies, and the lease
//! runs out) the key is deleted. Clients follow the prefix with an
//! [`EtcdDiscover`].
//!
//! A key's value is an address, a backends line (`ADDR[@WEIGHT]
//! [zone=ZONE]`), or JSON with weight and zone (see [`parse_value`]).
//!
//! Both talk to etcd's v3 gRPC API (`http://` endpoints) through a small
//! client of the module's own over tonic: the few messages they use are
//! declared in Rust, so building the `etcd` feature needs no `protoc`.
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use std::time::Duration;
//! use tower_lb::discover::etcd::{endpoint_value, EtcdDiscover, Registration};
//! use tower_lb::{pick::RoundRobin, Balance};
//!
//! # async fn run() -> Result<(), tower_lb::BoxError> {
//! // On each server:
//! let me: SocketAddr = "10.0.0.7:8080".parse()?;
//! let registration = Registration::register(
//!     &["http://127.0.0.1:2379"],
//!     format!("/services/checkout/{me}"),
//!     endpoint_value(me, 1, Some("zone-a")),
//!     Duration::from_secs(10),
//! )
//! .await?;
//!
//! // On each client:
//! let make = |addr: SocketAddr| {
//!     tower::service_fn(move |_: ()| async move { Ok::<_, std::convert::Infallible>(addr) })
//! };
//! let discover = EtcdDiscover::new(&["http://127.0.0.1:2379"], "/services/checkout/", make);
//! let balance = Balance::new(discover, RoundRobin::new());
//!
//! // When the server stops:
//! registration.stop().await?;
//! # Ok(()) }
//! ```

mod client;
mod error;
mod follow;
mod register;
mod value;

use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tower::discover::Change;

pub use self::error::{EtcdError, EtcdErrorKind};
use self::follow::{Counters, Follow, Update};
pub use self::register::Registration;
pub use self::value::{endpoint_value, parse_value, EtcdEndpoint, ValueError, MAX_VALUE_LEN};
use super::located::Tracked;
use crate::endpoint::Weighted;

/// How long connecting to etcd, and one list or watch request, may take
/// unless told otherwise; also the HTTP/2 keep-alive that finds a dead
/// connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The longest pause between retries while etcd fails, unless told
/// otherwise.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A `Discover` over the endpoints registered under an etcd key prefix.
///
/// # Behaviour
///
/// * On the first poll a task is spawned (on tokio) that connects, lists
///   the prefix, and watches it from the list's revision. Each key is an
///   endpoint; its value says the address, weight and zone
///   ([`parse_value`]). Two keys for one address make one endpoint, with the
///   larger weight.
/// * A new address gets a service from `make(addr)`, kept for as long as
///   the address is listed: a changed weight or zone re-inserts *the same*
///   service; weight 0 drains it (no new requests, those in flight finish).
///   A deleted key (a server that stopped, a lease that ran out) removes it.
/// * After a disconnect the watch resumes from the revision after the last
///   one seen, so no change is missed and nothing is listed again; only
///   when that revision has been compacted is the prefix listed again, and
///   the new list replaces the set (only differences are yielded).
/// * While etcd is unreachable the stream yields an [`EtcdError`] for each
///   failed attempt (retried after 50 ms, doubling, at most
///   [`DEFAULT_MAX_BACKOFF`]); the balancer logs it and keeps the endpoints
///   it has.
/// * The task ends when the stream is dropped.
///
/// # Cost
///
/// Each watch response rebuilds the set (O(n) in the keys under the prefix)
/// and diffs it against the last one, on the task and the discovery
/// worker; nothing runs per request.
///
/// # Weights
///
/// From the values: 1 unless given; 0 drains.
///
/// # No endpoints
///
/// An empty prefix is an empty set (that is what etcd says, unlike a
/// failure, which keeps the last set).
///
/// # Bad input
///
/// A value that is not an endpoint (bad address, bad JSON, too large) is
/// logged at `warn` and ignored: the key keeps its last good value, or
/// stays out of the set if it never had one. Nothing panics.
pub struct EtcdDiscover<S, F> {
    endpoints: Vec<String>,
    prefix: String,
    connect_timeout: Duration,
    max_backoff: Duration,
    make: F,
    tracked: Tracked<S>,
    counters: Arc<Counters>,
    task: Option<(mpsc::UnboundedReceiver<Update>, JoinHandle<()>)>,
}

impl<S, F> EtcdDiscover<S, F>
where
    F: FnMut(SocketAddr) -> S,
    S: Clone,
{
    /// Follows the keys under `prefix` on the etcd cluster at `endpoints`
    /// (`http://host:port` URLs), each address with a service from `make`.
    /// It talks to the first endpoint that answers, and after a failure
    /// tries them again in order.
    pub fn new<E: AsRef<str>>(endpoints: &[E], prefix: impl Into<String>, make: F) -> Self {
        Self {
            endpoints: endpoints.iter().map(|e| e.as_ref().to_owned()).collect(),
            prefix: prefix.into(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_backoff: DEFAULT_MAX_BACKOFF,
            make,
            tracked: Tracked::default(),
            counters: Arc::default(),
            task: None,
        }
    }

    /// How long connecting and each list or watch request may take
    /// ([`DEFAULT_CONNECT_TIMEOUT`] unless set; at least 1 ms).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The longest pause between retries while etcd fails
    /// ([`DEFAULT_MAX_BACKOFF`] unless set; at least 1 ms).
    #[must_use]
    pub fn max_backoff(mut self, max: Duration) -> Self {
        self.max_backoff = max.max(Duration::from_millis(1));
        self
    }

    /// How many times the prefix has been listed: once at start, and once
    /// more after each compacted watch revision.
    pub fn lists(&self) -> usize {
        self.counters.lists.load(Ordering::Relaxed)
    }

    /// How many watches have been started: one per connection.
    pub fn watches(&self) -> usize {
        self.counters.watches.load(Ordering::Relaxed)
    }
}

impl<S, F> Stream for EtcdDiscover<S, F>
where
    F: FnMut(SocketAddr) -> S + Unpin,
    S: Clone + Unpin,
{
    type Item = Result<Change<SocketAddr, Weighted<S>>, EtcdError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.task.is_none() {
            let (tx, rx) = mpsc::unbounded_channel();
            let follow = Follow {
                endpoints: this.endpoints.clone(),
                prefix: this.prefix.clone(),
                connect_timeout: this.connect_timeout,
                max_backoff: this.max_backoff,
                counters: Arc::clone(&this.counters),
                tx,
            };
            this.task = Some((rx, tokio::spawn(follow.run())));
        }
        loop {
            if let Some(change) = this.tracked.next_change() {
                return Poll::Ready(Some(Ok(change)));
            }
            let Some((rx, _)) = &mut this.task else {
                return Poll::Ready(None);
            };
            match rx.poll_recv(cx) {
                Poll::Ready(Some(Update::Set(set))) => this.tracked.update(set, &mut this.make),
                Poll::Ready(Some(Update::Error(error))) => return Poll::Ready(Some(Err(error))),
                // The task ended (the runtime is shutting down).
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S, F> Drop for EtcdDiscover<S, F> {
    fn drop(&mut self) {
        if let Some((_, task)) = &self.task {
            task.abort();
        }
    }
}

impl<S, F> fmt::Debug for EtcdDiscover<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdDiscover")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("known", &self.tracked.len())
            .field("lists", &self.counters.lists.load(Ordering::Relaxed))
            .field("watches", &self.counters.watches.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    //! The error's words and causes.

    use super::{EtcdError, EtcdErrorKind};
    use std::error::Error as _;

    #[test]
    fn says_the_step_and_keeps_the_cause() {
        let error = EtcdError::status("watch", tonic::Status::unavailable("gone"));
        assert_eq!(
            error.to_string(),
            "etcd watch: gRPC status Unavailable: gone"
        );
        assert_eq!(error.kind(), EtcdErrorKind::Status);
        assert!(error.source().is_some());
        let error = EtcdError::timeout("list");
        assert_eq!(error.to_string(), "etcd list: timed out");
        assert!(error.is_timeout() && error.source().is_none());
        let error = EtcdError::protocol("grant", "lease refused");
        assert_eq!(error.to_string(), "etcd grant: lease refused");
        assert_eq!(EtcdError::no_endpoints().kind(), EtcdErrorKind::Connect);
    }
}
