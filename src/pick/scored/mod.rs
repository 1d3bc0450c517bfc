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
/// `ttft = base + per_token × (P + u) + W`
///
/// * `u`: the prompt's tokens that server lacks: its length less the
///   leading blocks the index of its cache holds
///   ([`PrefillState`](crate::endpoint::PrefillState));
/// * `P`: the uncached tokens of the requests already sent there and not
///   yet at their first token (held by each request's guard, see
///   [`Prefill`](crate::load::Prefill));
/// * `W`: the wait for a batch slot
///   ([`PrefillState::slot_wait`](crate::endpoint::PrefillState::slot_wait)):
///   from a fresh reported queue `q > 0` and `r` running requests, `(q + 1) × D ÷ r`
///   where `D` is the server's mean answer time (0 when nothing waits); when the report is stale,
///   this client's requests waiting there × `D` ÷ its requests in flight;
/// * the two coefficients ([`TtftModel`](crate::endpoint::TtftModel)):
///   that server's own, learnt from every streamed answer's first token.
///   A server whose model is not current (it has taught nothing yet, or
///   nothing in the last second) is taken to be as good as the best current
///   model among the eligible servers for this prompt, drifting from its
///   own toward that (halfway in 5 s): an unknown server is tried, not
///   left out for being unknown. With no current model anywhere, the prior
///   (10 ms and 100 µs a token) stands in.
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
/// Endpoints without a prefill state are predicted from the client's
/// latency estimate when the load keeps one ([`Latency`](crate::load::Latency)):
/// the estimate × (requests ahead + 1), Peak-EWMA's cost; otherwise from
/// the prior, every prompt token uncached, plus 20 ms for each request
/// ahead (the reported queue or this client's requests in flight there,
/// whichever is more). Weights,
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
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::endpoint::Endpoint;
    use crate::endpoint::{Report, ReportCell, Weighted};
    use crate::load::InFlight;

    type Svc = Weighted<InFlight<()>>;

    fn endpoint(report: Option<Report>) -> Svc {
        let svc = Weighted::new(InFlight::new(()), 1);
        match report {
            Some(report) => {
                let metrics = ReportCell::new();
                metrics.record(&report);
                svc.with_report(metrics)
            }
            None => svc,
        }
    }

    fn load(queue: u32, kv: f32) -> Option<Report> {
        Some(Report {
            queue: Some(queue),
            kv_cache_use: Some(kv),
            ..Report::default()
        })
    }

    fn metas(n: usize) -> Vec<EndpointInfo> {
        (0..n).map(|i| EndpointInfo::new(i as u64 + 1, 1)).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn the_least_loaded_endpoint_wins() {
        let services = [
            endpoint(load(3, 0.2)),
            endpoint(load(0, 0.1)),
            endpoint(load(9, 0.95)),
        ];
        let metas = metas(3);
        let endpoints = Candidates::new(&metas, &services);
        let scored = Scored::with_seed(1);
        for _ in 0..20 {
            assert_eq!(scored.pick(&(), &endpoints, &()), Some(1));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ties_are_broken_at_random() {
        let services: Vec<Svc> = (0..4).map(|_| endpoint(load(1, 0.5))).collect();
        let metas = metas(4);
        let endpoints = Candidates::new(&metas, &services);
        let scored = Scored::with_seed(3);
        let mut seen = [0; 4];
        for _ in 0..400 {
            seen[scored.pick(&(), &endpoints, &()).unwrap()] += 1;
        }
        assert!(seen.iter().all(|&n| n > 60), "{seen:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn stale_reports_fall_back_to_in_flight() {
        let services = [endpoint(load(0, 0.0)), endpoint(None)];
        let metas = metas(2);
        let endpoints = Candidates::new(&metas, &services);
        let scored = Scored::with_seed(1).weights(Weights {
            in_flight: 0.0,
            ..Weights::default()
        });
        // Three requests on endpoint 0, whose fresh report says it is idle; one
        // on endpoint 1, which reports nothing.
        let counter = services[0].get_ref().counter();
        let held: Vec<_> = (0..3).map(|_| counter.start()).collect();
        let _one = services[1].get_ref().counter().start();
        assert_eq!(
            scored.pick(&(), &endpoints, &()),
            Some(0),
            "fresh report wins on queue and KV"
        );
        tokio::time::advance(Duration::from_millis(250)).await;
        assert_eq!(
            scored.pick(&(), &endpoints, &()),
            Some(1),
            "stale: in flight decides"
        );
        drop(held);
    }

    #[tokio::test(start_paused = true)]
    async fn a_queue_with_nothing_running_is_not_believed() {
        let leaked = |queue| {
            Some(Report {
                queue: Some(queue),
                running: Some(0),
                ..Report::default()
            })
        };
        let services = [endpoint(leaked(13)), endpoint(leaked(7))];
        let metas = metas(2);
        let endpoints = Candidates::new(&metas, &services);
        let scored = Scored::with_seed(1);
        let low = RequestInfo::new().priority(-1);
        assert!(
            scored.pick_or_shed(&(), &endpoints, &low).is_ok(),
            "idle servers with leaked queues are not saturated"
        );
        let any = RequestInfo::new();
        let mut seen = [0; 2];
        for _ in 0..200 {
            seen[scored.pick(&(), &endpoints, &any).unwrap()] += 1;
        }
        assert!(seen.iter().all(|&n| n > 40), "{seen:?}");
        // With a request of this client there, the report stands.
        let _held = services[0].get_ref().counter().start();
        assert_eq!(scored.pick(&(), &endpoints, &any), Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn saturation_sheds_low_priority_only() {
        let services = [endpoint(load(6, 0.1)), endpoint(load(0, 0.9))];
        let metas = metas(2);
        let endpoints = Candidates::new(&metas, &services);
        let scored = Scored::with_seed(1);
        let low = RequestInfo::new().priority(-1);
        let error = scored.pick_or_shed(&(), &endpoints, &low).unwrap_err();
        assert_eq!((error.eligible(), error.priority()), (2, -1));
        assert_eq!(error.retry_after(), Duration::from_secs(1));
        let high = RequestInfo::new().priority(0);
        assert!(scored
            .pick_or_shed(&(), &endpoints, &high)
            .unwrap()
            .is_some());
        // One endpoint below the limits admits everyone.
        let services = [endpoint(load(6, 0.1)), endpoint(load(5, 0.8))];
        let endpoints = Candidates::new(&metas, &services);
        assert_eq!(scored.pick_or_shed(&(), &endpoints, &low), Ok(Some(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn models_and_adapters_filter() {
        let with = |models: &[&str], adapters: &[&str], max: u32| {
            let metrics = ReportCell::new();
            metrics.record(&Report {
                queue: Some(0),
                models: Some(models.iter().map(|m| (*m).into()).collect()),
                adapters: Some(adapters.iter().map(|m| (*m).into()).collect()),
                max_adapters: Some(max),
                ..Report::default()
            });
            Weighted::new(InFlight::new(()), 1).with_report(metrics)
        };
        let services = [
            with(&["mistral"], &[], 4),
            with(&["llama"], &["a", "b"], 2),
            with(&["llama"], &["c"], 2),
        ];
        let metas = metas(3);
        let endpoints = Candidates::new(&metas, &services);
        let scored = Scored::with_seed(1);
        let pick = |facts: RequestInfo| scored.pick(&(), &endpoints, &facts);
        assert_eq!(pick(RequestInfo::new().model("mistral")), Some(0));
        assert_eq!(
            pick(RequestInfo::new().model("llama").adapter("a")),
            Some(1)
        );
        assert_eq!(
            pick(RequestInfo::new().model("llama").adapter("c")),
            Some(2)
        );
        // Not loaded anywhere: only endpoint 2 has a free slot.
        assert_eq!(
            pick(RequestInfo::new().model("llama").adapter("z")),
            Some(2)
        );
        assert_eq!(pick(RequestInfo::new().model("gpt")), None);
    }

    #[tokio::test(start_paused = true)]
    async fn user_scorers_filters_and_hooks() {
        #[derive(Default)]
        struct Count(AtomicUsize);
        impl ScoreHook<()> for Count {
            fn before_send(&self, _: &(), endpoint: EndpointInfo) {
                assert!(endpoint.key_hash() >= 3, "only the best are picked");
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let services: Vec<Svc> = (0..4).map(|_| endpoint(load(0, 0.0))).collect();
        let metas = metas(4);
        let endpoints = Candidates::new(&metas, &services);
        let hook = Arc::new(Count::default());
        let scored = Scored::with_seed(1)
            .scorer(10.0, |_: &(), c: &Candidate<'_, Svc>| {
                (c.index as f64) / 2.0
            })
            .filter(|_: &(), s: &Svc| s.report().is_some())
            .hook(hook.clone());
        // Index 2 and 3 both clamp to 1; a NaN-free scorer keeps to [0, 1].
        for _ in 0..10 {
            let i = scored.pick(&(), &endpoints, &()).unwrap();
            assert!(i == 2 || i == 3);
        }
        let only_three = Scored::with_seed(1)
            .filter(|_: &(), s: &Svc| s.get_ref().in_flight() == 0)
            .scorer(
                1.0,
                |_: &(), c: &Candidate<'_, Svc>| if c.index == 2 { f64::NAN } else { 1.0 },
            )
            .hook(hook.clone());
        let _held = services[0].get_ref().counter().start();
        let _held1 = services[1].get_ref().counter().start();
        assert_eq!(only_three.pick(&(), &endpoints, &()), Some(3));
        assert_eq!(hook.0.load(Ordering::Relaxed), 11);
    }

    #[tokio::test(start_paused = true)]
    async fn weighted_choice_follows_scores() {
        let services = [endpoint(load(0, 0.0)), endpoint(load(0, 0.75))];
        let metas = metas(2);
        let endpoints = Candidates::new(&metas, &services);
        let scored = Scored::with_seed(9)
            .choice(Choice::Weighted)
            .weights(Weights {
                queue: 0.0,
                kv_cache: 1.0,
                in_flight: 0.0,
                latency: 0.0,
                adapter: 0.0,
            });
        let mut seen = [0; 2];
        for _ in 0..5000 {
            seen[scored.pick(&(), &endpoints, &()).unwrap()] += 1;
        }
        // Scores 1 and 0.25: shares 80 % and 20 %.
        let share = f64::from(seen[0]) / 5000.0;
        assert!((share - 0.8).abs() < 0.03, "{seen:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn no_endpoints_and_excluded_ones() {
        let services: Vec<Svc> = Vec::new();
        let scored = Scored::with_seed(1);
        assert_eq!(
            scored.pick(&(), &Candidates::new(&[], &services), &()),
            None
        );
        let services = [endpoint(load(0, 0.0)), endpoint(load(9, 0.9))];
        let metas = [EndpointInfo::new(1, 0), EndpointInfo::new(2, 1)];
        let endpoints = Candidates::new(&metas, &services);
        assert_eq!(
            scored.pick(&(), &endpoints, &()),
            Some(1),
            "weight 0 is never picked"
        );
        assert_eq!(scored.pick(&(), &endpoints.excluding(&[2]), &()), None);
    }

    // ===== the time-to-first-token objective =====

    mod ttft {
        use std::time::Duration;

        use tokio::time::Instant;

        use super::*;
        use crate::endpoint::PrefillState;
        use crate::pick::llm::{BlockConfig, PromptBlocks};

        /// A model server as the TTFT picker sees it: its reports and its
        /// prefill state.
        fn server() -> (Svc, ReportCell, PrefillState) {
            let report = ReportCell::new();
            let state = PrefillState::default().with_report(report.clone());
            let svc = Weighted::new(InFlight::new(()), 1)
                .with_report(report.clone())
                .with_prefill(state.clone());
            (svc, report, state)
        }

        fn prompt(system: &str, question: &str) -> PromptBlocks {
            PromptBlocks::hash(BlockConfig::default(), "m", [system, question])
        }

        /// Teaches `state` that answers take `took` (the mean answer time).
        async fn one_answer(state: &PrefillState, took: Duration) {
            let mut guard = state.reserve(&[u64::MAX - 1], 64);
            tokio::time::advance(took).await;
            guard.answer_end();
        }

        /// Without prefill states, a `Latency` load's estimate decides:
        /// estimate × (requests ahead + 1), as Peak-EWMA costs it.
        #[tokio::test(start_paused = true)]
        async fn without_prefill_states_the_latency_estimate_decides() {
            use tower::{Service, ServiceExt};

            use crate::load::Latency;

            let never = || {
                tower::service_fn(|()| {
                    std::future::pending::<Result<(), std::convert::Infallible>>()
                })
            };
            let decay = Duration::from_secs(10);
            let latency = |rtt| {
                let done = tower::load::CompleteOnResponse::default();
                Weighted::new(Latency::with_completion(never(), rtt, decay, done), 1)
            };
            let mut fast = latency(Duration::from_millis(10));
            let slow = latency(Duration::from_millis(45));
            let scored: Scored<(), _> = Scored::ttft();
            let metas = metas(2);
            let pick = |fast: &Weighted<_>| {
                let services = [fast.clone(), slow.clone()];
                scored.pick(&(), &Candidates::new(&metas, &services), &())
            };
            assert_eq!(pick(&fast), Some(0), "10 ms against 45 ms");
            // Four answers waiting on the fast one: 10 ms × 5 > 45 ms.
            let mut held = Vec::new();
            for _ in 0..4 {
                held.push(fast.ready().await.unwrap().call(()));
            }
            assert_eq!(pick(&fast), Some(1));
            drop(held);
            assert_eq!(pick(&fast), Some(0));
        }

        /// A server that has taught nothing is taken to be as good as the
        /// best current one, so it is tried: a prior slower than the fleet
        /// would keep it out at every calm moment.
        #[tokio::test(start_paused = true)]
        async fn a_server_not_yet_learnt_is_as_good_as_the_best_known() {
            let (known, unknown) = (server(), server());
            for _ in 0..20 {
                let mut guard = known.2.reserve(&[], 64);
                guard.first_token_after(Duration::from_millis(2));
            }
            assert!(known.2.model().base < Duration::from_millis(5));
            let services = [known.0.clone(), unknown.0.clone()];
            let metas = metas(2);
            let endpoints = Candidates::new(&metas, &services);
            let scored: Scored<PromptBlocks, Svc> = Scored::ttft();
            let picks: Vec<_> = (0..40)
                .map(|k| {
                    let request = prompt(&format!("system {k} "), "a question");
                    scored.pick(&(), &endpoints, &request).unwrap()
                })
                .collect();
            let to_unknown = picks.iter().filter(|&&i| i == 1).count();
            assert!(
                (10..=30).contains(&to_unknown),
                "{to_unknown} of 40 to the server not yet learnt"
            );
        }

        #[tokio::test(start_paused = true)]
        async fn a_prompt_goes_where_its_prefix_is_cached() {
            let fleet: Vec<_> = (0..4).map(|_| server()).collect();
            let services: Vec<Svc> = fleet.iter().map(|s| s.0.clone()).collect();
            let metas = metas(4);
            let endpoints = Candidates::new(&metas, &services);
            let system = "You answer questions about tides. ".repeat(60);
            let held = prompt(&system, "first");
            drop(fleet[2].2.reserve(held.hashes(), held.prompt_bytes()));
            let scored: Scored<PromptBlocks, Svc> = Scored::ttft();
            for k in 0..20 {
                let request = prompt(&system, &format!("question {k}"));
                assert_eq!(scored.pick(&(), &endpoints, &request), Some(2));
            }
        }

        #[tokio::test(start_paused = true)]
        async fn a_hot_prompt_spreads_once_its_servers_queue_makes_another_cheaper() {
            let fleet: Vec<_> = (0..3).map(|_| server()).collect();
            let services: Vec<Svc> = fleet.iter().map(|s| s.0.clone()).collect();
            let metas = metas(3);
            let endpoints = Candidates::new(&metas, &services);
            // A 2,000-byte system prompt: 500 tokens, 50 ms to prefill at the
            // prior's 100 µs a token.
            let system = "x".repeat(2_000);
            let held = prompt(&system, "");
            drop(fleet[0].2.reserve(held.hashes(), held.prompt_bytes()));
            for (_, _, state) in &fleet {
                one_answer(state, Duration::from_millis(160)).await;
            }
            let scored: Scored<PromptBlocks, Svc> = Scored::ttft();
            let request = prompt(&system, "q");
            let calm = Report {
                queue: Some(0),
                running: Some(4),
                ..Report::default()
            };
            for (_, report, _) in &fleet {
                report.record(&calm);
            }
            assert_eq!(
                scored.pick(&(), &endpoints, &request),
                Some(0),
                "idle: the cache wins"
            );
            // Eight running and three waiting: a slot frees every 20 ms, and
            // four must: 80 ms, more than the 50 ms a miss costs elsewhere.
            fleet[0].1.record(&Report {
                queue: Some(3),
                running: Some(8),
                ..Report::default()
            });
            let now = Instant::now();
            assert!(fleet[0].2.slot_wait(now) > 75e6);
            let picked = scored.pick(&(), &endpoints, &request);
            assert!(matches!(picked, Some(1 | 2)), "{picked:?}");
            // One waiting: 2 × 20 ms = 40 ms, less than a miss: back home.
            fleet[0].1.record(&Report {
                queue: Some(1),
                running: Some(8),
                ..Report::default()
            });
            assert_eq!(scored.pick(&(), &endpoints, &request), Some(0));
        }

        #[tokio::test(start_paused = true)]
        async fn replicas_that_know_nothing_agree_on_a_prompts_home() {
            let metas = metas(8);
            let homes: Vec<Option<usize>> = (0..2)
                .map(|_| {
                    let services: Vec<Svc> = (0..8).map(|_| server().0).collect();
                    let endpoints = Candidates::new(&metas, &services);
                    let request = prompt(&"shared system prompt ".repeat(40), "q");
                    Scored::<PromptBlocks, Svc>::ttft().pick(&(), &endpoints, &request)
                })
                .collect();
            assert_eq!(homes[0], homes[1]);
            // And different prompts have different homes.
            let services: Vec<Svc> = (0..8).map(|_| server().0).collect();
            let endpoints = Candidates::new(&metas, &services);
            let scored = Scored::<PromptBlocks, Svc>::ttft();
            let mut distinct: Vec<usize> = (0..40)
                .filter_map(|k| {
                    scored.pick(
                        &(),
                        &endpoints,
                        &prompt(&format!("system {k} ").repeat(20), "q"),
                    )
                })
                .collect();
            distinct.sort_unstable();
            distinct.dedup();
            assert!(distinct.len() >= 6, "{distinct:?}");
        }
    }
}
