//! What an active check does: the [`Probe`] trait, a TCP connect probe and
//! probes from closures. The HTTP probe is in `http_probe.rs`.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use super::error::InvalidHealthConfig;
use crate::error::BoxError;

/// The future of one probe: `Ok(())` when the endpoint looks healthy.
pub type ProbeFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send + 'static>>;

/// One active check of an endpoint, known by its discovery key.
///
/// The health task calls [`probe`](Probe::probe) on every interval and
/// bounds the future with the configured timeout; an error or a timeout is a
/// failed probe. Probes run off the request path, so boxing is fine.
///
/// Built-in: `HttpProbe` (feature `http`), [`TcpProbe`] and [`probe_fn`].
pub trait Probe<K>: Send + Sync {
    /// Starts one probe of the endpoint with key `key`.
    fn probe(&self, key: &K) -> ProbeFuture;

    /// Checks the probe's own settings when the health layer is built.
    fn validate(&self) -> Result<(), InvalidHealthConfig> {
        Ok(())
    }
}

/// A discovery key that names an address a probe can connect to: a
/// `SocketAddr`, or a string `"host:port"` (an IP literal is used as is, a
/// host name is resolved on every probe).
///
/// For any other key, write the probe with [`probe_fn`].
pub trait ProbeTarget {
    /// The `host:port` to connect to; also the HTTP probe's `Host` header.
    fn probe_target(&self) -> String;
}

impl ProbeTarget for SocketAddr {
    fn probe_target(&self) -> String {
        self.to_string()
    }
}

impl ProbeTarget for str {
    fn probe_target(&self) -> String {
        self.to_owned()
    }
}

impl ProbeTarget for String {
    fn probe_target(&self) -> String {
        self.clone()
    }
}

impl ProbeTarget for Arc<str> {
    fn probe_target(&self) -> String {
        (**self).to_owned()
    }
}

impl ProbeTarget for Box<str> {
    fn probe_target(&self) -> String {
        (**self).to_owned()
    }
}

impl<T: ProbeTarget + ?Sized> ProbeTarget for &T {
    fn probe_target(&self) -> String {
        (**self).probe_target()
    }
}

/// Healthy when a TCP connection to the endpoint's address opens.
///
/// ```
/// use tower_lb::health::{ActiveChecks, TcpProbe};
///
/// let checks = ActiveChecks::<std::net::SocketAddr>::new(TcpProbe);
/// # let _ = checks;
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpProbe;

impl<K: ProbeTarget> Probe<K> for TcpProbe {
    fn probe(&self, key: &K) -> ProbeFuture {
        let target = key.probe_target();
        Box::pin(async move {
            tokio::net::TcpStream::connect(target.as_str()).await?;
            Ok(())
        })
    }
}

/// A probe from a closure: it gets the endpoint's key and returns a future
/// that resolves to `Ok(())` when the endpoint is healthy.
///
/// The future must own what it uses (clone the key into it).
///
/// ```
/// use tower_lb::health::{probe_fn, ActiveChecks};
///
/// let checks = ActiveChecks::new(probe_fn(|key: &&'static str| {
///     let key = *key;
///     async move {
///         if key.ends_with(":80") { Ok(()) } else { Err("not a web server") }
///     }
/// }));
/// # let _ = checks;
/// ```
pub fn probe_fn<F>(check: F) -> ProbeFn<F> {
    ProbeFn { check }
}

/// A probe from a closure; see [`probe_fn`].
#[derive(Clone, Copy)]
pub struct ProbeFn<F> {
    check: F,
}

impl<F> fmt::Debug for ProbeFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeFn").finish_non_exhaustive()
    }
}

impl<K, F, Fut, E> Probe<K> for ProbeFn<F>
where
    F: Fn(&K) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<BoxError>,
{
    fn probe(&self, key: &K) -> ProbeFuture {
        let check = (self.check)(key);
        Box::pin(async move { check.await.map_err(Into::into) })
    }
}
