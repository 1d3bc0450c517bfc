//! The discovery worker: applies changes and publishes snapshots.

use std::collections::HashMap;
use std::fmt;
use std::future::{poll_fn, Future};
use std::hash::Hash;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::oneshot;
use tower::discover::{Change, Discover};

use super::snapshot::{Shared, Snapshot};
use super::EndpointName;
use crate::endpoint::Endpoint;
use crate::error::BoxError;
use crate::pick::{key::hash_value, EndpointInfo, Prepare};

/// The task that keeps a [`Balance`](super::Balance)'s endpoint set current.
///
/// It reads the `Discover` stream, applies each `Insert` and `Remove`, and
/// after each batch of changes builds the picker's table and publishes the
/// new set in one atomic swap. It finishes when every handle of its balancer
/// has been dropped. [`Balance::new`](super::Balance::new) spawns it on tokio;
/// [`Balance::pair`](super::Balance::pair) hands it back to run on any
/// executor.
#[must_use = "the balancer's endpoint set does not change unless the worker runs"]
pub struct Worker {
    inner: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker").finish_non_exhaustive()
    }
}

impl Future for Worker {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.inner.as_mut().poll(cx)
    }
}

impl Worker {
    /// Wraps the discovery loop, as [`run`] returns it.
    pub(crate) fn new(run: impl Future<Output = ()> + Send + 'static) -> Self {
        Self {
            inner: Box::pin(run),
        }
    }
}

/// The worker's own, mutable copy of the set.
struct Set<K, S> {
    index: HashMap<K, usize>,
    keys: Vec<K>,
    names: Vec<EndpointName>,
    metas: Vec<EndpointInfo>,
    services: Vec<S>,
    /// What changed since the last publish, for its one info event.
    changed: Counts,
}

/// Inserts, replacements and removals in one batch of changes.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    inserted: usize,
    replaced: usize,
    removed: usize,
}

impl<K, S> Set<K, S>
where
    K: Hash + Eq + Clone + fmt::Debug,
    S: Endpoint + Clone,
{
    fn apply(&mut self, change: Change<K, S>) -> bool {
        match change {
            Change::Insert(key, service) => {
                let mut meta = EndpointInfo::new(hash_value(&key), service.weight());
                if let Some(zone) = service.zone() {
                    meta = meta.with_zone(zone);
                }
                if let Some(&i) = self.index.get(&key) {
                    // Requests already on the old service keep their clone and
                    // finish; new ones go to the replacement.
                    tracing::debug!(endpoint = ?key, weight = meta.weight(), "endpoint replaced");
                    self.changed.replaced += 1;
                    self.metas[i] = meta;
                    self.services[i] = service;
                } else {
                    tracing::debug!(endpoint = ?key, weight = meta.weight(), "endpoint inserted");
                    self.changed.inserted += 1;
                    self.index.insert(key.clone(), self.keys.len());
                    self.names.push(EndpointName::of(&key));
                    self.keys.push(key);
                    self.metas.push(meta);
                    self.services.push(service);
                }
                true
            }
            Change::Remove(key) => match self.index.remove(&key) {
                Some(i) => {
                    tracing::debug!(endpoint = ?key, "endpoint removed");
                    self.changed.removed += 1;
                    self.keys.swap_remove(i);
                    self.names.swap_remove(i);
                    self.metas.swap_remove(i);
                    self.services.swap_remove(i);
                    if let Some(moved) = self.keys.get(i) {
                        self.index.insert(moved.clone(), i);
                    }
                    true
                }
                None => {
                    tracing::warn!(endpoint = ?key, "remove of an unknown endpoint ignored");
                    false
                }
            },
        }
    }
}

