//! Scorers and hooks: what a user adds to the scoring picker.

use crate::endpoint::LoadFacts;
use crate::pick::Meta;

/// One endpoint as a scorer sees it during one pick.
#[derive(Debug)]
pub struct Candidate<'a, S> {
    /// The endpoint's index in this set.
    pub index: usize,
    /// The endpoint's key hash and weight.
    pub meta: Meta,
    /// The endpoint service.
    pub service: &'a S,
    /// Its self-reported load, when fresh; `None` when it reports nothing
    /// or its last report is older than the staleness bound.
    pub facts: Option<LoadFacts>,
    /// The client's own requests in flight on it.
    pub in_flight: usize,
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

/// Hooks around a request's life, for stateful scorers: the picker calls
/// [`before_send`](ScoreHook::before_send) with the endpoint it picked, on
/// the caller's task, before the request is sent; an
/// [`AnswerHooks`](crate::load::AnswerHooks) wrapper around each endpoint
/// calls [`answer_end`](ScoreHook::answer_end) when its answer ends.
///
/// Both run on the request path: no lock that a pick could wait on, no
/// blocking. Endpoints are named by [`Meta::key_hash`], which stays the same
/// across endpoint sets.
pub trait ScoreHook<Req>: Send + Sync + 'static {
    /// `request` goes to `endpoint`.
    fn before_send(&self, request: &Req, endpoint: Meta) {
        let _ = (request, endpoint);
    }

    /// A request sent to the endpoint of `key_hash` has ended.
    fn answer_end(&self, key_hash: u64) {
        let _ = key_hash;
    }

    /// The endpoint set is now `endpoints`: called from the picker's
    /// [`prepare`](crate::pick::Prepare::prepare), on the discovery worker,
    /// whenever the set changes. A hook that keeps state per endpoint drops
    /// the state of those that left here.
    fn endpoints_changed(&self, endpoints: &[Meta]) {
        let _ = endpoints;
    }
}
