//! Endpoint weights.

use std::task::{Context, Poll};

use tower::load::Load;
use tower::Service;

/// What the balancer reads of an endpoint service: its share of traffic,
/// relative to the other endpoints, and whether it may take requests now.
///
/// The balancer reads the weight once, when the endpoint is inserted. Weight 0 means
/// the endpoint takes no new requests (it drains); there is no upper bound
/// below `u32::MAX`, and pickers that expand weights into tables scale them
/// down, keeping the proportions (see each picker's docs).
///
/// The wrappers of this crate ([`InFlight`](crate::load::InFlight),
/// [`PeakEwma`](crate::load::PeakEwma)) pass their inner service's weight
/// and availability through, so the weight can be set at the source with [`Weighted`] and
/// survive any number of layers.
pub trait Weight {
    /// Whether [`is_available`](Weight::is_available) can ever return
    /// `false`. The balancer asks every candidate of every pick only when it
    /// is `true` (health-checked endpoints), so plain endpoints pay nothing.
    const GATED: bool = false;

    /// The endpoint's weight.
    fn weight(&self) -> u32;

    /// Whether the endpoint may take new requests now (health checks set
    /// it); read on every pick when [`GATED`](Weight::GATED) is `true`, so
    /// it must be cheap: an atomic load.
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
