//! Scorers and hooks: what a user adds to the scoring picker.

use crate::endpoint::ReportSnapshot;
use crate::pick::EndpointInfo;

/// One endpoint as a scorer sees it during one pick.
#[derive(Debug)]
pub struct Candidate<'a, S> {
    /// The endpoint's index in this set.
    pub index: usize,
    /// The endpoint's key hash and weight.
    pub meta: EndpointInfo,
    /// The endpoint service.
    pub service: &'a S,
    /// Its self-reported load, when fresh; `None` when it reports nothing
    /// or its last report is older than the staleness bound.
    pub report: Option<ReportSnapshot>,
    /// The client's own requests in flight on it.
    pub in_flight: usize,
    /// The fewest and the most requests in flight on any eligible endpoint
    /// of this pick: how balanced the fleet is.
    pub fleet_in_flight: (usize, usize),
    /// Whether the request's adapter is loaded there (`true` when the
    /// request needs none).
    pub adapter_loaded: bool,
}

/// A user scorer: a number in `[0, 1]` for one endpoint and one request,
/// higher is better. Values outside are clamped, NaN counts as 0.
///
/// Scorers run for every eligible endpoint of every pick: keep them pure and
/// cheap, no lock, no allocation. A scorer that keeps state (which endpoint
/// holds which prompt prefix) updates it through a [`ScoreHook`].
///
/// Any `Fn(&Req, &Candidate<'_, S>) -> f64 + Send + Sync + 'static` is a
/// scorer.
pub trait Scorer<Req, S>: Send + Sync + 'static {
    /// Scores `candidate` for `request`.
    fn score(&self, request: &Req, candidate: &Candidate<'_, S>) -> f64;
}

impl<Req, S, F> Scorer<Req, S> for F
where
    F: Fn(&Req, &Candidate<'_, S>) -> f64 + Send + Sync + 'static,
{
    fn score(&self, request: &Req, candidate: &Candidate<'_, S>) -> f64 {
        self(request, candidate)
    }
}

/// A hook for stateful scorers: the picker calls
/// [`before_send`](ScoreHook::before_send) with the endpoint it picked, on
/// the caller's task, before the request is sent.
///
/// A hook learns; it reserves nothing. What a request holds while it is
/// sent (requests in flight, queued prefill) is held by guards below the
/// balancer ([`InFlight`](crate::load::InFlight),
/// [`Prefill`](crate::load::Prefill)), which give it back on every path
/// that ends the request, including the ones that never reach the endpoint.
///
/// It runs on the request path: no lock that a pick could wait on, no
/// blocking. Endpoints are named by [`EndpointInfo::key_hash`], which stays
/// the same across endpoint sets.
pub trait ScoreHook<Req>: Send + Sync + 'static {
    /// `request` goes to `endpoint`.
    fn before_send(&self, request: &Req, endpoint: EndpointInfo) {
        let _ = (request, endpoint);
    }

    /// The endpoint set is now `endpoints`: called from the picker's
    /// [`prepare`](crate::pick::Prepare::prepare), on the discovery worker,
    /// whenever the set changes. A hook that keeps state per endpoint drops
    /// the state of those that left here.
    fn endpoints_changed(&self, endpoints: &[EndpointInfo]) {
        let _ = endpoints;
    }
}
