//! What the HTTP and gRPC presets share: the settings and the stack they
//! build from them.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use tower::discover::Change;
use tower_layer::Layer;

use super::source::Source;
use super::ResponseTimeout;
use crate::balance::{Balance, BalanceLayer};
use crate::endpoint::Weighted;
use crate::health::{
    ActiveChecks, HealthConfig, HealthDiscover, Healthy, HttpProbe, InvalidHealthConfig,
    OutlierDetection,
};
use crate::load::InFlight;
use crate::pick::Prepare;
use crate::retry::{Retry, RetryLayer, RetryPolicy};

/// One backend of a preset, around the service `E` that talks to it: health
/// (passive outlier detection, active probes when asked), then the weight,
/// then requests in flight counted to the end of the response body, then
/// the per-attempt [`ResponseTimeout`] (its clock starts when the request
/// body has been sent), which the health layer sees fail.
pub type Stack<E, C> = Healthy<Weighted<InFlight<ResponseTimeout<E>>>, C>;

/// A preset's whole stack, around the service `E` that talks to one
/// backend: what the HTTP and gRPC `Balancer` aliases name.
pub type Preset<E, C, P> = Retry<Balance<SocketAddr, Stack<E, C>, P>>;

/// Why a preset could not be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// No backend, backends file or discovery source was given.
    NoBackends,
    /// A health setting cannot work (a zero interval, a path that is not a
    /// path, ...).
    Health(InvalidHealthConfig),
    /// A setting of the preset cannot work; the text says which.
    Invalid(&'static str),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoBackends => f.write_str(
                "no backends: give at least one backend, a backends file or a discovery source",
            ),
            Self::Health(error) => write!(f, "health checks: {error}"),
            Self::Invalid(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Health(error) => Some(error),
            _ => None,
        }
    }
}

impl From<InvalidHealthConfig> for BuildError {
    fn from(error: InvalidHealthConfig) -> Self {
        Self::Health(error)
    }
}

/// The settings every preset takes.
#[derive(Debug)]
pub(crate) struct Common {
    pub(crate) source: Source,
    pub(crate) health_path: Option<String>,
    pub(crate) health_interval: Duration,
    pub(crate) health_timeout: Duration,
    pub(crate) outlier: OutlierDetection,
    pub(crate) retry: RetryPolicy,
    pub(crate) body_limit: usize,
    pub(crate) attempt_timeout: Duration,
    pub(crate) wait: Duration,
}

impl Default for Common {
    fn default() -> Self {
        Self {
            source: Source::None,
            health_path: None,
            health_interval: Duration::from_secs(1),
            health_timeout: Duration::from_secs(1),
            outlier: OutlierDetection::new(),
            retry: RetryPolicy::new(),
            body_limit: 64 * 1024,
            attempt_timeout: Duration::from_secs(30),
            wait: Duration::from_secs(1),
        }
    }
}

impl Common {
    /// Builds the balanced, retried stack: `make` gives the service that
    /// talks to one address, `classify` says which answers fail.
    pub(crate) fn build<E, C, P>(
        self,
        make: impl Fn(SocketAddr) -> E + Send + 'static,
        classify: C,
        picker: P,
    ) -> Result<Preset<E, C, P>, BuildError>
    where
        E: Clone + Send + Sync + 'static,
        C: Clone + Send + Sync + 'static,
        P: Prepare,
    {
        if self.attempt_timeout.is_zero() {
            return Err(BuildError::Invalid("the attempt timeout must not be zero"));
        }
        let changes = self.source.into_stream().ok_or(BuildError::NoBackends)?;
        let timeout = self.attempt_timeout;
        let endpoints = changes.map(move |change| {
            change.map(|change| match change {
                Change::Insert(addr, weight) => {
                    let endpoint = InFlight::new(ResponseTimeout::new(make(addr), timeout));
                    Change::Insert(addr, Weighted::new(endpoint, weight))
                }
                Change::Remove(addr) => Change::Remove(addr),
            })
        });
        let mut health = HealthConfig::new().passive(self.outlier).classify(classify);
        if let Some(path) = self.health_path {
            health = health.active(
                ActiveChecks::new(HttpProbe::get(path))
                    .interval(self.health_interval)
                    .timeout(self.health_timeout),
            );
        }
        let healthy = HealthDiscover::new(endpoints, health)?;
        let balance = BalanceLayer::new(picker).wait(self.wait).spawn(healthy);
        Ok(RetryLayer::new(self.retry)
            .body_limit(self.body_limit)
            .layer(balance))
    }
}

