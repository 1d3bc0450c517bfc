//! The scoring picker: filters, weighted scorers, a choice; saturation
//! admission before it.

mod request;
mod scorer;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tower::load::Load;

use super::{Endpoints, Meta, Pick, Prepare};
use crate::endpoint::metrics::clock_ms;
use crate::endpoint::{ClientLoad, Endpoint};
use crate::error::Saturated;
use crate::util::{LocalRng, Rng};

pub use self::request::{
    FactsRef, RequestFacts, ScoredRequest, ADAPTER_HEADER, MODEL_HEADER, PRIORITY_HEADER,
};
pub use self::scorer::{Candidate, ScoreHook, Scorer};

/// How [`Scored`] chooses among the scored endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Choice {
    /// The highest score; ties broken at random (the default).
    #[default]
    Best,
    /// At random, with probability proportional to the score (an endpoint
    /// scoring 0 is chosen only when every endpoint does, then uniformly).
    Weighted,
}

/// The weights of the built-in scorers; 0 turns one off. Negative and
/// non-finite weights count as 0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Weights {
    /// Waiting queue: `(max − q) ÷ (max − min)` over the eligible
    /// endpoints, 1 when all are equal. Stale endpoints count their
    /// requests in flight as their queue.
    pub queue: f64,
    /// KV-cache use: `1 − use`. A stale endpoint scores its in-flight score
    /// here.
    pub kv_cache: f64,
    /// The client's requests in flight, normalised like the queue.
    pub in_flight: f64,
    /// The client's latency estimate (Peak-EWMA), normalised like the
    /// queue; endpoints without one score 1.
    pub latency: f64,
    /// 1 when the request's adapter is loaded (or it needs none), else 0.
    pub adapter: f64,
}

impl Default for Weights {
    /// The inference extension's defaults for what this picker knows:
    /// queue 2, KV cache 2; in flight 1; latency 0; adapter affinity 1.
    fn default() -> Self {
        Self {
            queue: 2.0,
            kv_cache: 2.0,
            in_flight: 1.0,
            latency: 0.0,
            adapter: 1.0,
        }
    }
}

/// When an endpoint is saturated, and what happens when all are.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Saturation {
    /// Saturated above this many waiting requests (default 5). An endpoint
    /// whose report is stale is saturated above this many requests in
    /// flight from this client.
    pub max_queue: u32,
    /// Saturated above this KV-cache use (default 0.8).
    pub max_kv_cache: f32,
    /// Requests of lower priority are shed when every eligible endpoint is
    /// saturated (default 0: negative priorities are shed).
    pub shed_below: i32,
    /// The wait [`Saturated::retry_after`] suggests (default 1 s).
    pub retry_after: Duration,
}

impl Default for Saturation {
    fn default() -> Self {
        Self {
            max_queue: 5,
            max_kv_cache: 0.8,
            shed_below: 0,
            retry_after: Duration::from_secs(1),
        }
    }
}

type Filter<Req, S> = dyn Fn(&Req, &S) -> bool + Send + Sync;

/// The scoring picker for inference servers: filters, weighted scorers in
/// `[0, 1]`, the highest total (or a weighted random choice); and, before
/// the pick, saturation admission.
///
/// For each request it reads the request's [`FactsRef`] (model, adapter,
/// priority: see [`ScoredRequest`]) and every endpoint's self-reported
/// [`LoadFacts`](crate::endpoint::LoadFacts) (through
/// [`Endpoint::metrics`]) and client-side load (through `Load`, whose
/// metric implements [`ClientLoad`]: wrap endpoints in
/// [`InFlight`](crate::load::InFlight) or
/// [`Latency`](crate::load::Latency)).
///
/// 1. **Filters.** An endpoint is eligible when it is allowed (weight,
///    exclusions, health), serves the request's model (the models in its
///    metrics' [`Extra`](crate::endpoint::Extra); none listed: any), has the
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
/// requests in flight (queue and KV scorers alike). A request without facts
/// (no model, no adapter) filters on nothing and has priority 0.
///
/// # Example
///
/// ```
/// use tower_lb::endpoint::{EndpointMetrics, LoadReport, Weighted};
/// use tower_lb::load::InFlight;
/// use tower_lb::pick::{Endpoints, Meta, Pick, Prepare, RequestFacts, Scored};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let report = |kv| {
///     let metrics = EndpointMetrics::new();
///     metrics.record(&LoadReport { queue: Some(0), kv_cache_use: Some(kv), ..LoadReport::default() });
///     metrics
/// };
/// let services = [
///     Weighted::new(InFlight::new(()), 1).with_metrics(report(0.9)),
///     Weighted::new(InFlight::new(()), 1).with_metrics(report(0.1)),
/// ];
/// let metas = [Meta::new(1, 1), Meta::new(2, 1)];
/// let scored = Scored::with_seed(7);
/// let table = scored.prepare(&metas);
/// let endpoints = Endpoints::new(&metas, &services);
/// let request = RequestFacts::new().model("llama");
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
            rng,
        }
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
            .finish()
    }
}