/// Applies `discover`'s changes to the set and publishes it in `shared`
/// until `closed` fires.
pub(crate) async fn run<D, P>(
    discover: D,
    picker: Arc<P>,
    shared: Arc<Shared<D::Key, D::Service, P::Table>>,
    closed: oneshot::Receiver<()>,
) where
    D: Discover,
    D::Key: Hash + Eq + Clone + fmt::Debug,
    D::Service: Endpoint + Clone,
    D::Error: Into<BoxError>,
    P: Prepare,
{
    let mut discover = pin!(discover);
    let mut closed = pin!(closed);
    let mut set = Set {
        index: HashMap::new(),
        keys: Vec::new(),
        names: Vec::new(),
        metas: Vec::new(),
        services: Vec::new(),
        changed: Counts::default(),
    };
    let mut ended = false;
    // Consecutive discovery errors: they are logged at 1, 2, 4, 8, … and
    // each one pauses the worker a little longer, so a stream that fails on
    // every poll neither floods the log nor spins a core.
    let mut errors: u32 = 0;
    loop {
        let step = poll_fn(|cx| {
            if closed.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Step::Closed);
            }
            if ended {
                return Poll::Pending;
            }
            // Take every change that is ready now, so a burst (a DNS answer,
            // a file edit) costs one table build rather than one per change.
            let mut dirty = false;
            let mut failed = false;
            let mut budget = BATCH;
            loop {
                if budget == 0 {
                    // A stream that never pends must not starve the
                    // executor: publish what we have and come back.
                    cx.waker().wake_by_ref();
                    break;
                }
                budget -= 1;
                match discover.as_mut().poll_discover(cx) {
                    Poll::Ready(Some(Ok(change))) => {
                        errors = 0;
                        dirty |= set.apply(change);
                    }
                    Poll::Ready(Some(Err(error))) => {
                        errors = errors.saturating_add(1);
                        if errors.is_power_of_two() {
                            let error: BoxError = error.into();
                            tracing::warn!(
                                %error,
                                consecutive = errors,
                                "discovery error; keeping the current endpoints"
                            );
                        }
                        failed = true;
                        break;
                    }
                    Poll::Ready(None) => {
                        tracing::info!(
                            endpoints = set.keys.len(),
                            "discovery stream ended; keeping the current endpoints"
                        );
                        ended = true;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
            let pause = failed.then(|| error_pause(errors));
            match (dirty, pause) {
                (true, pause) => Poll::Ready(Step::Publish(pause)),
                (false, Some(pause)) => Poll::Ready(Step::Pause(pause)),
                (false, None) => Poll::Pending,
            }
        })
        .await;
        let pause = match step {
            Step::Closed => {
                tracing::debug!("every balancer handle dropped; discovery worker stops");
                return;
            }
            Step::Publish(pause) => {
                let table = picker.prepare(&set.metas);
                shared.publish(Snapshot {
                    keys: set.keys.clone(),
                    names: set.names.clone(),
                    metas: set.metas.clone(),
                    services: set.services.clone(),
                    table,
                });
                let Counts {
                    inserted,
                    replaced,
                    removed,
                } = std::mem::take(&mut set.changed);
                // One line a change of the set, however large: the
                // endpoints themselves are named at debug level.
                tracing::info!(
                    endpoints = set.keys.len(),
                    inserted,
                    replaced,
                    removed,
                    "endpoint set changed"
                );
                pause
            }
            Step::Pause(pause) => Some(pause),
        };
        if let Some(pause) = pause {
            let mut sleep = pin!(tokio::time::sleep(pause));
            let stop = poll_fn(|cx| {
                if closed.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(true);
                }
                sleep.as_mut().poll(cx).map(|()| false)
            })
            .await;
            if stop {
                tracing::debug!("every balancer handle dropped; discovery worker stops");
                return;
            }
        }
    }
}

/// How long the worker waits before polling a stream again after its
/// `errors`-th consecutive error: 1 ms, doubling, at most one second.
fn error_pause(errors: u32) -> Duration {
    let exponent = errors.saturating_sub(1).min(10);
    Duration::from_millis(1 << exponent).min(MAX_ERROR_PAUSE)
}

const MAX_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// How many changes one poll of the worker takes before yielding.
const BATCH: usize = 1024;

enum Step {
    Closed,
    /// Publish the set, then pause if the stream just failed.
    Publish(Option<Duration>),
    /// The stream failed and nothing changed: pause before polling again.
    Pause(Duration),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_pauses_grow_to_a_cap() {
        assert_eq!(error_pause(1), Duration::from_millis(1));
        assert_eq!(error_pause(2), Duration::from_millis(2));
        assert_eq!(error_pause(5), Duration::from_millis(16));
        assert_eq!(error_pause(11), Duration::from_millis(1000));
        assert_eq!(error_pause(u32::MAX), MAX_ERROR_PAUSE);
    }
}
