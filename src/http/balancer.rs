//! The HTTP preset: one named type for a pool of HTTP/1 backends.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use bytes::Bytes;
use http_body::Body;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::preset::{common_setters, BuildError, Common, Preset, Stack};
use super::{SentBody, SetAuthority};
use crate::classify::ServerErrors;
use crate::error::BoxError;
use crate::pick::{BoxPick, P2c, Pick};
use crate::retry::ReplayBody;

/// The client every backend of the preset shares: hyper-util's pooled
/// HTTP/1 client, sending the retry layer's replayable bodies.
pub type HttpClient<B> = Client<HttpConnector, SentBody<ReplayBody<B>>>;

/// One backend of [`Balancer`]: the shared client pointed at its address,
/// with a per-attempt timeout, in-flight counting, its weight and health.
pub type EndpointService<B = Full<Bytes>> = Stack<SetAuthority<HttpClient<B>>, ServerErrors>;

/// The picker of [`Balancer`]: any picker, boxed, so that the choice does
/// not change the type.
pub type Picker<B = Full<Bytes>> = BoxPick<http::Request<ReplayBody<B>>, EndpointService<B>>;

/// A balanced, health-checked, retried HTTP client over a pool of backends,
/// built by [`Builder`]: `Clone`, `Send` and `Sync`, a `Service` of
/// `http::Request<B>` that answers `http::Response` with a streamed body. Keep
/// one in axum state, or anywhere, under this one name.
///
/// The stack, from the caller inwards: [`Retry`](crate::retry::Retry) (budgeted, re-picks
/// another backend), [`Balance`](crate::Balance) (the picker, P2c by default), and per
/// backend [`EndpointService`]: health, weight, in-flight counting to the end of
/// the response body, the per-attempt timeout, and the shared client with
/// the backend's address set on each request's URI.
///
/// # Methods
///
/// The alias names a [`Retry`](crate::retry::Retry) around a
/// [`Balance`](crate::Balance), so the balancer's own methods are one
/// [`get_ref`](crate::retry::Retry::get_ref) away:
///
/// * [`get_ref().wait_for(|keys| ..)`](crate::Balance::wait_for): wait
///   until the endpoint set satisfies a condition (say, every backend has
///   joined);
/// * [`get_ref().endpoints()`](crate::Balance::endpoints),
///   [`get_ref().len()`](crate::Balance::len): the current set, keys and
///   weights;
/// * [`get_ref().read_endpoints(|keys, services| ..)`](crate::Balance::read_endpoints):
///   read each [`EndpointService`], say its health through
///   [`Healthy::health`](crate::health::Healthy::health) or its requests in
///   flight;
/// * [`get_ref().wait()`](crate::Balance::wait): how long a request waits for
///   an endpoint before failing with [`NoEndpoints`](crate::NoEndpoints).
///
/// Being a `Service`, it is called with `ready().await?.call(..)`, or
/// [`oneshot`](tower::ServiceExt::oneshot) on a clone.
pub type Balancer<B = Full<Bytes>> = Preset<SetAuthority<HttpClient<B>>, ServerErrors, Picker<B>>;

/// Builds a [`Balancer`].
///
/// ```
/// use std::time::Duration;
/// use tower_lb::http::{Balancer, Builder};
/// use tower_lb::pick::LeastConnections;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_lb::BoxError> {
/// let balancer: Balancer = Builder::new()
///     .backend("127.0.0.1:9001".parse()?)
///     .backend_weighted("127.0.0.1:9002".parse()?, 3)
///     .picker(LeastConnections::new())
///     .health_path("/healthz")
///     .attempt_timeout(Duration::from_secs(5))
///     .build()?;
/// // `balancer` is a `tower::Service<http::Request<Full<Bytes>>>`; clones share the pool.
/// # let _ = balancer;
/// # Ok(())
/// # }
/// ```
///
/// `build` spawns the balancer's discovery worker and health tasks, so it
/// runs inside a tokio runtime.
#[must_use]
pub struct Builder<B = Full<Bytes>> {
    common: Common,
    picker: Option<Picker<B>>,
    connect_timeout: Option<Duration>,
    pool_idle_timeout: Option<Duration>,
    pool_max_idle_per_host: usize,
    _body: PhantomData<fn(B)>,
}

impl<B> fmt::Debug for Builder<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("common", &self.common)
            .field("picker", &self.picker)
            .field("connect_timeout", &self.connect_timeout)
            .field("pool_idle_timeout", &self.pool_idle_timeout)
            .field("pool_max_idle_per_host", &self.pool_max_idle_per_host)
            .finish()
    }
}

impl<B> Default for Builder<B> {
    fn default() -> Self {
        Self {
            common: Common::default(),
            picker: None,
            connect_timeout: Some(Duration::from_secs(5)),
            pool_idle_timeout: Some(Duration::from_secs(90)),
            pool_max_idle_per_host: usize::MAX,
            _body: PhantomData,
        }
    }
}

impl<B> Builder<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    /// A builder with the defaults: P2c, passive outlier detection, no
    /// active probe, [`RetryPolicy::new`](crate::retry::RetryPolicy::new),
    /// 30 s per attempt, 5 s to connect.
    pub fn new() -> Self {
        Self::default()
    }

    common_setters!();

    /// The picker ([`P2c`] by default).
    pub fn picker<P>(mut self, picker: P) -> Self
    where
        P: Pick<http::Request<ReplayBody<B>>, EndpointService<B>>,
    {
        self.picker = Some(BoxPick::new(picker));
        self
    }

    /// How long connecting to a backend may take (5 s by default; `None`
    /// waits as long as the system does).
    pub fn connect_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long an idle pooled connection is kept (90 s by default).
    pub fn pool_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// The most idle connections kept per backend (no limit by default).
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.pool_max_idle_per_host = max;
        self
    }

    /// Builds the balancer and starts its discovery worker and health
    /// tasks on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn build(self) -> Result<Balancer<B>, BuildError> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(self.connect_timeout);
        connector.set_nodelay(true);
        let client: HttpClient<B> = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_max_idle_per_host(self.pool_max_idle_per_host)
            .build(connector);
        let picker = self.picker.unwrap_or_else(|| BoxPick::new(P2c::new()));
        self.common.build(
            move |addr| SetAuthority::from_addr(client.clone(), addr),
            ServerErrors,
            picker,
        )
    }
}
