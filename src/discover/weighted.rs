//! Endpoint weights.

use std::task::{Context, Poll};

use tower::load::Load;
use tower::Service;

/// An endpoint service's share of traffic, relative to the other endpoints.
///
/// The balancer reads it once, when the endpoint is inserted. Weight 0 means
/// the endpoint takes no new requests (it drains); there is no upper bound
/// below `u32::MAX`, and pickers that expand weights into tables scale them
/// down, keeping the proportions (see each picker's docs).
///
/// The wrappers of this crate ([`InFlight`](crate::load::InFlight),
/// [`PeakEwma`](crate::load::PeakEwma)) pass their inner service's weight
/// through, so the weight can be set at the source with [`Weighted`] and
/// survive any number of layers.
pub trait Weight {
    /// True for services whose `is_available` can return false (health checks); the balancer only checks availability on picks when it is true.
    const GATED: bool = false;

    /// The endpoint's weight.
    fn weight(&self) -> u32;

    /// Whether the endpoint may take new requests now; read on every pick.
    fn is_available(&self) -> bool {
        true
    }
}

/// A service with a weight: what every discovery source of this crate yields.
///
/// ```
/// use tower_lb::discover::{Weight, Weighted};
///
/// let svc = Weighted::new(tower::service_fn(|_: ()| async { Ok::<_, std::convert::Infallible>(()) }), 5);
/// assert_eq!(svc.weight(), 5);
/// let plain = Weighted::from(svc.into_inner());
/// assert_eq!(plain.weight(), 1);
/// ```
#[derive(Clone, Debug)]
pub struct Weighted<S> {
    inner: S,
    weight: u32,
}

impl<S> Weighted<S> {
    /// Wraps `inner` with `weight`.
    pub const fn new(inner: S, weight: u32) -> Self {
        Self { inner, weight }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// Weight 1.
impl<S> From<S> for Weighted<S> {
    fn from(inner: S) -> Self {
        Self::new(inner, 1)
    }
}

impl<S> Weight for Weighted<S> {
    fn weight(&self) -> u32 {
        self.weight
    }
}

impl<S: Load> Load for Weighted<S> {
    type Metric = S::Metric;

    fn load(&self) -> S::Metric {
        self.inner.load()
    }
}

impl<S, Req> Service<Req> for Weighted<S>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> S::Future {
        self.inner.call(req)
    }
}
