//! The endpoint contract: what the balancer reads of every endpoint service.
//!
//! An endpoint is any `Service` the balancer can weigh: it implements
//! [`Endpoint`], which gives its share of traffic and whether it may take a
//! request now. Every discovery source of this crate yields [`Weighted`]
//! services; the health wrapper passes the weight through and adds
//! availability. Pickers, the balancer and the layers built on them read an
//! endpoint only through this contract.
//!
//! An endpoint may also report its own load: an [`ReportCell`] record
//! that a source (the `metrics` module, or your code) fills and pickers read
//! through [`Endpoint::report`]. A [`Weighted`] endpoint carries one when
//! given ([`Weighted::with_report`]); the wrappers of this crate pass it
//! through. What the client measures itself (requests in flight, latency)
//! reaches pickers through `tower::load::Load`, whose metrics implement
//! [`ClientLoad`].
//!
//! An endpoint may also say where it runs: its zone (a failure domain, such
//! as a Kubernetes `topology.kubernetes.io/zone`) and its node. Sources that
//! know them (Kubernetes, etcd, a backends file's `zone=` field) set them on
//! [`Weighted`]; [`ZonePreference`](crate::pick::ZonePreference) reads the
//! zone to keep traffic in the caller's zone.

pub(crate) mod prefill;
pub(crate) mod report;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::load::Load;
use tower::Service;

pub use self::prefill::{PrefillConfig, PrefillGuard, PrefillState, PrefillStats, TtftModel};
pub use self::report::{Report, ReportCell, ReportDetails, ReportSnapshot, DEFAULT_STALENESS};

/// What the balancer reads of an endpoint service: its share of traffic,
/// relative to the other endpoints, and whether it may take requests now.
///
/// The balancer reads the weight once, when the endpoint is inserted. Weight
/// 0 means the endpoint takes no new requests (it drains); there is no upper
/// bound below `u32::MAX`, and pickers that expand weights into tables scale
/// them down, keeping the proportions (see each picker's docs).
///
/// Implemented by [`Weighted`] (what every source of this crate yields) and
/// by [`Healthy`](crate::health::Healthy), which passes its inner service's
/// weight through. Services of another `Discover` become endpoints through
/// [`DefaultWeight`](crate::discover::DefaultWeight) (weight 1 each).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an endpoint the balancer can weigh",
    label = "not a `tower_lb::endpoint::Endpoint`",
    note = "wrap the `Discover` in `tower_lb::discover::DefaultWeight::new(discover)` (weight 1 for every service), or each service in `tower_lb::endpoint::Weighted::new(service, weight)`",
    note = "coming from `tower::balance`: `ServiceList` becomes `tower_lb::discover::StaticList`, and `PendingRequests` becomes `tower_lb::load::InFlight`"
)]
pub trait Endpoint {
    /// Whether [`is_available`](Endpoint::is_available) can ever return
    /// `false`. The balancer asks every candidate of every pick only when it
    /// is `true` (health-checked endpoints), so plain endpoints pay nothing.
    const CHECKS_AVAILABILITY: bool = false;

    /// The endpoint's weight.
    fn weight(&self) -> u32;

    /// The zone the endpoint runs in, if known. Read once, when the
    /// endpoint is inserted, like the weight.
    fn zone(&self) -> Option<&str> {
        None
    }

    /// Whether the endpoint may take new requests now (health checks set
    /// it); read on every pick when [`CHECKS_AVAILABILITY`](Endpoint::CHECKS_AVAILABILITY) is `true`, so
    /// it must be cheap: an atomic load.
    fn is_available(&self) -> bool {
        true
    }

    /// The load the endpoint reports of itself, if a source fills a record
    /// for it; read on every pick of a picker that scores on it (an
    /// `Arc` dereference, then atomic loads). `None` by default.
    fn report(&self) -> Option<&ReportCell> {
        None
    }

