//! The scoring picker: filters, weighted scorers, a choice; saturation
//! admission before it.

mod config;
mod pass;
mod request;
mod scorer;
mod ttft;

use std::fmt;
use std::sync::Arc;

use super::{Candidates, EndpointInfo, Pick, Prepare};
use crate::util::Rng;
#[cfg(doc)]
use crate::{
    endpoint::{ClientLoad, Endpoint},
    error::Saturated,
};

use self::config::Objective;
pub use self::config::{Choice, Saturation, Weights};
pub use self::request::{
    RequestInfo, RequestInfoRef, ScoredRequest, ADAPTER_HEADER, MODEL_HEADER, PRIORITY_HEADER,
};
pub use self::scorer::{Candidate, ScoreHook, Scorer};

type Filter<Req, S> = dyn Fn(&Req, &S) -> bool + Send + Sync;

/// The scoring picker for inference servers: filters, weighted scorers in
/// `[0, 1]`, the highest total (or a weighted random choice); and, before
/// the pick, saturation admission.
///
/// For each request it reads the request's [`RequestInfoRef`] (model, adapter,
/// priority: see [`ScoredRequest`]) and every endpoint's self-reported
/// [`ReportSnapshot`](crate::endpoint::ReportSnapshot) (through
/// [`Endpoint::report`]) and client-side load (through `Load`, whose
/// metric implements [`ClientLoad`]: wrap endpoints in
/// [`InFlight`](crate::load::InFlight) or
/// [`Latency`](crate::load::Latency)).
///
/// 1. **Filters.** An endpoint is eligible when it is allowed (weight,
///    exclusions, health), serves the request's model (the models in its
///    metrics' [`ReportDetails`](crate::endpoint::ReportDetails); none listed: any), has the
///    request's adapter loaded or a free adapter slot, and passes the user
///    filter ([`Scored::filter`]).
/// 2. **Admission.** If every eligible endpoint is saturated (see
///    [`Saturation`]) and the request's priority is below
///    [`Saturation::shed_below`], the request fails at once with
///    [`Saturated`]; others go on and are scored, so they reach the least
///    loaded endpoint.
/// 3. **Scores.** Σ weight × score over the built-in scorers ([`Weights`])
///    and the user's ([`Scored::scorer`]).
/// 4. **Choice.** See [`Choice`]. Then every [`ScoreHook`] hears
///    [`before_send`](ScoreHook::before_send).
///
/// # Time to first token (the LLM default)
///
/// [`Scored::ttft`] (or [`least_ttft`](Scored::least_ttft) on any
/// `Scored`) puts cache affinity and load in one unit: for each eligible
/// server it predicts this request's time to first token there,
///
/// `ttft = base + per_uncached_token × u + per_queued_token × P + per_request_ahead × w`
///
/// * `u`: the prompt's tokens that server lacks: its length less the
///   leading blocks the index of its cache holds
///   ([`PrefillState`](crate::endpoint::PrefillState));
/// * `P`: the uncached tokens of the requests already sent there and not
///   yet at their first token (held by each request's guard, see
///   [`Prefill`](crate::load::Prefill));
/// * `w`: the requests ahead there: its reported queue when fresh, else
///   this client's requests there without a first token;
/// * the four coefficients ([`TtftModel`](crate::endpoint::TtftModel)):
///   that server's own, learnt from every streamed answer's first token,
///   from a prior of 10 ms, 100 µs, 20 µs and 20 ms.
///
/// The least wins. Servers within 5 % plus 1 ms of the least are near-ties
/// (see [`ttft_margin`](Scored::ttft_margin)); among them the request goes
/// to its prompt's *home*, the highest rendezvous hash of its first block
/// and the server's key, so that replicas of the router that know nothing
/// of a prompt still agree where it goes (a request without a prompt goes
/// to a near-tie at random). Nothing else is tuned: a cache hit is worth
/// the prefill it saves, a queue costs the wait it adds, at every load.
///
/// What a replica knows: its own requests (index, queued prefill, in
/// flight) and what servers report (queue, and what they reused, which
/// corrects its index). What it does not: other replicas' requests between
/// two reports. Rendezvous homes make replicas send an unseen prompt to
/// the same server, and reported queues let load override that.
///
/// Endpoints without a prefill state are predicted with the prior, every
/// prompt token uncached and the queue read for the scorers. Weights,
/// [`Choice`] and user scorers do not apply; filters, saturation and hooks
/// do.
///
/// Cost per pick: for each eligible server, a bisection in its index for
/// the prompt (one lookup when its first block is absent, `O(log b)`
/// otherwise) and six atomic loads.
///
/// # Cost
///
/// * **pick**: O(n). One pass reads each endpoint (four atomic loads, plus
///   an `ArcSwap` load when the request names a model or an adapter) into
///   a per-thread scratch list and finds each scorer's range; a second pass
///   over that list scores (plus, per user scorer, one virtual call and a
///   full read of the endpoint's facts). One clock read per pick. The
///   scratch list grows once to the largest set a thread has seen; after
///   that nothing is allocated, and no lock is taken. Measured in
///   `benches/scored.rs` (numbers in `docs/benchmarks.md`).
/// * **prepare**: nothing.
///
/// # Weights
///
/// Endpoint weights are not scores: weight 0 is never picked, other weights
/// do not change the score. To prefer bigger servers, add a user scorer
/// that reads [`Candidate::meta`].
///
/// # No endpoints, missing facts
///
/// With no eligible endpoint, `pick` returns `None` (the balancer waits for
/// the set to change). An endpoint without a metrics record, or whose last
/// report is older than its staleness bound, is scored on the client's
/// requests in flight (queue and KV scorers alike). So is a report that
/// contradicts what the client sees: a queue at a server that reports
/// nothing running while this client has nothing in flight there (a queue
/// forms only behind busy batch slots; a leaked or stuck count would
/// otherwise shun or shed that server while it is idle). A request without
/// facts (no model, no adapter) filters on nothing and has priority 0.
///
/// # Example
///
/// ```
/// use tower_lb::endpoint::{ReportCell, Report, Weighted};
/// use tower_lb::load::InFlight;
/// use tower_lb::pick::{Candidates, EndpointInfo, Pick, Prepare, llm::{RequestInfo, Scored}};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let report = |kv| {
///     let metrics = ReportCell::new();
///     metrics.record(&Report { queue: Some(0), kv_cache_use: Some(kv), ..Report::default() });
///     metrics
/// };
/// let services = [
///     Weighted::new(InFlight::new(()), 1).with_report(report(0.9)),
///     Weighted::new(InFlight::new(()), 1).with_report(report(0.1)),
/// ];
/// let metas = [EndpointInfo::new(1, 1), EndpointInfo::new(2, 1)];
/// let scored = Scored::with_seed(7);
/// let table = scored.prepare(&metas);
/// let endpoints = Candidates::new(&metas, &services);
/// let request = RequestInfo::new().model("llama");
/// assert_eq!(scored.pick(&table, &endpoints, &request), Some(1));
/// # }
/// ```
pub struct Scored<Req, S> {
    weights: Weights,
    saturation: Saturation,
    choice: Choice,
    scorers: Vec<(f64, Arc<dyn Scorer<Req, S>>)>,
    filter: Option<Arc<Filter<Req, S>>>,
    hooks: Vec<Arc<dyn ScoreHook<Req>>>,
    objective: Objective,
    rng: Rng,
}