/// The setters every preset builder has, written once.
macro_rules! common_setters {
    () => {
        /// Adds a backend of weight 1.
        pub fn backend(mut self, addr: std::net::SocketAddr) -> Self {
            self.common.source.push(addr, 1);
            self
        }

        /// Adds a backend with a weight (0 drains it).
        pub fn backend_weighted(mut self, addr: std::net::SocketAddr, weight: u32) -> Self {
            self.common.source.push(addr, weight);
            self
        }

        /// Adds backends of weight 1.
        pub fn backends(mut self, addrs: impl IntoIterator<Item = std::net::SocketAddr>) -> Self {
            for addr in addrs {
                self.common.source.push(addr, 1);
            }
            self
        }

        /// Takes the backends from a file (`ADDR[@WEIGHT]` a line, see
        /// [`FileDiscover`](crate::discover::FileDiscover)), re-read as it
        /// changes; replaces backends given before.
        pub fn backends_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
            self.common.source = $crate::http::source::Source::File(path.into());
            self
        }

        /// Takes the backends from any `Discover` keyed by address whose
        /// services are endpoints (`DnsDiscover`, a
        /// [`channel`](crate::discover::channel) of `()`, your own): its
        /// weights are used, its services are not (the preset makes its own
        /// client for each address). Replaces backends given before.
        pub fn discover<D>(mut self, discover: D) -> Self
        where
            D: tower::discover::Discover<Key = std::net::SocketAddr> + Send + 'static,
            D::Service: $crate::endpoint::Endpoint,
            D::Error: Into<$crate::BoxError>,
        {
            self.common.source =
                $crate::http::source::Source::Stream($crate::http::source::addresses(discover));
            self
        }

        /// Probes `GET path` on every backend (2xx is healthy) every
        /// [`health_interval`](Self::health_interval); without it only
        /// passive outlier detection runs.
        pub fn health_path(mut self, path: impl Into<String>) -> Self {
            self.common.health_path = Some(path.into());
            self
        }

        /// Time between health probes (1 s by default).
        pub fn health_interval(mut self, interval: std::time::Duration) -> Self {
            self.common.health_interval = interval;
            self
        }

        /// How long a health probe may take (1 s by default).
        pub fn health_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.common.health_timeout = timeout;
            self
        }

        /// Passive outlier detection's settings (on by default, with
        /// [`OutlierDetection::new`](crate::health::OutlierDetection::new)).
        pub fn outlier_detection(mut self, detection: $crate::health::OutlierDetection) -> Self {
            self.common.outlier = detection;
            self
        }

        /// The retry policy ([`RetryPolicy::new`](crate::retry::RetryPolicy::new)
        /// by default: 3 attempts within a 20 % budget).
        pub fn retry(mut self, policy: $crate::retry::RetryPolicy) -> Self {
            self.common.retry = policy;
            self
        }

        /// The largest request body held for a retry (64 KiB by default).
        pub fn body_limit(mut self, bytes: usize) -> Self {
            self.common.body_limit = bytes;
            self
        }

        /// How long one attempt may wait for its response head once its
        /// request body has been sent (30 s by default; a slow upload is not
        /// cut off). An attempt that runs out fails with tower's `Elapsed`,
        /// counts as a failure of its endpoint for outlier detection, and is
        /// retried if the request may be.
        pub fn attempt_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.common.attempt_timeout = timeout;
            self
        }

        /// How long a request waits for a usable backend before it fails
        /// with [`NoEndpoints`](crate::NoEndpoints) (1 s by default).
        pub fn wait(mut self, wait: std::time::Duration) -> Self {
            self.common.wait = wait;
            self
        }
    };
}

pub(crate) use common_setters;