    /// What the client knows of the endpoint's prefill (a model server's
    /// prefix cache, queued prefill and learnt speed), if it keeps it; read
    /// on every pick of [`Scored::ttft`](crate::pick::llm::Scored::ttft).
    /// `None` by default.
    fn prefill(&self) -> Option<&PrefillState> {
        None
    }
}

/// What the client measures of an endpoint itself: the
/// [`Load`] metrics of this crate's wrappers implement it, so that a scoring
/// picker can read requests in flight (and latency, where measured) through
/// `Load`.
pub trait ClientLoad {
    /// Requests this client has in flight on the endpoint.
    fn in_flight(&self) -> usize;

    /// The client's latency estimate for the endpoint, if it keeps one.
    fn latency(&self) -> Option<Duration> {
        None
    }
}

/// A service with a weight: what every discovery source of this crate yields.
///
/// ```
/// use tower_lb::endpoint::{Endpoint, Weighted};
///
/// let svc = Weighted::new(tower::service_fn(|_: ()| async { Ok::<_, std::convert::Infallible>(()) }), 5);
/// assert_eq!(svc.weight(), 5);
/// let plain = Weighted::from(svc.into_inner());
/// assert_eq!(plain.weight(), 1);
/// ```
///
/// A source that knows where an endpoint runs adds its zone and node:
///
/// ```
/// use tower_lb::endpoint::{Endpoint, Weighted};
///
/// let svc = Weighted::new((), 1).with_zone("eu-west-1a").with_node("node-7");
/// assert_eq!(svc.zone(), Some("eu-west-1a"));
/// assert_eq!(svc.node(), Some("node-7"));
/// ```
#[derive(Clone, Debug)]
pub struct Weighted<S> {
    inner: S,
    weight: u32,
    metrics: Option<ReportCell>,
    prefill: Option<PrefillState>,
    zone: Option<Arc<str>>,
    node: Option<Arc<str>>,
}

impl<S> Weighted<S> {
    /// Wraps `inner` with `weight`, in no known zone.
    pub const fn new(inner: S, weight: u32) -> Self {
        Self {
            inner,
            weight,
            metrics: None,
            prefill: None,
            zone: None,
            node: None,
        }
    }

    /// The same endpoint, reporting its load through `metrics` (a clone of
    /// the record its sources fill): [`Endpoint::report`] returns it.
    #[must_use]
    pub fn with_report(mut self, metrics: ReportCell) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The same endpoint, with what the client knows of its prefill (a clone
    /// of the state its [`Prefill`](crate::load::Prefill) wrapper records
    /// into): [`Endpoint::prefill`] returns it.
    #[must_use]
    pub fn with_prefill(mut self, prefill: PrefillState) -> Self {
        self.prefill = Some(prefill);
        self
    }

    /// The same endpoint in `zone`.
    #[must_use]
    pub fn with_zone(mut self, zone: impl Into<Arc<str>>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// The same endpoint on `node` (a Kubernetes node name, a host name).
    #[must_use]
    pub fn with_node(mut self, node: impl Into<Arc<str>>) -> Self {
        self.node = Some(node.into());
        self
    }

    /// The same endpoint with `weight` (0 drains it).
    #[must_use]
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// The node the endpoint runs on, if known.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// The same weight, metrics record, zone and node over `f(inner)`: how
    /// the load wrappers keep the weight outermost, so that a stack built by hand and
    /// one built by the `Discover` adapters have one type.
    pub fn map<T>(self, f: impl FnOnce(S) -> T) -> Weighted<T> {
        Weighted {
            inner: f(self.inner),
            weight: self.weight,
            metrics: self.metrics,
            prefill: self.prefill,
            zone: self.zone,
            node: self.node,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
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

impl<S> Endpoint for Weighted<S> {
    fn weight(&self) -> u32 {
        self.weight
    }

    fn report(&self) -> Option<&ReportCell> {
        self.metrics.as_ref()
    }

    fn prefill(&self) -> Option<&PrefillState> {
        self.prefill.as_ref()
    }

    fn zone(&self) -> Option<&str> {
        self.zone.as_deref()
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
