//! The gRPC preset.

use std::net::{SocketAddr, SocketAddrV6};
use std::time::Duration;

use tonic::transport::Endpoint as TonicEndpoint;
use tower_http::classify::{GrpcCode, GrpcErrorsAsFailures};

use super::ReplayChannel;
use crate::http::preset::{common_setters, BuildError, Common, Preset, Stack};
use crate::pick::{BoxPick, P2c, Pick};
use crate::retry::{ReplayBody, RetryPolicy};

/// One backend of [`Balancer`]: a lazily connecting tonic channel with the
/// per-attempt timeout, in-flight counting, its weight and health.
pub type EndpointService = Stack<ReplayChannel, GrpcErrorsAsFailures>;

/// The picker of [`Balancer`]: any picker, boxed.
pub type Picker = BoxPick<http::Request<ReplayBody<tonic::body::Body>>, EndpointService>;

/// A balanced, health-checked, retried gRPC transport over a pool of
/// servers, built by [`Builder`]: `Clone`, a `Service` of
/// `http::Request<tonic::body::Body>`, so any tonic client takes it.
///
/// # Methods
///
/// The alias names a [`Retry`](crate::retry::Retry) around a
/// [`Balance`](crate::Balance), so the balancer's own methods are one
/// [`get_ref`](crate::retry::Retry::get_ref) away:
///
/// * [`get_ref().wait_for(|keys| ..)`](crate::Balance::wait_for): wait
///   until the endpoint set satisfies a condition (say, every server has
///   joined);
/// * [`get_ref().endpoints()`](crate::Balance::endpoints),
///   [`get_ref().len()`](crate::Balance::len): the current set, keys and
///   weights;
/// * [`get_ref().read_endpoints(|keys, services| ..)`](crate::Balance::read_endpoints):
///   read each [`EndpointService`], say its health through
///   [`Healthy::health`](crate::health::Healthy::health) or its requests in
///   flight;
/// * [`get_ref().wait()`](crate::Balance::wait): how long a call waits for
///   an endpoint before failing with [`NoEndpoints`](crate::NoEndpoints).
///
/// Being a `Service`, it is called with `ready().await?.call(..)`, or
/// [`oneshot`](tower::ServiceExt::oneshot) on a clone.
pub type Balancer = Preset<ReplayChannel, GrpcErrorsAsFailures, Picker>;

/// `http://ADDR/`. An IPv6 zone (`%3`) has no place in a URI's authority:
/// it is left out, and the channel connects through the default zone.
fn uri_of(addr: SocketAddr) -> http::Uri {
    let addr = match addr {
        SocketAddr::V6(v6) => SocketAddr::V6(SocketAddrV6::new(*v6.ip(), v6.port(), 0, 0)),
        v4 => v4,
    };
    http::Uri::builder()
        .scheme("http")
        .authority(addr.to_string())
        .path_and_query("/")
        .build()
        .expect("an IP address and a port form a valid authority")
}

/// The classifier of the preset's health checks: the codes by which a
/// server says it failed count, the codes that describe the call do not.
pub fn server_failures() -> GrpcErrorsAsFailures {
    [
        GrpcCode::Cancelled,
        GrpcCode::InvalidArgument,
        GrpcCode::NotFound,
        GrpcCode::AlreadyExists,
        GrpcCode::PermissionDenied,
        GrpcCode::FailedPrecondition,
        GrpcCode::Aborted,
        GrpcCode::OutOfRange,
        GrpcCode::Unimplemented,
        GrpcCode::Unauthenticated,
    ]
    .into_iter()
    .fold(
        GrpcErrorsAsFailures::new(),
        GrpcErrorsAsFailures::with_success,
    )
}

/// Builds a gRPC [`Balancer`]; see the [module docs](super).
#[must_use]
#[derive(Debug)]
pub struct Builder {
    common: Common,
    picker: Option<Picker>,
    connect_timeout: Duration,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            common: Common {
                retry: RetryPolicy::grpc(),
                ..Common::default()
            },
            picker: None,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl Builder {
    /// A builder with the defaults: P2c, passive outlier detection by
    /// [`server_failures`], no active probe,
    /// [`RetryPolicy::grpc`](crate::retry::RetryPolicy::grpc), 30 s per
    /// attempt, 5 s to connect.
    pub fn new() -> Self {
        Self::default()
    }

    common_setters!();

    /// The picker ([`P2c`] by default).
    pub fn picker<P>(mut self, picker: P) -> Self
    where
        P: Pick<http::Request<ReplayBody<tonic::body::Body>>, EndpointService>,
    {
        self.picker = Some(BoxPick::new(picker));
        self
    }

    /// How long connecting to a server may take (5 s by default).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Builds the balancer and starts its discovery worker and health
    /// tasks on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn build(self) -> Result<Balancer, BuildError> {
        let connect_timeout = self.connect_timeout;
        let picker = self.picker.unwrap_or_else(|| BoxPick::new(P2c::new()));
        self.common.build(
            move |addr: SocketAddr| {
                let channel = TonicEndpoint::from(uri_of(addr))
                    .connect_timeout(connect_timeout)
                    .tcp_nodelay(true)
                    .connect_lazy();
                ReplayChannel::new(channel)
            },
            server_failures(),
            picker,
        )
    }
}