impl<Req: 'static, S: 'static> Prepare for Scored<Req, S> {
    type Table = ();

    fn prepare(&self, endpoints: &[Meta]) {
        for hook in &self.hooks {
            hook.endpoints_changed(endpoints);
        }
    }
}

/// A scorer's range over the eligible endpoints: `(min, max)`.
#[derive(Clone, Copy)]
struct Range {
    min: f32,
    max: f32,
}

impl Range {
    const EMPTY: Self = Self {
        min: f32::INFINITY,
        max: f32::NEG_INFINITY,
    };

    #[inline]
    fn widen(&mut self, v: f32) {
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    /// `(max, 1 ÷ (max − min))`, so that scoring multiplies: low is good,
    /// `(max − v) ÷ (max − min)`, and 1 for all when the range is empty.
    #[inline]
    fn scale(self) -> (f32, f32) {
        let span = self.max - self.min;
        if span > f32::EPSILON {
            (self.max, 1.0 / span)
        } else {
            (0.0, 0.0)
        }
    }
}

#[inline]
fn low_is_good(v: f32, (max, inverse): (f32, f32)) -> f32 {
    if inverse == 0.0 {
        1.0
    } else {
        (max - v) * inverse
    }
}

/// What the pick reads of one eligible endpoint, once.
#[derive(Clone, Copy, Debug)]
struct Raw {
    index: u32,
    /// The reported queue, or the client's requests in flight when stale.
    queue: f32,
    /// The reported KV use; negative when the report is stale (or absent).
    kv: f32,
    in_flight: f32,
    /// Latency in nanoseconds; negative when not measured (or not wanted).
    latency: f32,
    adapter_loaded: bool,
}

thread_local! {
    /// Each thread's scratch list of eligible endpoints: grown to the
    /// largest set this thread has picked from, then reused, so a pick
    /// reads every endpoint once and allocates nothing after the first.
    static SCRATCH: std::cell::RefCell<Vec<Raw>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl<Req, S> Scored<Req, S>
where
    Req: ScoredRequest + 'static,
    S: Endpoint + Load + 'static,
    S::Metric: ClientLoad,
{
    /// The endpoint's measures if it is eligible for the request.
    #[inline(always)]
    fn gather(
        &self,
        endpoints: &Endpoints<'_, S>,
        i: usize,
        request: &Req,
        facts: &FactsRef<'_>,
        now_ms: u64,
    ) -> Option<Raw> {
        if !endpoints.is_allowed(i) {
            return None;
        }
        let service = &endpoints.services()[i];
        let metrics = service.metrics();
        let mut adapter_loaded = true;
        if facts.model.is_some() || facts.adapter.is_some() {
            if let Some(metrics) = metrics {
                let extra = metrics.extra();
                if facts.model.is_some_and(|m| !extra.serves(m)) {
                    return None;
                }
                if let Some(adapter) = facts.adapter {
                    adapter_loaded = extra.has_adapter(adapter);
                    if !adapter_loaded && !extra.has_adapter_slot() {
                        return None;
                    }
                }
            }
        }
        if let Some(filter) = &self.filter {
            if !filter(request, service) {
                return None;
            }
        }
        let load = service.load();
        // Through u32: an unsigned 64-bit conversion to float costs branches.
        let in_flight = load.in_flight().min(u32::MAX as usize) as u32 as f32;
        let latency = if self.weights.latency > 0.0 {
            load.latency().map_or(-1.0, |d| d.as_nanos() as f32)
        } else {
            -1.0
        };
        let (queue, kv) = match metrics.and_then(|m| m.fresh_load(now_ms)) {
            Some((queue, _, kv)) => (queue as f32, kv),
            None => (in_flight, -1.0),
        };
        Some(Raw {
            index: i as u32,
            queue,
            kv,
            in_flight,
            latency,
            adapter_loaded,
        })
    }

    /// Saturated: a fresh report over a limit, or, when stale, more
    /// requests in flight than the queue limit.
    #[inline]
    fn saturated(&self, raw: &Raw) -> bool {
        let limit = &self.saturation;
        raw.queue > limit.max_queue as f32 || raw.kv > limit.max_kv_cache
    }
}

impl<Req, S> Pick<Req, S> for Scored<Req, S>
where
    Req: ScoredRequest + 'static,
    S: Endpoint + Load + 'static,
    S::Metric: ClientLoad,
{
    fn pick(&self, table: &(), endpoints: &Endpoints<'_, S>, req: &Req) -> Option<usize> {
        // Without admission: a request that would be shed is scored instead.
        self.choose(table, endpoints, req, false).ok().flatten()
    }

    fn pick_or_shed(
        &self,
        table: &(),
        endpoints: &Endpoints<'_, S>,
        req: &Req,
    ) -> Result<Option<usize>, Saturated> {
        self.choose(table, endpoints, req, true)
    }
}

impl<Req, S> Scored<Req, S>
where
    Req: ScoredRequest + 'static,
    S: Endpoint + Load + 'static,
    S::Metric: ClientLoad,
{
    fn choose(
        &self,
        _table: &(),
        endpoints: &Endpoints<'_, S>,
        request: &Req,
        admit: bool,
    ) -> Result<Option<usize>, Saturated> {
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut scratch) => {
                scratch.clear();
                self.choose_in(endpoints, request, admit, &mut scratch)
            }
            // A scorer or filter that picks from inside a pick: a list of
            // its own (this allocates).
            Err(_) => self.choose_in(endpoints, request, admit, &mut Vec::new()),
        })
    }

    fn choose_in(
        &self,
        endpoints: &Endpoints<'_, S>,
        request: &Req,
        admit: bool,
        eligible: &mut Vec<Raw>,
    ) -> Result<Option<usize>, Saturated> {
        let facts = request.facts();
        let now = Instant::now();
        let now_ms = clock_ms(now);
        let (mut queue, mut in_flight, mut latency) = (Range::EMPTY, Range::EMPTY, Range::EMPTY);
        let mut saturated = 0usize;

        // Pass 1, over the endpoints: eligibility, saturation, ranges.
        for i in 0..endpoints.len() {
            let Some(raw) = self.gather(endpoints, i, request, &facts, now_ms) else {
                continue;
            };
            saturated += usize::from(self.saturated(&raw));
            in_flight.widen(raw.in_flight);
            queue.widen(raw.queue);
            if raw.latency >= 0.0 {
                latency.widen(raw.latency);
            }
            eligible.push(raw);
        }
        if eligible.is_empty() {
            return Ok(None);
        }
        if admit && saturated == eligible.len() && facts.priority < self.saturation.shed_below {
            return Err(Saturated::new(
                eligible.len(),
                facts.priority,
                self.saturation.retry_after,
            ));
        }

        // Pass 2, over the eligible: scores and the choice.
        let w = &self.weights;
        let (wq, wkv, wf, wl, wa) = (
            w.queue as f32,
            w.kv_cache as f32,
            w.in_flight as f32,
            w.latency as f32,
            w.adapter as f32,
        );
        let (queue, in_flight, latency) = (queue.scale(), in_flight.scale(), latency.scale());
        let wants_adapter = facts.adapter.is_some();
        let mut rng: Option<LocalRng> = None;
        let mut best = (f32::NEG_INFINITY, usize::MAX);
        let mut ties = 0u64;
        let mut total = 0.0f64;
        for raw in eligible.iter() {
            let flight_score = low_is_good(raw.in_flight, in_flight);
            let kv_score = if raw.kv >= 0.0 {
                1.0 - raw.kv
            } else {
                flight_score
            };
            let mut score = wq * low_is_good(raw.queue, queue) + wkv * kv_score + wf * flight_score;
            if wl > 0.0 {
                let l = if raw.latency >= 0.0 {
                    low_is_good(raw.latency, latency)
                } else {
                    1.0
                };
                score += wl * l;
            }
            if wants_adapter && raw.adapter_loaded {
                score += wa;
            }
            let i = raw.index as usize;
            if !self.scorers.is_empty() {
                score += self.user_scores(endpoints, i, request, raw, now);
            }
            match self.choice {
                Choice::Best => {
                    if score > best.0 {
                        best = (score, i);
                        ties = 1;
                    } else if score == best.0 {
                        // Reservoir sampling: each tied endpoint ends up
                        // chosen with probability 1 / ties.
                        ties += 1;
                        let rng = rng.get_or_insert_with(|| self.rng.local());
                        if rng.below(ties as usize) == 0 {
                            best.1 = i;
                        }
                    }
                }
                Choice::Weighted => {
                    // Weighted reservoir: replace with probability s / Σs.
                    // A tiny floor keeps all-zero scores a uniform choice.
                    let s = f64::from(score).max(1e-9);
                    total += s;
                    let rng = rng.get_or_insert_with(|| self.rng.local());
                    let draw = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                    if draw * total < s {
                        best = (score, i);
                    }
                }
            }
        }
        let picked = best.1;
        if picked == usize::MAX {
            return Ok(None);
        }
        if !self.hooks.is_empty() {
            let meta = endpoints.metas()[picked];
            for hook in &self.hooks {
                hook.before_send(request, meta);
            }
        }
        Ok(Some(picked))
    }

    /// The weighted sum of the user scorers for one endpoint.
    fn user_scores(
        &self,
        endpoints: &Endpoints<'_, S>,
        i: usize,
        request: &Req,
        raw: &Raw,
        now: Instant,
    ) -> f32 {
        let service = &endpoints.services()[i];
        let candidate = Candidate {
            index: i,
            meta: endpoints.metas()[i],
            service,
            facts: service.metrics().and_then(|m| m.load_at(now)),
            in_flight: raw.in_flight as usize,
            adapter_loaded: raw.adapter_loaded,
        };
        let mut sum = 0.0;
        for (weight, scorer) in &self.scorers {
            let s = scorer.score(request, &candidate);
            let s = if s.is_nan() { 0.0 } else { s.clamp(0.0, 1.0) };
            sum += weight * s;
        }
        sum as f32
    }
}

#[cfg(test)]
mod tests;
