//! The `Balance` service.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::Cache;
use tokio::sync::oneshot;
use tower::discover::Discover;
use tower::Service;

use super::exclude;
use super::future::{ResponseFuture, Wait};
use super::snapshot::{Current, Shared, SnapshotCache};
use super::worker::{self, Worker};
use super::{BalanceLayer, TriedEndpoints};
use crate::endpoint::Endpoint;
use crate::error::{BoxError, NoEndpoints};
use crate::pick::{Pick, Prepare};

/// How long a request waits for an endpoint before it fails, by default.
pub(crate) const DEFAULT_WAIT: Duration = Duration::from_secs(1);

/// A load balancer over a changing set of endpoints; see the
/// [module docs](crate::balance) for the contract.
///
/// `K` is the discovery key, `S` the endpoint service, `P` the picker.
/// Cloning is cheap (a few reference counts) and every clone shares one
/// endpoint set; a task that sends many requests does best to keep its own
/// clone, whose cached view of the set then stays warm.
pub struct Balance<K, S, P: Prepare> {
    shared: Arc<Shared<K, S, P::Table>>,
    /// This handle's copy of the current set; refreshed on every call when
    /// the worker has published a newer one.
    cache: SnapshotCache<K, S, P::Table>,
    picker: Arc<P>,
    wait: Duration,
    /// Dropped with the last handle, which tells the worker to stop.
    _alive: Arc<oneshot::Sender<()>>,
}

impl<K, S, P: Prepare> Clone for Balance<K, S, P> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            cache: self.cache.clone(),
            picker: Arc::clone(&self.picker),
            wait: self.wait,
            _alive: Arc::clone(&self._alive),
        }
    }
}

impl<K, S, P> fmt::Debug for Balance<K, S, P>
where
    K: fmt::Debug,
    P: Prepare + fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balance")
            .field("endpoints", &self.shared.current.load().keys)
            .field("picker", &self.picker)
            .field("wait", &self.wait)
            .finish()
    }
}

impl<K, S, P> Balance<K, S, P>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    S: Endpoint + Clone + Send + Sync + 'static,
    P: Prepare,
{
    /// A balancer over `discover` that picks with `picker`, with its
    /// discovery worker spawned on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as `tokio::spawn` does; use
    /// [`Balance::pair`] to run the worker elsewhere.
    pub fn new<D>(discover: D, picker: P) -> Self
    where
        D: Discover<Key = K, Service = S> + Send + 'static,
        D::Error: Into<BoxError>,
    {
        BalanceLayer::new(picker).spawn(discover)
    }

    /// A balancer and its discovery [`Worker`], for callers that run the
    /// worker on an executor of their choosing. Until the worker runs, the
    /// set is empty.
    pub fn pair<D>(discover: D, picker: P) -> (Self, Worker)
    where
        D: Discover<Key = K, Service = S> + Send + 'static,
        D::Error: Into<BoxError>,
    {
        BalanceLayer::new(picker).pair(discover)
    }

    pub(crate) fn from_parts<D>(discover: D, picker: Arc<P>, wait: Duration) -> (Self, Worker)
    where
        D: Discover<Key = K, Service = S> + Send + 'static,
        D::Error: Into<BoxError>,
    {
        let shared = Arc::new(Shared::new(picker.prepare(&[])));
        let (alive, closed) = oneshot::channel();
        let run = worker::run(discover, Arc::clone(&picker), Arc::clone(&shared), closed);
        let worker = Worker::new(run);
        let balance = Self {
            cache: Cache::new(Current(Arc::clone(&shared))),
            shared,
            picker,
            wait,
            _alive: Arc::new(alive),
        };
        (balance, worker)
    }
}

impl<K, S, P: Prepare> Balance<K, S, P> {
    /// How many endpoints the current set holds (usable or not).
    pub fn len(&self) -> usize {
        self.shared.current.load().keys.len()
    }

    /// Whether the current set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The keys of the current set, with each endpoint's weight.
    pub fn endpoints(&self) -> Vec<(K, u32)>
    where
        K: Clone,
    {
        let snapshot = self.shared.current.load();
        snapshot
            .keys
            .iter()
            .zip(&snapshot.metas)
            .map(|(key, meta)| (key.clone(), meta.weight()))
            .collect()
    }

    /// Waits until the set's keys satisfy `ready`, checking now and after
    /// every change the worker publishes.
    ///
    /// Useful at start-up ("wait for discovery to find three endpoints") and
    /// to know that an insert or remove has taken effect. It waits for as long
    /// as it takes: wrap it in `tokio::time::timeout` to bound it.
    pub async fn wait_for<F>(&self, mut ready: F)
    where
        F: FnMut(&[K]) -> bool,
    {
        loop {
            let notified = self.shared.changed.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check, so a publish in between is not missed.
            notified.as_mut().enable();
            if ready(&self.shared.current.load().keys) {
                return;
            }
            notified.await;
        }
    }