impl<Req, S> Default for Scored<Req, S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<Req, S> Scored<Req, S> {
    /// Default [`Weights`], [`Saturation`] and [`Choice`]; ties broken by a
    /// generator seeded from entropy.
    #[must_use]
    pub fn new() -> Self {
        Self::from_rng(Rng::from_entropy())
    }

    /// Like [`new`](Self::new), with random choices following from `seed`.
    #[must_use]
    pub fn with_seed(seed: u64) -> Self {
        Self::from_rng(Rng::from_seed(seed))
    }

    fn from_rng(rng: Rng) -> Self {
        Self {
            weights: Weights::default(),
            saturation: Saturation::default(),
            choice: Choice::default(),
            scorers: Vec::new(),
            filter: None,
            hooks: Vec::new(),
            objective: Objective::Scores,
            rng,
        }
    }

    /// The LLM default: the server with the least predicted time to first
    /// token for this request, with default [`Saturation`]; near-ties
    /// broken as described under *Time to first token* in the type's docs.
    #[must_use]
    pub fn ttft() -> Self {
        Self::new().least_ttft()
    }

    /// The same picker choosing the server with the least predicted time to
    /// first token instead of the highest score: [`Weights`], [`Choice`]
    /// and user scorers no longer apply; filters, saturation and hooks do.
    #[must_use]
    pub fn least_ttft(mut self) -> Self {
        self.objective = Objective::TTFT;
        self
    }

