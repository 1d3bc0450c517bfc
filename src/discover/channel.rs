//! Endpoints inserted and removed by application code at run time.

use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use tokio::sync::mpsc;
use tower::discover::Change;

use crate::endpoint::Weighted;

/// A discovery source fed by application code: the [`EndpointSender`] half
/// inserts and removes endpoints, the [`ChannelDiscover`] half goes to the
/// balancer.
///
/// Changes are applied in the order they were sent. Sending never waits: the
/// channel is unbounded because changes are rare next to requests, and the
/// worker takes them in batches.
///
/// ```
/// use tower_lb::discover;
///
/// let (endpoints, discover) = discover::channel();
/// let svc = tower::service_fn(|_: ()| async { Ok::<_, std::convert::Infallible>(()) });
/// endpoints.insert_weighted("10.0.0.1:80", svc, 3).unwrap();
/// endpoints.remove("10.0.0.1:80").unwrap();
/// # let _ = discover;
/// ```
pub fn channel<K, S>() -> (EndpointSender<K, S>, ChannelDiscover<K, S>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (EndpointSender { tx }, ChannelDiscover { rx })
}

/// Inserts and removes endpoints of a balancer; cheap to clone.
pub struct EndpointSender<K, S> {
    tx: mpsc::UnboundedSender<Change<K, Weighted<S>>>,
}

impl<K, S> Clone for EndpointSender<K, S> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<K, S> fmt::Debug for EndpointSender<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointSender")
            .field("closed", &self.tx.is_closed())
            .finish()
    }
}

impl<K, S> EndpointSender<K, S> {
    /// Inserts an endpoint of weight 1, or replaces the endpoint with this key.
    pub fn insert(&self, key: K, service: S) -> Result<(), Closed> {
        self.insert_weighted(key, service, 1)
    }

    /// Inserts an endpoint with a weight, or replaces the endpoint with this
    /// key. Weight 0 keeps the endpoint but sends it no new requests.
    pub fn insert_weighted(&self, key: K, service: S, weight: u32) -> Result<(), Closed> {
        self.send(Change::Insert(key, Weighted::new(service, weight)))
    }

    /// Inserts an endpoint as built (its weight and, with
    /// [`Weighted::with_report`], the record of its self-reported load), or
    /// replaces the endpoint with this key.
    pub fn insert_endpoint(&self, key: K, endpoint: Weighted<S>) -> Result<(), Closed> {
        self.send(Change::Insert(key, endpoint))
    }

    /// Removes the endpoint with this key; new requests stop going to it as
    /// soon as the balancer applies the change, requests already on it
    /// finish. Removing an unknown key is logged and ignored.
    pub fn remove(&self, key: K) -> Result<(), Closed> {
        self.send(Change::Remove(key))
    }

    fn send(&self, change: Change<K, Weighted<S>>) -> Result<(), Closed> {
        self.tx.send(change).map_err(|_| Closed(()))
    }
}

/// The balancer's half of [`channel`]: a `Discover` of the changes sent.
///
/// It ends when every [`EndpointSender`] is dropped; the balancer then keeps
/// the endpoints it has.
pub struct ChannelDiscover<K, S> {
    rx: mpsc::UnboundedReceiver<Change<K, Weighted<S>>>,
}

impl<K, S> fmt::Debug for ChannelDiscover<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelDiscover")
            .field("queued", &self.rx.len())
            .finish()
    }
}

impl<K, S> Stream for ChannelDiscover<K, S> {
    type Item = Result<Change<K, Weighted<S>>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|change| change.map(Ok))
    }
}

/// The balancer behind a [`channel`] is gone, so the change was not applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Closed(());

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the balancer for this endpoint channel has been dropped")
    }
}

impl std::error::Error for Closed {}
