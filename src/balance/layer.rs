//! The `BalanceLayer`: a balancer's configuration.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use tower::discover::Discover;
use tower::Layer;

use super::service::{Balance, DEFAULT_WAIT};
use super::worker::Worker;
use crate::endpoint::Endpoint;
use crate::error::BoxError;
use crate::pick::Prepare;

/// Builds a [`Balance`] from a `Discover` stream; holds configuration only.
///
/// As a [`Layer`] it turns a `Discover` into a `Balance` whose worker is
/// spawned on the current tokio runtime (so `layer` must be called inside
/// one); [`BalanceLayer::pair`] hands the worker back instead.
///
/// ```
/// use std::time::Duration;
/// use tower::Layer;
/// use tower_lb::{discover, pick::RoundRobin, BalanceLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let endpoints = discover::StaticList::new([("a", tower::service_fn(|_: ()| async {
///     Ok::<_, std::convert::Infallible>("a")
/// }))]);
/// let balance = BalanceLayer::new(RoundRobin::new())
///     .wait(Duration::from_millis(250))
///     .layer(endpoints);
/// # let _ = balance;
/// # }
/// ```
pub struct BalanceLayer<P> {
    picker: Arc<P>,
    wait: Duration,
}

impl<P> Clone for BalanceLayer<P> {
    fn clone(&self) -> Self {
        Self {
            picker: Arc::clone(&self.picker),
            wait: self.wait,
        }
    }
}

impl<P: fmt::Debug> fmt::Debug for BalanceLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BalanceLayer")
            .field("picker", &self.picker)
            .field("wait", &self.wait)
            .finish()
    }
}

impl<P: Prepare> BalanceLayer<P> {
    /// A layer that balances with `picker`, waiting up to one second for an
    /// endpoint when none can be picked.
    ///
    /// Balancers built from one layer share its picker (and so its round-robin
    /// cursor or random state); their endpoint sets are their own.
    pub fn new(picker: P) -> Self {
        Self {
            picker: Arc::new(picker),
            wait: DEFAULT_WAIT,
        }
    }

    /// How long a request waits for a usable endpoint before it fails with
    /// [`NoEndpoints`](crate::NoEndpoints). `Duration::ZERO` fails at once.
    #[must_use]
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Builds the balancer and spawns its worker on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as `tokio::spawn` does.
    pub fn spawn<D>(&self, discover: D) -> Balance<D::Key, D::Service, P>
    where
        D: Discover + Send + 'static,
        D::Key: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
        D::Service: Endpoint + Clone + Send + Sync + 'static,
        D::Error: Into<BoxError>,
    {
        let (balance, worker) = self.pair(discover);
        tokio::spawn(worker);
        balance
    }

    /// Builds the balancer and returns its [`Worker`] to be run by the caller.
    pub fn pair<D>(&self, discover: D) -> (Balance<D::Key, D::Service, P>, Worker)
    where
        D: Discover + Send + 'static,
        D::Key: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
        D::Service: Endpoint + Clone + Send + Sync + 'static,
        D::Error: Into<BoxError>,
    {
        Balance::from_parts(discover, Arc::clone(&self.picker), self.wait)
    }
}

impl<D, P> Layer<D> for BalanceLayer<P>
where
    D: Discover + Send + 'static,
    D::Key: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    D::Service: Endpoint + Clone + Send + Sync + 'static,
    D::Error: Into<BoxError>,
    P: Prepare,
{
    type Service = Balance<D::Key, D::Service, P>;

    fn layer(&self, discover: D) -> Self::Service {
        self.spawn(discover)
    }
}
