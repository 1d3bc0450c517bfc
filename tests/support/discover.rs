//! A discovery stream the test scripts, and that reports its own end and
//! drop.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use tokio::sync::{mpsc, watch};
use tower::discover::Change;
use tower_lb::endpoint::Weighted;
use tower_lb::BoxError;

type Item<K, S> = Result<Change<K, Weighted<S>>, BoxError>;

/// What happened to a [`Scripted`] stream, as the balancer's worker saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// The stream returned its end (`None`) to the worker.
    pub ended: bool,
    /// The stream was dropped (the worker stopped).
    pub dropped: bool,
}

/// A `Discover` fed item by item by a [`Script`]: inserts, removes and
/// errors, in order; it ends when the script is dropped.
#[derive(Debug)]
pub struct Scripted<K, S> {
    rx: mpsc::UnboundedReceiver<Item<K, S>>,
    seen: watch::Sender<Seen>,
}

/// The test's half of [`scripted`].
#[derive(Debug)]
pub struct Script<K, S> {
    tx: mpsc::UnboundedSender<Item<K, S>>,
}

/// Watches a [`Scripted`] stream from the test.
#[derive(Clone, Debug)]
pub struct Probe {
    seen: watch::Receiver<Seen>,
}

/// A scripted discovery stream, its script and a probe on it.
pub fn scripted<K, S>() -> (Script<K, S>, Scripted<K, S>, Probe) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (seen, watched) = watch::channel(Seen::default());
    (
        Script { tx },
        Scripted { rx, seen },
        Probe { seen: watched },
    )
}

impl<K, S> Script<K, S> {
    /// Yields an insert with `weight`.
    pub fn insert(&self, key: K, service: S, weight: u32) {
        self.send(Ok(Change::Insert(key, Weighted::new(service, weight))));
    }

    /// Yields a remove.
    pub fn remove(&self, key: K) {
        self.send(Ok(Change::Remove(key)));
    }

    /// Yields a discovery error.
    pub fn fail(&self, message: &str) {
        self.send(Err(message.to_owned().into()));
    }

    /// Whether the stream (and so the worker that owns it) is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    fn send(&self, item: Item<K, S>) {
        // After the worker stopped there is nobody to tell; tests check
        // `is_closed` or the probe for that.
        let _ = self.tx.send(item);
    }
}

impl Probe {
    /// Waits until the worker has seen the stream end.
    pub async fn ended(&mut self) {
        let _ = self.seen.wait_for(|seen| seen.ended).await;
    }

    /// Waits until the stream has been dropped.
    pub async fn dropped(&mut self) {
        // The sender lives in the stream, so its drop also ends the wait.
        let _ = self.seen.wait_for(|seen| seen.dropped).await;
    }

    /// What the stream has seen so far.
    pub fn seen(&self) -> Seen {
        *self.seen.borrow()
    }
}

impl<K, S> Stream for Scripted<K, S> {
    type Item = Item<K, S>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<K, S>>> {
        let next = self.rx.poll_recv(cx);
        if let Poll::Ready(None) = next {
            self.seen.send_modify(|seen| seen.ended = true);
        }
        next
    }
}

impl<K, S> Drop for Scripted<K, S> {
    fn drop(&mut self) {
        self.seen.send_modify(|seen| seen.dropped = true);
    }
}