    /// With [`least_ttft`](Self::least_ttft): servers whose predicted time
    /// to first token is within `relative` × the least plus `absolute` of
    /// the least are near-ties (default 5 % and 1 ms). Negative or
    /// non-finite `relative` counts as 0.
    #[must_use]
    pub fn ttft_margin(mut self, relative: f64, absolute: std::time::Duration) -> Self {
        let relative = if relative.is_finite() {
            relative.max(0.0)
        } else {
            0.0
        };
        self.objective = Objective::Ttft { relative, absolute };
        self
    }

    /// The built-in scorers' weights.
    #[must_use]
    pub fn weights(mut self, weights: Weights) -> Self {
        self.weights = Weights {
            queue: weight(weights.queue),
            kv_cache: weight(weights.kv_cache),
            in_flight: weight(weights.in_flight),
            latency: weight(weights.latency),
            adapter: weight(weights.adapter),
        };
        self
    }

    /// When endpoints are saturated, and which requests are shed then.
    #[must_use]
    pub fn saturation(mut self, saturation: Saturation) -> Self {
        self.saturation = saturation;
        self
    }

    /// How to choose among the scored endpoints.
    #[must_use]
    pub fn choice(mut self, choice: Choice) -> Self {
        self.choice = choice;
        self
    }

    /// Adds a user scorer with `weight`.
    #[must_use]
    pub fn scorer(mut self, weight_: f64, scorer: impl Scorer<Req, S>) -> Self {
        self.scorers.push((weight(weight_), Arc::new(scorer)));
        self
    }

    /// Adds a shared user scorer (one that is also a [`ScoreHook`], say).
    #[must_use]
    pub fn shared_scorer(mut self, weight_: f64, scorer: Arc<dyn Scorer<Req, S>>) -> Self {
        self.scorers.push((weight(weight_), scorer));
        self
    }

    /// Only endpoints for which `filter(request, service)` holds are
    /// eligible.
    #[must_use]
    pub fn filter(mut self, filter: impl Fn(&Req, &S) -> bool + Send + Sync + 'static) -> Self {
        self.filter = Some(Arc::new(filter));
        self
    }

    /// Adds a hook that hears every pick.
    #[must_use]
    pub fn hook(mut self, hook: Arc<dyn ScoreHook<Req>>) -> Self {
        self.hooks.push(hook);
        self
    }
}

fn weight(w: f64) -> f64 {
    if w.is_finite() && w > 0.0 {
        w
    } else {
        0.0
    }
}

impl<Req, S> fmt::Debug for Scored<Req, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scored")
            .field("weights", &self.weights)
            .field("saturation", &self.saturation)
            .field("choice", &self.choice)
            .field("user_scorers", &self.scorers.len())
            .field("filter", &self.filter.is_some())
            .field("hooks", &self.hooks.len())
            .field("objective", &self.objective)
            .finish()
    }
}

impl<Req: 'static, S: 'static> Prepare for Scored<Req, S> {
    type Table = ();

    fn prepare(&self, endpoints: &[EndpointInfo]) {
        for hook in &self.hooks {
            hook.endpoints_changed(endpoints);
        }
    }
}

#[cfg(test)]
mod tests;
