//! `HealthDiscover`: wraps every discovered endpoint in [`Healthy`] and runs
//! its health task; `HealthLayer` builds it in a `ServiceBuilder`.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use crate::classify::ServerErrors;
use futures_core::Stream;
use pin_project_lite::pin_project;
use tokio::sync::oneshot;
use tower::discover::{Change, Discover};
use tower::Layer;

use super::checks::ActiveChecks;
use super::config::HealthConfig;
use super::core::Core;
use super::error::InvalidHealthConfig;
use super::registry::HealthRegistry;
use super::service::Healthy;
use super::state::EndpointState;
use super::task::{self, Active};

pin_project! {
    /// A `Discover` adapter: every inserted endpoint becomes a [`Healthy`]
    /// with its own health task; a removed endpoint's task stops, and so do
    /// all of them when the adapter is dropped (with its balancer's worker).
    ///
    /// Inserting a key already present replaces its health state: the new
    /// service starts healthy, with fresh counters.
    pub struct HealthDiscover<D, K, C = ServerErrors> {
        #[pin]
        inner: D,
        tracked: Tracked<K>,
        classify: C,
    }
}

/// The adapter's own record of its endpoints' tasks.
struct Tracked<K> {
    registry: HealthRegistry<K>,
    /// Dropping a sender stops that endpoint's task.
    cancels: HashMap<K, oneshot::Sender<()>>,
    active: Option<ActiveChecks<K>>,
}

impl<K> Drop for Tracked<K> {
    fn drop(&mut self) {
        self.cancels.clear();
        self.registry.clear();
    }
}

impl<D, K, C> HealthDiscover<D, K, C> {
    /// Health-checks the endpoints of `inner` as `config` says.
    pub fn new(inner: D, config: HealthConfig<K, C>) -> Result<Self, InvalidHealthConfig> {
        config.validate()?;
        Ok(Self::from_valid(inner, config))
    }

    fn from_valid(inner: D, config: HealthConfig<K, C>) -> Self {
        let thresholds = config
            .active
            .as_ref()
            .map_or((1, 1), |active| (active.rise, active.fall));
        let seed = config.active.as_ref().and_then(|active| active.seed);
        let core = Core::new(
            config.passive,
            config.slow_start,
            config.all_unhealthy,
            thresholds,
            seed,
        )
        .with_max_pushback(config.max_pushback);
        Self {
            inner,
            tracked: Tracked {
                registry: HealthRegistry::new(Arc::new(core)),
                cancels: HashMap::new(),
                active: config.active,
            },
            classify: config.classify,
        }
    }

    /// A handle that reads the health of this adapter's endpoints.
    pub fn registry(&self) -> HealthRegistry<K> {
        self.tracked.registry.clone()
    }
}

impl<K> Tracked<K>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
{
    fn insert(&mut self, key: &K) -> Arc<EndpointState> {
        let core = Arc::clone(self.registry.core());
        let endpoint = Arc::new(EndpointState::register(
            Arc::clone(&core),
            format!("{key:?}").into_boxed_str(),
        ));
        if let Some(replaced) = self.registry.insert(key.clone(), Arc::clone(&endpoint)) {
            replaced.deregister();
        }
        let active = self.active.as_ref().map(|active| Active {
            probe: Arc::clone(&active.probe),
            interval: active.interval,
            timeout: active.timeout,
            jitter: active.jitter_or_default(),
        });
        // Replacing the sender stops a replaced endpoint's task.
        self.cancels.remove(key);
        if active.is_some() || core.passive.is_some() || core.slow_start.is_some() {
            let (cancel, cancelled) = oneshot::channel();
            if task::spawn(Arc::clone(&endpoint), key.clone(), active, cancelled) {
                self.cancels.insert(key.clone(), cancel);
            }
        }
        endpoint
    }

    fn remove(&mut self, key: &K) {
        self.cancels.remove(key);
        if let Some(endpoint) = self.registry.remove(key) {
            endpoint.deregister();
        }
    }
}

impl<D, K, C> Stream for HealthDiscover<D, K, C>
where
    D: Discover<Key = K>,
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    C: Clone,
{
    type Item = Result<Change<K, Healthy<D::Service, C>>, D::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        let change = match ready!(this.inner.poll_discover(cx)) {
            Some(Ok(change)) => change,
            Some(Err(error)) => return Poll::Ready(Some(Err(error))),
            None => return Poll::Ready(None),
        };
        Poll::Ready(Some(Ok(match change {
            Change::Insert(key, service) => {
                let endpoint = this.tracked.insert(&key);
                Change::Insert(key, Healthy::new(service, endpoint, this.classify.clone()))
            }
            Change::Remove(key) => {
                this.tracked.remove(&key);
                Change::Remove(key)
            }
        })))
    }
}

impl<D, K, C> fmt::Debug for HealthDiscover<D, K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthDiscover")
            .field("registry", &self.tracked.registry)
            .field("active", &self.tracked.active)
            .finish_non_exhaustive()
    }
}

/// Builds a [`HealthDiscover`] around a `Discover`, so health checks stack
/// in a `ServiceBuilder` under a [`BalanceLayer`](crate::BalanceLayer).
/// Holds a checked configuration only; each `layer` call makes an
/// independent set with its own registry (read each endpoint back with
/// [`Healthy::health`](super::Healthy::health) through
/// [`Balance::read_endpoints`](crate::Balance::read_endpoints)).
pub struct HealthLayer<K, C = ServerErrors> {
    config: HealthConfig<K, C>,
}

impl<K, C> HealthLayer<K, C> {
    /// A layer with `config`, or the reason it cannot work.
    pub fn new(config: HealthConfig<K, C>) -> Result<Self, InvalidHealthConfig> {
        config.validate()?;
        Ok(Self { config })
    }
}

impl<K, C: Clone> Clone for HealthLayer<K, C> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
        }
    }
}

impl<K, C: fmt::Debug> fmt::Debug for HealthLayer<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthLayer")
            .field("config", &self.config)
            .finish()
    }
}

impl<D, K, C: Clone> Layer<D> for HealthLayer<K, C> {
    type Service = HealthDiscover<D, K, C>;

    fn layer(&self, inner: D) -> Self::Service {
        HealthDiscover::from_valid(inner, self.config.clone())
    }
}