    /// How long a request waits for an endpoint before failing with
    /// [`NoEndpoints`].
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// Reads the current set in place: `read` sees every endpoint's key and
    /// service, index for index. For reports (health), not for the request
    /// path: the set stays loaded while `read` runs.
    pub fn read_endpoints<R>(&self, read: impl FnOnce(&[K], &[S]) -> R) -> R {
        let snapshot = self.shared.current.load();
        read(&snapshot.keys, &snapshot.services)
    }
}

impl<K, S, P> Balance<K, S, P>
where
    K: Clone + fmt::Debug,
    S: Endpoint + Clone,
    P: Prepare,
{
    /// Picks an endpoint for `request` without sending it there: its key
    /// and a clone of its service, or `None` while the set has none to
    /// pick. Endpoints in `tried` are avoided while others remain, and the
    /// pick is recorded there.
    ///
    /// For callers that must know the endpoint before they write the
    /// request: disaggregated serving names the prefill server in the body
    /// it sends to both servers of a pair.
    #[cfg(feature = "llm")]
    pub(crate) fn pick_endpoint<Req>(
        &self,
        request: &Req,
        tried: &TriedEndpoints,
    ) -> Result<Option<(K, S)>, crate::error::Saturated>
    where
        P: Pick<Req, S>,
    {
        let snapshot = self.shared.current.load();
        let picked = exclude::pick(&snapshot, &*self.picker, request, Some(tried))?;
        Ok(picked.map(|i| (snapshot.keys[i].clone(), snapshot.services[i].clone())))
    }

    /// Resolves when the endpoint set changes next (a future of its own,
    /// borrowing nothing).
    #[cfg(feature = "llm")]
    pub(crate) fn next_change(&self) -> impl std::future::Future<Output = ()> + Send + 'static
    where
        K: Send + Sync + 'static,
        S: Send + Sync + 'static,
    {
        let shared = Arc::clone(&self.shared);
        async move { shared.changed.notified().await }
    }
}

impl<K, S, P, Req> Service<Req> for Balance<K, S, P>
where
    K: fmt::Debug + Send + Sync + 'static,
    S: Service<Req> + Endpoint + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    P: Pick<Req, S>,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req>;

    /// Always ready: readiness of the picked endpoint is driven inside the
    /// response future.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let snapshot = self.cache.load();
        let picker = &*self.picker;
        let picked =
            TriedEndpoints::with_current(|tried| exclude::pick(snapshot, picker, &request, tried));
        match picked {
            Err(shed) => {
                tracing::debug!(error = %shed, "request shed");
                ResponseFuture::failed(shed.into())
            }
            Ok(Some(i)) => {
                let span = tracing::debug_span!("balance", endpoint = ?snapshot.keys[i]);
                ResponseFuture::ready(snapshot.services[i].clone(), request, span)
            }
            Ok(None) => {
                let span = tracing::debug_span!("balance", endpoint = tracing::field::Empty);
                let known = snapshot.keys.len();
                tracing::debug!(known, "no endpoint to pick; waiting for the set to change");
                let wait = wait_for_endpoint(
                    Arc::clone(&self.shared),
                    Arc::clone(&self.picker),
                    request,
                    TriedEndpoints::current(),
                    self.wait,
                    span.clone(),
                );
                ResponseFuture::waiting(wait, span)
            }
        }
    }
}

fn wait_for_endpoint<K, S, P, Req>(
    shared: Arc<Shared<K, S, P::Table>>,
    picker: Arc<P>,
    request: Req,
    tried: Option<TriedEndpoints>,
    wait: Duration,
    span: tracing::Span,
) -> Wait<S, Req>
where
    K: fmt::Debug + Send + Sync + 'static,
    S: Endpoint + Clone + Send + Sync + 'static,
    P: Pick<Req, S>,
    Req: Send + 'static,
{
    Box::pin(async move {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = shared.changed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            let known = {
                let snapshot = shared.current.load();
                if let Some(i) = exclude::pick(&snapshot, &*picker, &request, tried.as_ref())? {
                    span.record("endpoint", tracing::field::debug(&snapshot.keys[i]));
                    return Ok((snapshot.services[i].clone(), request));
                }
                snapshot.keys.len()
            };
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let error = NoEndpoints {
                    waited: wait,
                    known,
                };
                tracing::warn!(%error, "request failed: no endpoint");
                return Err(error.into());
            }
        }
    })
}
